"""The state of one ``train()`` or ``evaluate()`` call: where the run is and what it runs on."""

from __future__ import annotations

from typing import Any

import torch

from pa_core.data import EpochSteps, is_stream, rest_of_epoch
from pa_core.tracking import LossTracker

__all__ = ["RunState"]


class RunState:
    """What a ``train()`` or ``evaluate()`` call is doing, created fresh by each call and read
    by plugins as ``trainer.run_state``.

    :ivar training: True during ``train()``, False during ``evaluate()``.
    :ivar train_dataloader: the prepared training data loader (None in ``evaluate()``). A
        plugin may wrap or replace it in ``on_training_run_start``.
    :ivar eval_dataloader: the prepared evaluation data loader, or None; replaceable in
        ``on_training_run_start`` / ``on_evaluation_run_start``.
    :ivar loss_tracker: the current training epoch's running loss (device tensors: read them
        sparingly, not at every step).
    :ivar eval_loss_tracker: the current evaluation epoch's running loss.
    :ivar num_updates: optimizer updates done in this training run (restored on resume); in
        ``evaluate()``, those of the last training run.
    :ivar epoch_step: steps of the current training epoch done at the last optimizer update.
    :ivar first_epoch: the ``run_history`` epoch this training run started with.
    :ivar last_epoch: the ``run_history`` epoch it ends with (see ``Trainer.last_epoch``).
    :ivar train_done: the current epoch's training part has finished (its evaluation may not).
    :ivar epoch_done: the current epoch has finished, evaluation and epoch-end hooks included.
    :ivar control_group: on several processes, the gloo process group pa makes its host-side
        agreements in (one per run; None on one process). A plugin that must agree with the other
        processes on a small host value (``pa_core.data.any_process``) can use it too, without a
        device synchronisation; every process must make the same calls on it.
    """

    def __init__(self, training: bool, train_dataloader: Any = None, eval_dataloader: Any = None) -> None:
        self.training = training
        self.train_dataloader = train_dataloader
        self.eval_dataloader = eval_dataloader
        self.loss_tracker = LossTracker()
        self.eval_loss_tracker = LossTracker()
        self.num_updates = 0
        self.epoch_step = 0
        self.first_epoch = 1
        self.last_epoch = 1
        self.train_done = False
        self.epoch_done = False
        # The epoch's loss tracker at the last update, for a training state saved there.
        self._loss_at_update: tuple[Any, int] = (0, 0)
        # The train loader's position after the last update's batch (iterable data that can save it).
        self.data_position: Any = None
        self.signals: Any = None  # the run's signal watcher (pa internal)
        self.control_group: Any = None
        self.epoch_steps: Any = None  # the current training epoch's steps (pa internal)
        self.opened_steps: list[Any] = []  # every epoch's steps of this run, closed at its end (pa internal)
        self.warned_non_finite = False  # a diverged training loss is reported once per run (pa internal)
        self.evaluating = False  # inside an evaluation epoch (pa internal)
        self.preemption_signals: tuple[Any, ...] = ()  # the signals this run watches (pa internal)

    @property
    def epoch_length(self) -> int | None:
        """Steps in the current training epoch, the same on every process; None while unknown
        (for iterable data it becomes known at the epoch's last step)."""
        last_step = getattr(self.epoch_steps, "last_step", None)
        return None if last_step is None else last_step + 1

    def record_update(self, epoch_step: int, data_position: Any = None) -> None:
        """Note where the epoch is after an optimizer update (what a training state saved now holds)."""
        self.epoch_step = epoch_step
        self._loss_at_update = (self.loss_tracker.total_loss, self.loss_tracker.running_count)
        self.data_position = data_position

    def begin_train_loss_tracking(self) -> None:
        """Reset the epoch's loss tracker, or give it back the sums of a run resumed mid-epoch."""
        self.loss_tracker.reset()
        if self.epoch_step:
            self.loss_tracker.total_loss, self.loss_tracker.running_count = self._loss_at_update

    def forget_partial_loss(self) -> None:
        """Drop a restored partial epoch loss (it is restored on one process only: it is the
        sum over every process)."""
        self._loss_at_update = (0, 0)

    def start_epoch(self) -> None:
        """Forget the finished epoch's position (the update count goes on)."""
        self.epoch_step, self.train_done, self.epoch_done = 0, False, False
        self._loss_at_update, self.data_position = (0, 0), None

    def _open_steps(self, dataloader: Any, accelerator: Any, epoch: int, training: bool) -> EpochSteps:
        """The steps of an epoch (``epoch``: the run-history epoch) over ``dataloader``; a training
        epoch resumed in the middle continues after the steps already done (or, for data that
        cannot, starts again). The run closes them all at its end (:meth:`_close_steps`)."""
        start, rest = 0, None
        if training and hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(epoch - 1)
        if training and self.epoch_step:
            rest = rest_of_epoch(accelerator, dataloader, self.epoch_step, self.data_position)
            start = self.epoch_step if rest is not None else 0
            if rest is None:
                self.start_epoch()
        group = self.control_group
        steps = EpochSteps(dataloader, accelerator.num_processes, group, start, rest, track_position=training)
        self.opened_steps.append(steps)
        if training:
            self.epoch_steps = steps
        return steps

    def _close_steps(self) -> None:
        """Stop the DataLoader iterators (and their workers) of every epoch of the run."""
        for steps in self.opened_steps:
            steps.close()
        self.opened_steps = []

    def position(self) -> dict[str, Any]:
        """Where the run is, as plain data for a training state; the loss sum stays on the device."""
        total, count = self._loss_at_update if not self.train_done else (0, 0)
        return {
            "num_updates": self.num_updates,
            "epoch_step": 0 if self.train_done else self.epoch_step,
            "loss_total": torch.as_tensor(total, dtype=torch.float32),
            "loss_count": count,
            "train_done": self.train_done,
            "epoch_done": self.epoch_done,
            # Where the epoch ends, to tell a state saved at its last update (an epoch boundary,
            # which may resume on another number of processes) from one in the middle.
            "epoch_length": self.epoch_length,
            "sized": not is_stream(self.train_dataloader),
        }

    def restore_position(self, position: dict[str, Any], device: torch.device) -> None:
        """Continue from :meth:`position` (a training state's); the loss sum goes to ``device``."""
        self.num_updates = position["num_updates"]
        self.epoch_step = position.get("epoch_step", position.get("batches_done", 0))
        self.train_done = position.get("train_done", False)
        self.epoch_done = position["epoch_done"]
        self._loss_at_update = (position["loss_total"].to(device), position["loss_count"])
