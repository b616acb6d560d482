"""The Trainer: a plain PyTorch training loop over Hugging Face Accelerate.

Read it top to bottom: ``train()`` builds the data loaders, prepares everything with
Accelerate and runs ``_run_training``, which runs ``_run_train_epoch`` and ``_run_eval_epoch``
each epoch. Every step of the loop is a short method a subclass can override, and each
overridable method runs before the callback event of the same name. What one ``train()`` or
``evaluate()`` call is doing lives in ``trainer.run_state`` (:class:`pa_core.RunState`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader, Dataset

from pa_core import _accelerate_shims as shims
from pa_core import _checkpoints, _checks, data, plugins, training_state
from pa_core._preemption import DEFAULT_SIGNALS, SignalWatcher, TrainingPreempted, check_signals
from pa_core.callbacks import CallbackHandler, StopTrainingError
from pa_core.placeholders import replace_trainer_placeholder_values
from pa_core.run_config import TrainerRunConfig, create_run_config
from pa_core.run_state import RunState
from pa_core.tracking import InMemoryRunHistory, LossTracker, RunHistory, epoch_loss
from pa_core.utils import LimitBatchesCallback, limit_batches_from_env

__all__ = ["DEFAULT_CALLBACKS", "Trainer", "TrainerWithTimmScheduler"]

#: The callbacks a Trainer uses unless told otherwise, as ``pa.callbacks`` catalogue names.
#: They are provided by pa-callbacks; with pa-core alone the Trainer trains silently.
DEFAULT_CALLBACKS: tuple[str, ...] = (
    "move-modules-to-device",
    "terminate-on-nan",
    "print-progress",
    "progress-bar",
    "log-metrics",
)


class Trainer:
    """Trains and evaluates a model with the loop below.

    :param model: the ``nn.Module`` to train.
    :param loss_func: called as ``loss_func(model_outputs, targets)``; None for models that
        compute their own loss (then override ``calculate_train_batch_loss``).
    :param optimizer: a torch optimizer over the model's parameters (None to only evaluate).
    :param callbacks: callback instances, classes or ``pa.callbacks`` names, called in order.
    :param run_history: where metrics are recorded; an :class:`InMemoryRunHistory` by default.

    Set ``seed`` (class or instance attribute) to change the seed ``train()`` uses, or to
    None to leave the random state alone.

    A preemption signal (``preemption_signals``: SIGTERM and SIGINT unless changed, e.g. to
    add SIGUSR1 for SLURM) at any moment of ``train()`` or ``evaluate()`` stops the run at the
    next optimizer update, evaluation step or epoch end, at the same place on every process;
    the Trainer then saves a training state to ``preemption_save_dir`` (if set, during
    ``train()``), fires ``on_preemption`` and raises :class:`TrainingPreempted` (exit status
    128 + the signal number: 143 for SIGTERM, 130 for SIGINT). A second, different signal acts
    at once, as does the same signal more than 3 seconds later (within 3 seconds it is taken for
    the same request delivered twice, by a cluster and a launcher).
    Set ``handle_signals = False`` to leave signals alone.
    """

    seed: int | None = 42
    preemption_save_dir: str | os.PathLike[str] | None = None
    preemption_signals: tuple[int, ...] = DEFAULT_SIGNALS
    #: Look for signals at every this many optimizer updates and evaluation steps.
    preemption_check_interval: int = 1
    handle_signals: bool = True

    def __init__(
        self,
        model: torch.nn.Module,
        loss_func: Callable[..., torch.Tensor] | None,
        optimizer: torch.optim.Optimizer | None,
        callbacks: Iterable[Any] = DEFAULT_CALLBACKS,
        run_history: RunHistory | None = None,
    ) -> None:
        _checks.check_trainer_arguments(model, loss_func, optimizer, callbacks)
        self.model = model
        self.loss_func = loss_func
        self.optimizer = optimizer
        self.callback_handler = CallbackHandler(_with_batch_limit(_available_callbacks(callbacks)))
        for entry, plugin in plugins.autoload_plugins():
            self.callback_handler.add_plugin(plugin, origin=entry.origin)
        self.run_history: RunHistory = run_history if run_history is not None else InMemoryRunHistory()
        self.scheduler: Any = None
        self.create_scheduler_fn: Callable[..., Any] | None = None
        self.run_config: TrainerRunConfig | None = None
        self.train_dataset: Dataset | None = None
        self.eval_dataset: Dataset | None = None
        self.collate_fn: Callable[..., Any] | None = None
        self._train_dl_kwargs: dict[str, Any] = {}
        self._eval_dl_kwargs: dict[str, Any] = {}
        self._run = RunState(training=False)
        self._wrapped_model: Any = None  # the prepared model (DDP, DeepSpeed engine) of the last run
        self._accelerator = self._new_accelerator()
        self.callback_handler.call_event("on_init_end", self)

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

    # -- train() -------------------------------------------------------------------------------------

    def train(
        self,
        train_dataset: Dataset,
        num_epochs: int,
        eval_dataset: Dataset | None = None,
        per_device_batch_size: int = 8,
        max_num_train_steps: int | None = None,
        gradient_accumulation_steps: int = 1,
        gradient_clip_value: float | None = None,
        create_scheduler_fn: Callable[..., Any] | None = None,
        train_dataloader_kwargs: dict[str, Any] | None = None,
        eval_dataloader_kwargs: dict[str, Any] | None = None,
        reset_run_history: bool = True,
        collate_fn: Callable[..., Any] | None = None,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> None:
        """Train the model: ``num_epochs`` passes over ``train_dataset`` (map-style, or an
        ``IterableDataset`` whose epoch ends when its data does), each followed by an evaluation
        of ``eval_dataset`` if given, with batches of ``per_device_batch_size`` on each process.

        ``max_num_train_steps`` stops after that many optimizer updates (for data with a length,
        ``num_epochs`` becomes the epochs needed to reach it). ``gradient_accumulation_steps``
        batches make one update; ``gradient_clip_value`` clips gradients by value before it.
        ``create_scheduler_fn(optimizer)`` builds a scheduler stepped after every update (it may
        hold :class:`TrainerPlaceholderValues`). The data loader kwargs override the defaults;
        ``collate_fn`` goes to both loaders; ``reset_run_history=False`` keeps earlier metrics
        and epochs. ``resume_from`` continues the run saved in that training-state folder (None
        starts afresh, so ``resume_from=latest_training_state(folder)`` serves every start).
        """
        _checks.check_train_arguments(
            train_dataset=train_dataset, num_epochs=num_epochs, eval_dataset=eval_dataset,
            per_device_batch_size=per_device_batch_size, max_num_train_steps=max_num_train_steps,
            gradient_accumulation_steps=gradient_accumulation_steps, gradient_clip_value=gradient_clip_value,
            create_scheduler_fn=create_scheduler_fn, train_dataloader_kwargs=train_dataloader_kwargs,
            eval_dataloader_kwargs=eval_dataloader_kwargs, reset_run_history=reset_run_history,
            collate_fn=collate_fn, optimizer=self.optimizer,
        )  # fmt: skip
        resume_from = training_state.find_training_state(resume_from) if resume_from is not None else None
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.collate_fn, self.create_scheduler_fn = collate_fn, create_scheduler_fn
        if reset_run_history:
            self.run_history.reset()
        self._start_run(training=True)
        shims.take_over_gradient_accumulation(self._accelerator, gradient_accumulation_steps)
        self._prepare_training(per_device_batch_size, train_dataloader_kwargs, eval_dataloader_kwargs)
        self.run_config = create_run_config(
            self._accelerator, self._run, (self._train_dl_kwargs, self._eval_dl_kwargs), num_epochs,
            per_device_batch_size, gradient_accumulation_steps, gradient_clip_value, max_num_train_steps,
        )  # fmt: skip
        self._run.first_epoch = self.run_history.current_epoch
        self._run.last_epoch = self._run.first_epoch - 1 + self.run_config.num_epochs
        self.scheduler = self.create_scheduler() if create_scheduler_fn is not None else None
        if resume_from is not None:
            self.load_training_state(resume_from)
        self._run_guarded(self._run_training)

    def _start_run(self, training: bool) -> None:
        """A fresh Accelerator and run state for a ``train()`` or ``evaluate()`` call."""
        self._accelerator = self._new_accelerator()
        if training and self.seed is not None:
            set_seed(self.seed, device_specific=True)
        previous, self._run = self._run, RunState(training=training)
        self._run.preemption_signals = check_signals(self.preemption_signals) if self.handle_signals else ()
        if not training:  # evaluate() reports the updates of the last training run
            self._run.num_updates = previous.num_updates
        if self._accelerator.num_processes > 1:
            self._run.control_group = data.control_group()
            shims.leave_process_group_at_exit()

    def _prepare_training(
        self, batch_size: int, train_kwargs: dict[str, Any] | None, eval_kwargs: dict[str, Any] | None
    ) -> None:
        train_dl = self.create_train_dataloader(batch_size, train_kwargs)
        eval_dl = self.create_eval_dataloader(batch_size, eval_kwargs) if self.eval_dataset is not None else None
        if data.is_stream(train_dl):
            self.model, self.optimizer = self._accelerator.prepare(self.model, self.optimizer)
            train_dl = self.prepare_dataloader(train_dl)
        else:  # DeepSpeed sizes its engine from a map-style loader prepared with the model
            self.model, self.optimizer, train_dl = self._accelerator.prepare(self.model, self.optimizer, train_dl)
            shims.deal_batches_unevenly(train_dl)
        self._wrapped_model = self.model
        self._step_optimizer = shims.optimizer_step_function(self.optimizer)
        self._zero_grad = shims.optimizer_zero_grad_function(self.optimizer)
        self._run.train_dataloader = train_dl
        self._run.eval_dataloader = self.prepare_dataloader(eval_dl) if eval_dl is not None else None

    def prepare_dataloader(self, dataloader: Any) -> Any:
        """Prepare a ``DataLoader`` for this run as pa prepares its own: batches on the device,
        split between processes with every sample exactly once (no repeated samples, iterable
        datasets split by pa). What a plugin passes to :meth:`run_eval_epoch` or puts in
        ``trainer.eval_dataloader``; a raw ``DataLoader`` would give every process every sample."""
        accelerator = self._accelerator
        if data.is_stream(dataloader) and isinstance(dataloader, DataLoader):
            return data.prepare_stream_loader(
                dataloader, accelerator.device, accelerator.process_index, accelerator.num_processes
            )
        return shims.deal_batches_unevenly(accelerator.prepare(dataloader))

    def _release_workers(self) -> None:
        """Stop the run's DataLoader worker processes, whether the run ended well or not."""
        run = self._run
        for steps in run.opened_steps:
            steps.close()
        run.opened_steps = []
        shims.shut_down_workers(run.train_dataloader, run.eval_dataloader)

    def _unwrap_after_run(self) -> None:
        self.model = self._accelerator.unwrap_model(self.model)
        if isinstance(self.optimizer, AcceleratedOptimizer):
            self.optimizer = self.optimizer.optimizer
        if self._accelerator.distributed_type != DistributedType.DEEPSPEED:
            # Only a DeepSpeed engine is needed after the run (to gather ZeRO-3 weights). A DDP
            # wrapper kept alive until interpreter exit is freed after its process group's
            # threads, and that deadlocks or aborts the process as it exits.
            self._wrapped_model = None

    def _run_guarded(self, loop: Callable[[], None]) -> None:
        """Run the loop with preemption signals watched; tell callbacks about any exception."""
        run = self._run
        watcher = SignalWatcher(run.preemption_signals, run.control_group) if self.handle_signals else None
        try:
            with watcher if watcher is not None else nullcontext():
                run.signals = watcher
                try:
                    loop()
                except _StopRequested as stop:
                    self._stop_for_preemption(stop.signal_number)
        except BaseException as exc:
            self._notify_exception(exc)
            raise
        finally:
            run.signals = None
            self._release_workers()
            self._unwrap_after_run()

    # -- The loop ------------------------------------------------------------------------------------

    def _run_training(self) -> None:
        run = self._run
        self.training_run_start()
        self.callback_handler.call_event("on_training_run_start", self)
        shims.check_deepspeed_engine(self._accelerator, self.model, self.run_config)
        try:
            max_steps = self.run_config.max_num_train_steps if self.run_config is not None else None
            while self.run_history.current_epoch <= run.last_epoch and not (max_steps and run.num_updates >= max_steps):
                if not run.train_done:
                    self._run_train_epoch(run.train_dataloader)
                if run.eval_dataloader is not None:
                    self._run_eval_epoch(run.eval_dataloader)
                run.epoch_done = True
                self._end_epoch()
                self.run_history._increment_epoch()
                run.start_epoch()
        except StopTrainingError as error:
            self._accelerator.print(error)
            self.callback_handler.call_event("on_stop_training_error", self, error=error)
        self.training_run_end()
        self.callback_handler.call_event("on_training_run_end", self)
        self._check_signals(agree=True)  # a signal after the last update still stops the run the documented way

    def _end_epoch(self) -> None:
        """``training_run_epoch_end`` and its event, then every process agrees whether to stop: for a
        preemption signal, or for a ``StopTrainingError`` raised there on some processes only."""
        stop = None
        try:
            self.training_run_epoch_end()
            self.callback_handler.call_event("on_training_run_epoch_end", self)
        except StopTrainingError as error:
            stop = error
        processes, group = self._accelerator.num_processes, self._run.control_group
        if processes > 1 and data.any_process(stop is not None, group) and stop is None:
            stop = StopTrainingError("Stopping training: another process stopped it at the end of this epoch.")
        self._check_signals(agree=True)
        if stop is not None:
            raise stop

    def _run_train_epoch(self, train_dl: Any) -> None:
        run, config = self._run, self.run_config
        assert config is not None  # (train() creates it before the loop runs)
        ga, max_steps = config.gradient_accumulation_steps, config.max_num_train_steps
        self.train_epoch_start()
        steps = self._epoch_steps(train_dl)
        run.begin_train_loss_tracking()
        self.callback_handler.call_event("on_train_epoch_start", self)
        sync_free = ga > 1 and self._accelerator.distributed_type != DistributedType.NO
        for step, batch in steps:
            self.callback_handler.call_event("on_train_step_start", self)
            is_update_step = (step + 1) % ga == 0 or step == steps.last_step
            if ga > 1:
                # Tell Accelerate where the accumulation window ends, so engines that accumulate
                # themselves (DeepSpeed) step exactly when this loop does.
                self._accelerator.sync_gradients = is_update_step
            with self._accelerator.no_sync(self.model) if sync_free and not is_update_step else nullcontext():
                self._train_step(batch, step, steps, ga)
            if is_update_step:
                self._optimizer_update(step, steps.position)
                if max_steps is not None and run.num_updates >= max_steps:
                    break
        run.train_done = True
        self.train_epoch_end()
        self._record_epoch_loss("train_loss_epoch", run.loss_tracker, steps)
        self.callback_handler.call_event("on_train_epoch_end", self)

    def _train_step(self, batch: Any, step: int, steps: data.EpochSteps, ga: int) -> None:
        batch_output = self.calculate_train_batch_loss(batch)
        if step == steps.start_step:
            _checks.check_batch_output(batch_output, "calculate_train_batch_loss")
        loss = batch_output["loss"]
        if steps.is_empty:
            batch_output["loss"], batch_output["batch_size"] = torch.zeros_like(loss), 0
        else:
            # A loss normalised over the whole accumulation window is ~1/ga of the batch's own mean.
            true_loss = loss * ga if ga > 1 and "num_items_in_batch" in batch_output else loss
            self._run.loss_tracker.update(true_loss, batch_output["batch_size"])
        self.callback_handler.call_event("on_train_step_end", self, batch=batch, batch_output=batch_output, step=step)
        self.backward_step(self._loss_for_backward(loss, batch_output, ga, steps))

    def _optimizer_update(self, step: int, data_position: Any) -> None:
        run, config = self._run, self.run_config
        assert config is not None
        if config.gradient_clip_value is not None:
            self._clip_gradients()
        self.optimizer_step()
        run.num_updates += 1
        if self.scheduler is not None and not self._accelerator.optimizer_step_was_skipped:
            self.scheduler_step()
        self.optimizer_zero_grad()
        run.record_update(step + 1, data_position)
        self.callback_handler.call_event("on_train_update_end", self, step=step, num_updates=run.num_updates)
        signals = run.signals
        if signals is not None and run.num_updates % self.preemption_check_interval == 0 and signals.poll():
            raise _StopRequested(signals.signal_number)

    def _epoch_steps(self, dataloader: Any, training: bool = True) -> data.EpochSteps:
        """The steps of an epoch over ``dataloader``; a training epoch resumed in the middle
        continues after the steps already done (or, for data that cannot, starts again)."""
        run, start, rest = self._run, 0, None
        if training and hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(self.run_history.current_epoch - 1)
        if training and run.epoch_step:
            rest = data.rest_of_epoch(self._accelerator, dataloader, run.epoch_step, run.data_position)
            start = run.epoch_step if rest is not None else 0
            if rest is None:
                run.start_epoch()
        steps = data.EpochSteps(
            dataloader, self._accelerator.num_processes, run.control_group, start, rest, track_position=training
        )
        run.opened_steps.append(steps)
        if training:
            run.epoch_steps = steps
        return steps

    def _run_eval_epoch(self, valid_dl: Any, is_training: bool = True, is_intermediate: bool = False) -> float:
        run, was_training, was_evaluating = self._run, self.model.training, self._run.evaluating
        run.evaluating = True  # (run_eval_epoch refuses to nest the trainer's own callbacks)
        self.eval_epoch_start()
        run.eval_loss_tracker.reset()
        self.callback_handler.call_event("on_eval_epoch_start", self, is_intermediate=is_intermediate)
        steps = self._epoch_steps(valid_dl, training=False)
        with torch.no_grad():
            for step, batch in steps:
                self.callback_handler.call_event("on_eval_step_start", self)
                batch_output = self.calculate_eval_batch_loss(batch)
                if step == 0:
                    _checks.check_batch_output(batch_output, "calculate_eval_batch_loss")
                if steps.is_empty:
                    batch_output["loss"], batch_output["batch_size"] = torch.zeros_like(batch_output["loss"]), 0
                else:
                    run.eval_loss_tracker.update(batch_output["loss"], batch_output["batch_size"])
                self.callback_handler.call_event("on_eval_step_end", self, batch=batch, batch_output=batch_output)
                if (step + 1) % self.preemption_check_interval == 0:
                    self._check_signals()
        self.eval_epoch_end()
        metric = "eval_loss_epoch" if is_training else "evaluation_loss"
        loss = self._record_epoch_loss(
            "intermediate_eval_loss" if is_intermediate else metric, run.eval_loss_tracker, steps
        )
        self.callback_handler.call_event("on_eval_epoch_end", self, is_intermediate=is_intermediate)
        if was_training:
            self.model.train()
        run.evaluating = was_evaluating
        return loss

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
        if dataloader is None:
            raise ValueError("run_eval_epoch needs a data loader: the run has no eval_dataset; pass `dataloader`.")
        if callbacks is None and self._run.evaluating:
            raise RuntimeError(
                "run_eval_epoch was called during an evaluation epoch (from an eval hook) with the trainer's own "
                "callbacks, which would fire that hook again, endlessly. Pass callbacks=() (or the callbacks the "
                "nested evaluation should call)."
            )
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

    def _check_signals(self, agree: bool = False) -> None:
        """Unwind to the run's top level if a preemption signal says to stop here (``agree``: at an
        epoch's or run's end, where the processes agree with a collective)."""
        signals = self._run.signals
        if signals is not None:
            signal_number = signals.agree() if agree else signals.poll()
            if signal_number:
                raise _StopRequested(signal_number)

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

    def _loss_for_backward(
        self, loss: torch.Tensor, batch_output: dict[str, Any], ga: int, steps: data.EpochSteps
    ) -> torch.Tensor:
        num_processes, deepspeed = self._accelerator.num_processes, self._accelerator.distributed_type
        if steps.is_empty:
            return loss * 0  # zero gradients, but the step's collectives still run
        if steps.num_active < num_processes:
            # Processes out of data contribute zero gradients: scale so that the update is the
            # mean over the processes that had data, not over all.
            loss = loss * (num_processes / steps.num_active)
        if "num_items_in_batch" in batch_output:
            # The loss is already normalised over the whole accumulation window; DDP averages
            # gradients over processes, so undo that average when accumulating.
            if ga > 1 and num_processes > 1:
                loss = loss * num_processes
            if ga > 1 and deepspeed == DistributedType.DEEPSPEED:
                loss = loss * ga  # the engine divides every loss by its accumulation steps
            return loss
        if ga == 1 or deepspeed == DistributedType.DEEPSPEED:
            return loss  # the DeepSpeed engine divides by its accumulation steps itself
        return loss / ga

    def _record_epoch_loss(self, metric: str, tracker: LossTracker, steps: data.EpochSteps) -> float:
        """Record the epoch's sample-weighted mean loss over every process (one host read)."""
        loss, count = epoch_loss(tracker, self._accelerator)
        data.warn_if_length_was_wrong(steps, count, metric)
        _checks.warn_about_epoch_loss(metric, loss, self.run_history.current_epoch, self._run)
        if loss is None:
            return float("nan")
        self.run_history.update_metric(metric, loss)
        return loss

    def _notify_exception(self, exc: BaseException) -> None:
        if isinstance(exc, StopTrainingError):
            return
        try:
            self.callback_handler.call_event("on_exception", self, exception=exc)
        except Exception as hook_error:  # never hide the original error
            warnings.warn(f"A callback failed while handling an exception: {hook_error!r}", stacklevel=2)

    # -- Overridable steps ---------------------------------------------------------------------------

    def create_train_dataloader(self, batch_size: int, train_dl_kwargs: dict[str, Any] | None = None) -> DataLoader:
        """Build the training ``DataLoader`` from the defaults updated with ``train_dl_kwargs``."""
        self._train_dl_kwargs = data.merge_dataloader_kwargs(
            "train_dataloader_kwargs",
            self.get_default_train_dl_kwargs(batch_size),
            train_dl_kwargs,
            self.train_dataset,
            self._run.preemption_signals,
        )
        return DataLoader(self.train_dataset, collate_fn=self.collate_fn, **self._train_dl_kwargs)  # type: ignore[arg-type]

    def create_eval_dataloader(self, batch_size: int, eval_dl_kwargs: dict[str, Any] | None = None) -> DataLoader:
        """Build the evaluation ``DataLoader`` from the defaults updated with ``eval_dl_kwargs``."""
        self._eval_dl_kwargs = data.merge_dataloader_kwargs(
            "eval_dataloader_kwargs",
            self.get_default_eval_dl_kwargs(batch_size),
            eval_dl_kwargs,
            self.eval_dataset,
            self._run.preemption_signals,
        )
        return DataLoader(self.eval_dataset, collate_fn=self.collate_fn, **self._eval_dl_kwargs)  # type: ignore[arg-type]

    def get_default_train_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        """Shuffled batches of ``batch_size``; see :func:`pa_core.data.default_num_workers` for workers."""
        return data.default_dataloader_kwargs(self.train_dataset, batch_size, True, self.device.type == "cuda")

    def get_default_eval_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        """Unshuffled batches of ``batch_size``; see :func:`pa_core.data.default_num_workers` for workers."""
        return data.default_dataloader_kwargs(self.eval_dataset, batch_size, False, self.device.type == "cuda")

    def create_scheduler(self) -> Any:
        """Call ``create_scheduler_fn`` with the optimizer, placeholders substituted."""
        scheduler_fn = replace_trainer_placeholder_values(self, self.create_scheduler_fn)
        return scheduler_fn(self.optimizer)

    def training_run_start(self) -> None:
        """Called at the start of ``train()``, before ``on_training_run_start``."""

    def train_epoch_start(self) -> None:
        """Put the model in training mode."""
        self.model.train()

    def calculate_train_batch_loss(self, batch: Any) -> dict[str, Any]:
        """Forward one training batch: ``batch[0]`` is the input, ``batch[1]`` the target.

        Return a dict with ``loss`` (a scalar tensor), ``model_outputs`` and ``batch_size``;
        optionally ``num_items_in_batch`` when the loss is already normalised over every item
        of the gradient-accumulation window. Override for other batch layouts. At the end of an
        epoch on several processes, a process out of data gets an empty batch (zero rows).
        """
        xb, yb = _checks.inputs_and_targets(batch, "calculate_train_batch_loss")
        model_outputs = self.model(xb)
        loss = _checks.call_loss_func(self.loss_func, model_outputs, yb, "calculate_train_batch_loss")
        return {"loss": loss, "model_outputs": model_outputs, "batch_size": yb.size(0)}

    def backward_step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (already divided by the gradient-accumulation steps)."""
        self._accelerator.backward(loss)

    def _clip_gradients(self) -> None:
        assert self.run_config is not None and self.run_config.gradient_clip_value is not None
        self._accelerator.clip_grad_value_(self.model.parameters(), clip_value=self.run_config.gradient_clip_value)

    def optimizer_step(self) -> None:
        """Update the weights (``self.optimizer.step()``, minus Accelerate's per-step overhead
        where that is provably the same; see ``pa_core._accelerate_shims``)."""
        self._step_optimizer()

    def scheduler_step(self) -> None:
        """Step the scheduler once per optimizer update."""
        self.scheduler.step()

    def optimizer_zero_grad(self) -> None:
        """Reset the gradients (``self.optimizer.zero_grad()``, minus Accelerate's per-step
        signature inspection; see ``pa_core._accelerate_shims``)."""
        self._zero_grad()

    def train_epoch_end(self) -> None:
        """Called after each training epoch, before ``train_loss_epoch`` is recorded."""

    def eval_epoch_start(self) -> None:
        """Put the model in evaluation mode."""
        self.model.eval()

    def calculate_eval_batch_loss(self, batch: Any) -> dict[str, Any]:
        """Forward one evaluation batch (under ``torch.no_grad``); same contract as training."""
        xb, yb = _checks.inputs_and_targets(batch, "calculate_eval_batch_loss")
        model_outputs = self.model(xb)
        loss = _checks.call_loss_func(self.loss_func, model_outputs, yb, "calculate_eval_batch_loss")
        return {"loss": loss, "model_outputs": model_outputs, "batch_size": yb.size(0)}

    def eval_epoch_end(self) -> None:
        """Called after each evaluation epoch, before its loss is recorded."""

    def training_run_epoch_end(self) -> None:
        """Called after each epoch's training and evaluation."""

    def training_run_end(self) -> None:
        """Called at the end of ``train()``."""

    def evaluation_run_start(self) -> None:
        """Called at the start of ``evaluate()``."""

    def evaluation_run_end(self) -> None:
        """Called at the end of ``evaluate()``."""

    # -- evaluate() ----------------------------------------------------------------------------------

    def evaluate(
        self,
        dataset: Dataset | None = None,
        per_device_batch_size: int = 8,
        dataloader_kwargs: dict[str, Any] | None = None,
        collate_fn: Callable[..., Any] | None = None,
    ) -> None:
        """Run one evaluation epoch and record ``evaluation_loss`` in a fresh run history.

        :param dataset: the data to evaluate; defaults to the last ``eval_dataset``.
        """
        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate() needs a dataset: pass `dataset` (no eval_dataset was given to train()).")
        _checks.check_evaluate_arguments(dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self.eval_dataset = dataset
        if collate_fn is not None:
            self.collate_fn = collate_fn
        self.run_history.reset()
        self._start_run(training=False)
        eval_dl = self.create_eval_dataloader(per_device_batch_size, dataloader_kwargs)
        self.model = shims.prepare_model_for_evaluation(self._accelerator, self.model)
        self._wrapped_model = self.model
        self._run.eval_dataloader = self.prepare_dataloader(eval_dl)
        self._run_guarded(self._run_evaluation)

    def _run_evaluation(self) -> None:
        self.evaluation_run_start()
        self.callback_handler.call_event("on_evaluation_run_start", self)
        try:
            self._run_eval_epoch(self._run.eval_dataloader, is_training=False)
        except StopTrainingError as error:
            self._accelerator.print(error)
            self.callback_handler.call_event("on_stop_training_error", self, error=error)
        self.evaluation_run_end()
        self.callback_handler.call_event("on_evaluation_run_end", self)
        self._check_signals(agree=True)

    # -- checkpoints (the files: pa_core._checkpoints and pa_core.training_state) ------------

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


class TrainerWithTimmScheduler(Trainer):
    """A Trainer for timm-style schedulers: ``step_update(num_updates)`` after every optimizer
    update and ``step(epoch)`` at the end of every training epoch."""

    def scheduler_step(self) -> None:
        self.scheduler.step_update(num_updates=self.run_state.num_updates)

    def train_epoch_end(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step(self.run_history.current_epoch)


# ----------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------


class _StopRequested(BaseException):
    """Unwinds the loop to the run's top level when it must stop for a preemption signal (a
    BaseException, so that no ``except Exception`` in a callback can swallow it)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def _available_callbacks(callbacks: Iterable[Any]) -> list[Any]:
    """The callbacks to use; with pa-core alone, the default names are skipped with a hint."""
    if callbacks is not DEFAULT_CALLBACKS:
        return list(callbacks)
    installed = plugins.entries(plugins.CALLBACKS_GROUP)
    available = [name for name in callbacks if name in installed]
    if len(available) < len(callbacks):
        warnings.warn(
            "pa-callbacks is not installed, so the Trainer trains without progress output or metric logging. "
            "Install it with `pip install pa-callbacks`, or pass callbacks=() to silence this message.",
            UserWarning,
            stacklevel=3,
        )
    return available


def _with_batch_limit(callbacks: list[Any]) -> list[Any]:
    """A Trainer created while ``PT_ACC_LIMIT_BATCHES`` is set limits its batches (``LimitBatches``)."""
    limit = limit_batches_from_env()
    if limit is None or any(cb is LimitBatchesCallback or isinstance(cb, LimitBatchesCallback) for cb in callbacks):
        return callbacks
    return [LimitBatchesCallback(limit), *callbacks]
