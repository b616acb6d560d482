"""What the Trainer offers besides its loop: the Accelerator and the process it runs on, the
current run's data loaders and loss trackers, ``print``/``gather``, and the checkpoint files.

:class:`pa_core.Trainer` inherits all of it and documents it; the loop is in ``pa_core/trainer.py``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from torch.utils.data import DataLoader, Dataset

from pa_core import _accelerate_shims as shims
from pa_core import _checkpoints, _checks, data, training_state
from pa_core._preemption import TrainingPreempted
from pa_core.callbacks import CallbackHandler, StopTrainingError
from pa_core.run_config import TrainerRunConfig
from pa_core.run_state import RunState
from pa_core.tracking import LossTracker, RunHistory


class TrainerBase:
    """The part of :class:`pa_core.Trainer` that is not the loop (read the Trainer's docs)."""

    seed: int | None
    preemption_save_dir: str | os.PathLike[str] | None
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    scheduler: Any
    run_config: TrainerRunConfig | None
    run_history: RunHistory
    callback_handler: CallbackHandler
    collate_fn: Callable[..., Any] | None
    _accelerator: Accelerator
    _run: RunState
    _wrapped_model: Any  # the prepared model (DDP, DeepSpeed engine) of the last run
    _dataloader_kwargs: dict[str, dict[str, Any]]  # what built the run's loaders, for run_config
    _run_eval_epoch: Callable[..., float]  # the Trainer's evaluation epoch

    # -- Accelerate ----------------------------------------------------------------------------------

    def _create_accelerator(self) -> Accelerator:
        """Create the Accelerator; override to pass options (mixed precision, kwargs handlers).

        Build on ``self._accelerator_kwargs()`` to keep what integrations configure::

            def _create_accelerator(self):
                return Accelerator(**self._accelerator_kwargs(), mixed_precision="bf16")
        """
        return Accelerator(**self._accelerator_kwargs())

    def _accelerator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Accelerator``, as configured by the callbacks."""
        kwargs = shims.multi_process_cpu_kwargs()
        self.callback_handler.call_event("pa_configure_accelerator", self, accelerator_kwargs=kwargs)
        return kwargs

    def _new_accelerator(self) -> Accelerator:
        shims.forget_single_process_state()
        accelerator = self._create_accelerator()
        # Shuffling from (seed, epoch) makes the data order reproducible, so a resumed run
        # sees the same batches as an uninterrupted one.
        config = accelerator.dataloader_config
        config.use_seedable_sampler = True
        if config.data_seed is None:
            config.data_seed = self.seed if self.seed is not None else 0
        return accelerator

    # -- What plugins and subclasses use -------------------------------------------------------------

    @property
    def accelerator(self) -> Accelerator:
        """The Accelerator of the current (or last) run."""
        return self._accelerator

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        return self._accelerator.device

    @property
    def num_processes(self) -> int:
        """How many processes the current (or last) run spans."""
        return self._accelerator.num_processes

    @property
    def is_world_process_zero(self) -> bool:
        """True on the first process of the whole run (the one that writes shared files)."""
        return self._accelerator.is_main_process

    @property
    def is_local_process_zero(self) -> bool:
        """True on the first process of this machine."""
        return self._accelerator.is_local_main_process

    @property
    def run_state(self) -> RunState:
        """What the current (or last) ``train()`` or ``evaluate()`` call is doing."""
        return self._run

    @property
    def train_dataloader(self) -> Any:
        """The prepared training data loader of the current run (a plugin may replace it)."""
        return self._run.train_dataloader

    @train_dataloader.setter
    def train_dataloader(self, dataloader: Any) -> None:
        self._run.train_dataloader = dataloader

    @property
    def eval_dataloader(self) -> Any:
        """The prepared evaluation data loader of the current run, or None."""
        return self._run.eval_dataloader

    @eval_dataloader.setter
    def eval_dataloader(self, dataloader: Any) -> None:
        self._run.eval_dataloader = dataloader

    # pytorch-accelerated's names for the loaders, which its Trainer subclasses use.
    _train_dataloader = train_dataloader
    _eval_dataloader = eval_dataloader

    @property
    def loss_tracker(self) -> LossTracker:
        """The current training epoch's running loss (values stay on the device)."""
        return self._run.loss_tracker

    @property
    def eval_loss_tracker(self) -> LossTracker:
        """The current evaluation epoch's running loss (values stay on the device)."""
        return self._run.eval_loss_tracker

    @property
    def num_updates(self) -> Any:
        """Optimizer updates performed so far in the current (or last) training run.

        pytorch-accelerated's Trainer subclasses assign ``self.num_updates`` to keep a count of
        their own; once assigned it is theirs (pa keeps counting in ``run_state.num_updates``).
        """
        return self.__dict__.get("_assigned_num_updates", self._run.num_updates)

    @num_updates.setter
    def num_updates(self, value: Any) -> None:
        self.__dict__["_assigned_num_updates"] = value

    @property
    def last_epoch(self) -> int:
        """The ``run_history`` epoch the current (or last) training run ends with.

        ``run_config.num_epochs`` if the run started from a fresh history; with
        ``train(..., reset_run_history=False)`` the epochs continue from the previous run, so a
        second ``train(num_epochs=3)`` after 2 epochs trains epochs 3 to 5 and this is 5.
        """
        if self.run_config is None:
            raise RuntimeError("last_epoch is known once train() has been called.")
        return self._run.last_epoch

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the local main process only."""
        self._accelerator.print(*args, **kwargs)

    def gather(self, tensor: torch.Tensor, padding_value: Any = None) -> torch.Tensor:
        """Gather ``tensor`` from every process (collective), concatenated along dimension 0:
        exactly the rows every process had, process 0's first, though processes may hold
        different numbers (uneven last batches, empty batches). ``padding_value`` (0 if None)
        fills rows for the transfer only; padding is never returned."""
        return data.gather_rows(self._accelerator, tensor, padding_value)

    def get_model(self, keep_torch_compile: bool = True) -> torch.nn.Module:
        """The model without Accelerate's wrappers (DDP, mixed precision)."""
        return self._accelerator.unwrap_model(self.model, keep_torch_compile=keep_torch_compile)

    def prepare_dataloader(self, dataloader: Any) -> Any:
        """Prepare a ``DataLoader`` for this run as pa prepares its own: batches on the device,
        split between processes with every sample exactly once (no repeated samples, iterable
        datasets split by pa). What a plugin passes to ``run_eval_epoch`` or puts in
        ``trainer.eval_dataloader``; a raw ``DataLoader`` would give every process every sample."""
        accelerator = self._accelerator
        if data.is_stream(dataloader) and isinstance(dataloader, DataLoader):
            return data.prepare_stream_loader(
                dataloader, accelerator.device, accelerator.process_index, accelerator.num_processes
            )
        return shims.deal_batches_unevenly(accelerator.prepare(dataloader))

    def run_eval_epoch(
        self,
        dataloader: Any = None,
        *,
        model: torch.nn.Module | None = None,
        callbacks: CallbackHandler | Iterable[Any] | None = None,
        metric_prefix: str | None = None,
        is_intermediate: bool = False,
    ) -> float:
        """Run one evaluation epoch now and return its loss: what a plugin calls to evaluate in
        the middle of training (step-based evaluation) or to evaluate another model (an EMA).

        :param dataloader: the loader to evaluate, prepared with :meth:`prepare_dataloader`; the
            run's eval loader by default.
        :param model: evaluate this module instead of the trainer's model.
        :param callbacks: call these (a :class:`CallbackHandler` or callbacks) instead of the
            trainer's callbacks during the evaluation; from an eval hook, pass some (``()`` for
            none), or the hook would fire again.
        :param metric_prefix: record the loss (and callbacks' metrics) with this run-history
            prefix, e.g. ``"ema_model_"``.
        :param is_intermediate: fire the eval events with ``is_intermediate=True`` and record
            ``intermediate_eval_loss``.
        """
        dataloader = dataloader if dataloader is not None else self._run.eval_dataloader
        _checks.check_run_eval_epoch(dataloader, callbacks, self._run.evaluating)
        saved = (self.model, self.callback_handler, self.run_history.metric_name_prefix)
        self.model = model if model is not None else self.model
        if callbacks is not None:
            self.callback_handler = callbacks if isinstance(callbacks, CallbackHandler) else CallbackHandler(callbacks)
        if metric_prefix is not None:
            self.run_history.set_metric_name_prefix(metric_prefix)
        try:
            return self._run_eval_epoch(dataloader, is_training=self._run.training, is_intermediate=is_intermediate)
        finally:
            self.model, self.callback_handler = saved[0], saved[1]
            self.run_history.set_metric_name_prefix(saved[2])

    def _stop_for_preemption(self, signal_number: int) -> None:
        run = self._run
        save_dir = self.preemption_save_dir if run.training else None
        state_dir = os.fspath(save_dir) if save_dir is not None else None
        if state_dir is not None:
            self.save_training_state(state_dir)
        self.callback_handler.call_event("on_preemption", self, signal_number=signal_number, state_dir=state_dir)
        epoch = min(self.run_history.current_epoch, run.last_epoch) if run.training else None
        error = TrainingPreempted(signal_number, state_dir, epoch, run.num_updates)
        self._accelerator.print(error)
        raise error

    # -- Building and releasing a run's parts --------------------------------------------------------

    def _new_dataloader(
        self, which: str, dataset: Dataset | None, defaults: dict[str, Any], kwargs: dict[str, Any] | None
    ) -> DataLoader:
        """A ``DataLoader`` over ``dataset`` from ``defaults`` updated with the user's ``kwargs``
        (``which``: "train" or "eval"), remembered for ``run_config``."""
        merged = data.merge_dataloader_kwargs(
            f"{which}_dataloader_kwargs", defaults, kwargs, dataset, self._run.preemption_signals
        )
        self._dataloader_kwargs[which] = merged
        return DataLoader(dataset, collate_fn=self.collate_fn, **merged)  # type: ignore[arg-type]

    def _end_run(self) -> None:
        """Stop the run's DataLoader workers and take off Accelerate's wrappers, however it ended."""
        run = self._run
        run._close_steps()
        shims.shut_down_workers(run.train_dataloader, run.eval_dataloader)
        self.model = self._accelerator.unwrap_model(self.model)
        if isinstance(self.optimizer, AcceleratedOptimizer):
            self.optimizer = self.optimizer.optimizer
        self._wrapped_model = shims.wrapped_model_to_keep(self._accelerator, self._wrapped_model)

    def _notify_exception(self, exc: BaseException) -> None:
        if isinstance(exc, StopTrainingError):
            return
        try:
            self.callback_handler.call_event("on_exception", self, exception=exc)
        except Exception as hook_error:  # never hide the original error
            warnings.warn(f"A callback failed while handling an exception: {hook_error!r}", stacklevel=2)

    # -- Checkpoints (the files: pa_core._checkpoints and pa_core.training_state) --------------------

    def save_checkpoint(
        self,
        save_path: str | os.PathLike[str],
        checkpoint_kwargs: dict[str, Any] | None = None,
        save_optimizer: bool = True,
        save_scheduler: bool = True,
        save_per_node: bool = True,
    ) -> None:
        """Save the model weights (and optimizer/scheduler state) to one portable file.

        The file holds ``model_state_dict`` (unwrapped, without ``torch.compile`` prefixes,
        gathered from sharded engines), ``optimizer_state_dict`` and ``scheduler_state_dict``
        when present and asked for, and ``checkpoint_kwargs`` at the top level. Call it on every
        process; the main process of each node (``save_per_node``) or of the world writes it.
        """
        _checkpoints.save_checkpoint(
            self, save_path, checkpoint_kwargs, save_optimizer, save_scheduler, save_per_node, self._wrapped_model
        )

    def load_checkpoint(
        self, checkpoint_path: str | os.PathLike[str], load_optimizer: bool = True, load_scheduler: bool = True
    ) -> dict[str, Any]:
        """Load a file written by :meth:`save_checkpoint` and return its whole content.

        Only tensors and plain data are unpickled; a file that cannot be used raises
        :class:`pa_core.CheckpointError`, naming it and saying why.
        """
        return _checkpoints.load_checkpoint(self, checkpoint_path, load_optimizer, load_scheduler)

    def save_training_state(
        self, output_dir: str | os.PathLike[str], checkpoint_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Save everything needed to continue this run with ``train(resume_from=output_dir)``
        (``pa_core.training_state`` describes the folder, which appears complete or not at
        all). Call it on every process. A state saved at an optimizer update
        (``on_train_update_end``) or an epoch's end (``on_training_run_epoch_end``) resumes exactly.
        """
        training_state.save_training_state(self, output_dir, checkpoint_kwargs)

    def load_training_state(self, input_dir: str | os.PathLike[str], restore_position: bool = True) -> dict[str, Any]:
        """Restore a state written by :meth:`save_training_state` into the prepared run (as
        ``train(resume_from=...)`` does) and return pa's metadata; ``restore_position=False``
        restores the model, optimizer, scheduler and random states only, for a new run that
        starts from them (call it in ``on_training_run_start``).
        """
        return training_state.load_training_state(self, input_dir, restore_position)
