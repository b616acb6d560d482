"""Saving during training: the best model by a metric, complete training states at intervals,
and the pre- and post-decay checkpoints of a warmup-stable-decay schedule."""

from __future__ import annotations

import os
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pa_callbacks._common import (
    check_positive_int,
    format_value,
    is_improvement,
    is_world_main_process,
    latest_watched_metric,
    updates_done,
)
from pa_core import TrainerCallback

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["SaveBestModelCallback", "SaveTrainingStateCallback", "WSDCheckpointCallback"]


class SaveBestModelCallback(TrainerCallback):
    """Saves the model whenever ``watch_metric`` improves, at the end of each epoch, and loads the
    best weights back at the end of training.

    The file is written with :meth:`~pa_core.Trainer.save_checkpoint` (``model_state_dict`` and,
    if asked, ``optimizer_state_dict`` and ``scheduler_state_dict``, plus the metric's value and
    the epoch). The best value and its epoch are part of the training state, so a run resumed
    with ``train(resume_from=...)`` keeps comparing against the best seen before.

    :param save_path: the checkpoint file (conventionally ending in ``.pt``).
    :param watch_metric: the run-history metric to compare, checked at each epoch's end.
    :param greater_is_better: True when a larger value is better (accuracy), False for losses.
    :param reset_on_train: forget the best value at the start of each ``train()`` call (a resumed
        run keeps it); False compares across calls.
    :param save_optimizer: also save the optimizer state.
    :param save_scheduler: also save the scheduler state.
    :param load_saved_checkpoint: load the best checkpoint into the trainer when training ends.
    """

    def __init__(
        self,
        save_path: str | os.PathLike[str] = "best_model.pt",
        watch_metric: str = "eval_loss_epoch",
        greater_is_better: bool = False,
        reset_on_train: bool = True,
        save_optimizer: bool = True,
        save_scheduler: bool = True,
        load_saved_checkpoint: bool = True,
    ) -> None:
        self.save_path = save_path
        self.watch_metric = watch_metric
        self.greater_is_better = greater_is_better
        self.reset_on_train = reset_on_train
        self.save_optimizer = save_optimizer
        self.save_scheduler = save_scheduler
        self.load_saved_checkpoint = load_saved_checkpoint
        self.best_metric: Any = None
        self.best_metric_epoch: int | None = None
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        """The best value so far and its epoch."""
        return {"best_metric": self.best_metric, "best_metric_epoch": self.best_metric_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next training run continues from it."""
        self.best_metric, self.best_metric_epoch = state["best_metric"], state["best_metric_epoch"]
        self._restored = True

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        if self.reset_on_train and not self._restored:
            self.best_metric, self.best_metric_epoch = None, None
        self._restored = False

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        current = latest_watched_metric(trainer, self.watch_metric, type(self).__name__)
        if is_improvement(current, self.best_metric, self.greater_is_better):
            self.best_metric = current
            self.best_metric_epoch = trainer.run_history.current_epoch
            trainer.save_checkpoint(
                save_path=self.save_path,
                checkpoint_kwargs={self.watch_metric: current, "epoch": self.best_metric_epoch},
                save_optimizer=self.save_optimizer,
                save_scheduler=self.save_scheduler,
            )

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if not self.load_saved_checkpoint:
            return
        if self.best_metric_epoch is None or not Path(self.save_path).is_file():
            trainer.print(f"No checkpoint was saved to {os.fspath(self.save_path)!r}, so none is loaded.")
            return
        trainer.print(
            f"Loading checkpoint with {self.watch_metric}: {format_value(self.best_metric)} "
            f"from epoch {self.best_metric_epoch}"
        )
        trainer.load_checkpoint(self.save_path, load_optimizer=self.save_optimizer, load_scheduler=self.save_scheduler)


class SaveTrainingStateCallback(TrainerCallback):
    """Saves complete training states (:meth:`~pa_core.Trainer.save_training_state`) that
    ``train(resume_from=...)`` continues exactly: every N epochs, every N optimizer updates,
    and at the end of training.

    States go to ``save_dir/epoch_N`` (after epoch N, its evaluation and the other callbacks'
    epoch-end work), ``save_dir/step_N`` (after N optimizer updates in the run) and
    ``save_dir/final``. With ``max_checkpoints``, only the most recent that many folders saved by
    this callback are kept (``final`` counts). A state holds the other callbacks' state as it is
    when it is saved: list this callback after early stopping, save-best and EMA callbacks (it
    warns otherwise).

    :param save_dir: the folder holding the state folders.
    :param save_every_n_epochs: save after every this many epochs; None for no epoch saves.
    :param save_every_n_steps: save after every this many optimizer updates; None for none.
    :param save_at_end: save ``final`` when training ends.
    :param max_checkpoints: keep at most this many state folders; None keeps all.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] = "training_states",
        save_every_n_epochs: int | None = None,
        save_every_n_steps: int | None = None,
        save_at_end: bool = True,
        max_checkpoints: int | None = None,
    ) -> None:
        owner = type(self).__name__
        check_positive_int(owner, "save_every_n_epochs", save_every_n_epochs, allow_none=True)
        check_positive_int(owner, "save_every_n_steps", save_every_n_steps, allow_none=True)
        check_positive_int(owner, "max_checkpoints", max_checkpoints, allow_none=True)
        self.save_dir = Path(save_dir)
        self.save_every_n_epochs = save_every_n_epochs
        self.save_every_n_steps = save_every_n_steps
        self.save_at_end = save_at_end
        self.max_checkpoints = max_checkpoints
        self._saved_checkpoints: list[Path] = []
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        """The folders saved so far, oldest first."""
        return {"saved": [os.fspath(path) for path in self._saved_checkpoints]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, so ``max_checkpoints`` keeps counting the earlier folders."""
        self._saved_checkpoints = [Path(path) for path in state["saved"]]
        self._restored = True

    def _save(self, trainer: Trainer, name: str) -> None:
        output_dir = self.save_dir / name
        if output_dir in self._saved_checkpoints:
            self._saved_checkpoints.remove(output_dir)
        # Recorded before saving, so that the saved state lists itself and a resumed run prunes it in turn.
        self._saved_checkpoints.append(output_dir)
        trainer.save_training_state(output_dir, checkpoint_kwargs={"global_step": updates_done(trainer)})
        trainer.print(f"\nSaved training state to {os.fspath(output_dir)}")
        self._remove_old_checkpoints(trainer)

    def _remove_old_checkpoints(self, trainer: Trainer) -> None:
        if self.max_checkpoints is None:
            return
        while len(self._saved_checkpoints) > self.max_checkpoints:
            old_dir = self._saved_checkpoints.pop(0)
            if is_world_main_process(trainer) and old_dir.exists():
                shutil.rmtree(old_dir)
                trainer.print(f"Removed old training state: {os.fspath(old_dir)}")

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        if not self._restored:
            self._saved_checkpoints = []
        self._restored = False
        self._warn_about_later_stateful_callbacks(trainer)

    def _warn_about_later_stateful_callbacks(self, trainer: Trainer) -> None:
        callbacks = trainer.callback_handler.callbacks
        later = callbacks[callbacks.index(self) + 1 :] if self in callbacks else []
        stateful = [type(cb).__name__ for cb in later if callable(getattr(cb, "state_dict", None))]
        if stateful:
            warnings.warn(
                f"{type(self).__name__} is listed before {', '.join(stateful)}, which keep state in the training "
                "state; a state saved at an epoch's end or an update would miss their update for that epoch or "
                f"step. List {type(self).__name__} after them.",
                UserWarning,
                stacklevel=2,
            )

    def on_train_update_end(self, trainer: Trainer, num_updates: int = 0, **kwargs: Any) -> None:
        if self.save_every_n_steps is not None and num_updates % self.save_every_n_steps == 0:
            self._save(trainer, f"step_{num_updates}")

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        epoch = trainer.run_history.current_epoch
        if self.save_every_n_epochs is not None and epoch % self.save_every_n_epochs == 0:
            self._save(trainer, f"epoch_{epoch}")

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if self.save_at_end:
            self._save(trainer, "final")


class WSDCheckpointCallback(TrainerCallback):
    """Checkpoints for warmup-stable-decay schedules (:class:`pa_core.schedulers.WSDLrScheduler`).

    Before each decay phase (after ``pre_decay_step`` updates, the last update at the peak rate)
    it saves a complete training state to ``save_dir/checkpoint_{step}_wsd_pre_decay/``: the
    point to continue the stable phase from, or to start a decay of another length (WSD). After
    each decay phase (``period_end`` updates) it saves the decayed model to
    ``save_dir/checkpoint_{step}_wsd_post_decay.pt`` with :meth:`~pa_core.Trainer.save_checkpoint`,
    ready to use or to continue from (WSD-S). Steps are the scheduler's update counts.

    ``initial_checkpoint`` starts a new training run from either kind: a folder is loaded as a
    training state (model, optimizer, scheduler, random states), a file as a checkpoint (model
    and, if present, optimizer and scheduler). Either way the run itself starts afresh at epoch 1;
    build the scheduler with ``is_continuation_from_checkpoint=True`` to start a new segment.
    (To continue an interrupted run exactly, use ``train(resume_from=...)``; a resumed run does not
    load ``initial_checkpoint`` again.)

    :param save_dir: the folder for the checkpoints.
    :param save_optimizer: include the optimizer state in post-decay checkpoints.
    :param save_scheduler: include the scheduler state in post-decay checkpoints.
    :param initial_checkpoint: a pre-decay state folder or a post-decay ``.pt`` file to start from.
    :raises ValueError: at the start of training, when the scheduler has no
        ``get_checkpoint_steps()`` or ``initial_checkpoint`` does not exist.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] = "checkpoints",
        save_optimizer: bool = True,
        save_scheduler: bool = True,
        initial_checkpoint: str | os.PathLike[str] | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.save_optimizer = save_optimizer
        self.save_scheduler = save_scheduler
        self.initial_checkpoint = Path(initial_checkpoint) if initial_checkpoint is not None else None
        self.last_checkpoint_step: int | None = None
        self.checkpoint_steps: set[int] | None = None
        self.decay_fraction: float | None = None
        self.decay_info: list[dict[str, int]] | None = None

    def _checkpoint_kwargs(self, trainer: Trainer, step: int, checkpoint_type: str) -> dict[str, Any]:
        return {
            "step": step,
            "checkpoint_type": checkpoint_type,
            "total_steps": trainer.scheduler.total_steps,
            "decay_fraction": self.decay_fraction,
            "timestamp": datetime.now().isoformat(),
        }

    def _save_pre_decay(self, trainer: Trainer, step: int) -> None:
        """Save the complete training state before the decay that starts after ``step`` updates."""
        state_dir = self.save_dir / f"checkpoint_{step}_wsd_pre_decay"
        trainer.save_training_state(
            state_dir, checkpoint_kwargs=self._checkpoint_kwargs(trainer, step, "wsd_pre_decay")
        )
        trainer.print(f"\nSaved wsd_pre_decay training state at step {step} to {os.fspath(state_dir)}")

    def _save_post_decay(self, trainer: Trainer, step: int) -> None:
        """Save the decayed model after ``step`` updates."""
        path = self.save_dir / f"checkpoint_{step}_wsd_post_decay.pt"
        trainer.save_checkpoint(
            path,
            checkpoint_kwargs=self._checkpoint_kwargs(trainer, step, "wsd_post_decay"),
            save_optimizer=self.save_optimizer,
            save_scheduler=self.save_scheduler,
        )
        trainer.print(f"\nSaved wsd_post_decay checkpoint at step {step} to {os.fspath(path)}")

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        scheduler = trainer.scheduler
        if not callable(getattr(scheduler, "get_checkpoint_steps", None)):
            raise ValueError(
                f"WSDCheckpointCallback needs a warmup-stable-decay scheduler with get_checkpoint_steps(), but the "
                f"trainer's scheduler is {type(scheduler).__name__ if scheduler is not None else None}. Pass "
                "create_scheduler_fn=WSDLrScheduler.create_scheduler_fn(...) (pa_core.schedulers) to train()."
            )
        self.checkpoint_steps = set(scheduler.get_checkpoint_steps())
        self.decay_fraction = scheduler.decay_phase_ratio
        self.decay_info = scheduler.get_decay_info()
        self.last_checkpoint_step = None
        if is_world_main_process(trainer):
            self.save_dir.mkdir(parents=True, exist_ok=True)
        if self.initial_checkpoint is not None and updates_done(trainer):
            trainer.print(f"Resuming a run: initial_checkpoint {os.fspath(self.initial_checkpoint)!r} is not loaded.")
        elif self.initial_checkpoint is not None:
            self._load_initial_checkpoint(trainer, self.initial_checkpoint)

    def _load_initial_checkpoint(self, trainer: Trainer, path: Path) -> None:
        if not path.exists():
            raise ValueError(
                f"WSDCheckpointCallback(initial_checkpoint={os.fspath(path)!r}): no such file or folder. Pass a "
                "checkpoint_N_wsd_pre_decay folder or a checkpoint_N_wsd_post_decay.pt file written by this callback."
            )
        trainer.print(f"\nLoading checkpoint from {os.fspath(path)}")
        if path.is_dir():
            # Model, optimizer, scheduler and random states; the new run starts at epoch 1.
            info = dict(trainer.load_training_state(path, restore_position=False).get("checkpoint_kwargs") or {})
            default_type = "wsd_pre_decay"
        else:
            info = trainer.load_checkpoint(path)
            default_type = "wsd_post_decay"
        trainer.print(f"Loaded {info.get('checkpoint_type', default_type)} checkpoint from step {info.get('step')}")

    def on_train_update_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._save_if_due(trainer, trainer.scheduler.get_current_step() + 1)

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._save_if_due(trainer, trainer.scheduler.get_current_step() + 1)

    def _save_if_due(self, trainer: Trainer, step: int) -> None:
        if step == self.last_checkpoint_step:
            return
        phase = trainer.scheduler.get_phase_info(step)
        if step == phase["pre_decay_step"]:
            trainer.print(f"\nWSD Lr Scheduler entering decay phase at step {step}")
            self._save_pre_decay(trainer, step)
            self.last_checkpoint_step = step
        if step == phase["period_end"]:
            self._save_post_decay(trainer, step)
            self.last_checkpoint_step = step
