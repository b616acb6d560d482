"""The Trainer: a plain PyTorch training loop over Hugging Face Accelerate.

Read it top to bottom: ``train()`` builds the data loaders, prepares everything with Accelerate and runs
``_run_training``, which runs ``_run_train_epoch`` and ``_run_eval_epoch`` each epoch. Every step of the loop is a
short method a subclass can override, and each overridable method runs before the callback event of the same name.
What one ``train()`` or ``evaluate()`` call is doing lives in ``trainer.run_state`` (:class:`pa_core.RunState`);
what the Trainer offers besides its loop (properties, ``gather``, checkpoint files) in ``_trainer_base.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader, Dataset

from pa_core import _accelerate_shims as shims
from pa_core import _checks, data, plugins, training_state
from pa_core._preemption import DEFAULT_SIGNALS, SignalWatcher, StopRequested, check_signals
from pa_core._trainer_base import TrainerBase
from pa_core.callbacks import CallbackHandler, StopTrainingError
from pa_core.placeholders import replace_trainer_placeholder_values
from pa_core.run_config import create_run_config
from pa_core.run_state import RunState
from pa_core.tracking import InMemoryRunHistory, LossTracker, RunHistory, epoch_loss
from pa_core.utils import with_batch_limit

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


class Trainer(TrainerBase):
    """Trains and evaluates a model with the loop below.

    :param model: the ``nn.Module`` to train.
    :param loss_func: called as ``loss_func(model_outputs, targets)``; None for models that
        compute their own loss (then override ``calculate_train_batch_loss``).
    :param optimizer: a torch optimizer over the model's parameters (None to only evaluate).
    :param callbacks: callback instances, classes or ``pa.callbacks`` names, called in order.
    :param run_history: where metrics are recorded; an :class:`InMemoryRunHistory` by default.

    Set ``seed`` (class or instance attribute) to change the seed ``train()`` uses, or to None to leave the
    random state alone.

    A preemption signal (``preemption_signals``: SIGTERM and SIGINT unless changed, e.g. to add SIGUSR1 for
    SLURM) at any moment of ``train()`` or ``evaluate()`` stops the run at the next optimizer update,
    evaluation step or epoch end, at the same place on every process; the Trainer then saves a training state
    to ``preemption_save_dir`` (if set, during ``train()``), fires ``on_preemption`` and raises
    :class:`TrainingPreempted` (exit status 128 + the signal number: 143 for SIGTERM, 130 for SIGINT). A
    second, different signal acts at once, as does the same signal more than 3 seconds later (within 3
    seconds it is taken for the same request delivered twice, by a cluster and a launcher). Set
    ``handle_signals = False`` to leave signals alone.
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
        if callbacks is DEFAULT_CALLBACKS:  # (with pa-core alone, none is installed)
            callbacks = plugins.installed_default_callbacks(callbacks)
        self.callback_handler = CallbackHandler(with_batch_limit(list(callbacks)))
        for entry, plugin in plugins.autoload_plugins():
            self.callback_handler.add_plugin(plugin, origin=entry.origin)
        self.run_history = run_history if run_history is not None else InMemoryRunHistory()
        self.scheduler = None
        self.create_scheduler_fn: Callable[..., Any] | None = None
        self.run_config = None
        self.train_dataset: Dataset | None = None
        self.eval_dataset: Dataset | None = None
        self.collate_fn = None
        self._dataloader_kwargs = {}
        self._run = RunState(training=False)
        self._wrapped_model = None
        self._accelerator = self._new_accelerator()
        self.callback_handler.call_event("on_init_end", self)

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
        arguments = {name: value for name, value in locals().items() if name not in ("self", "resume_from")}
        _checks.check_train_arguments(optimizer=self.optimizer, **arguments)
        resume_from = training_state.find_training_state(resume_from) if resume_from is not None else None
        self.train_dataset, self.eval_dataset, self.collate_fn = train_dataset, eval_dataset, collate_fn
        self.create_scheduler_fn = create_scheduler_fn
        self._start_run(training=True, reset_run_history=reset_run_history)
        self._prepare_training(arguments)
        if resume_from is not None:
            self.load_training_state(resume_from)
        self._run_guarded(self._run_training)

    def _start_run(self, training: bool, reset_run_history: bool) -> None:
        """A fresh Accelerator and run state for a ``train()`` or ``evaluate()`` call."""
        if reset_run_history:
            self.run_history.reset()
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
        self._dataloader_kwargs = {}

    def _prepare_training(self, arguments: dict[str, Any]) -> None:
        """Build the loaders, prepare them with Accelerate, size the run, create the scheduler."""
        accelerator, run = self._accelerator, self._run
        batch_size, ga = arguments["per_device_batch_size"], arguments["gradient_accumulation_steps"]
        shims.take_over_gradient_accumulation(accelerator, ga)
        train_dl = self.create_train_dataloader(batch_size, arguments["train_dataloader_kwargs"])
        eval_kwargs = arguments["eval_dataloader_kwargs"]
        eval_dl = self.create_eval_dataloader(batch_size, eval_kwargs) if self.eval_dataset is not None else None
        if data.is_stream(train_dl):
            self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
            train_dl = self.prepare_dataloader(train_dl)
        else:  # DeepSpeed sizes its engine from a map-style loader prepared with the model
            self.model, self.optimizer, train_dl = accelerator.prepare(self.model, self.optimizer, train_dl)
            shims.deal_batches_unevenly(train_dl)
        self._wrapped_model = self.model
        self._step_optimizer = shims.optimizer_step_function(self.optimizer)
        self._zero_grad = shims.optimizer_zero_grad_function(self.optimizer)
        run.train_dataloader = train_dl
        run.eval_dataloader = self.prepare_dataloader(eval_dl) if eval_dl is not None else None
        loader_kwargs = (self._dataloader_kwargs.get("train", {}), self._dataloader_kwargs.get("eval", {}))
        self.run_config = create_run_config(
            accelerator, run, loader_kwargs, arguments["num_epochs"], batch_size, ga,
            arguments["gradient_clip_value"], arguments["max_num_train_steps"],
        )  # fmt: skip
        run.first_epoch = self.run_history.current_epoch
        run.last_epoch = run.first_epoch - 1 + self.run_config.num_epochs
        self.scheduler = self.create_scheduler() if self.create_scheduler_fn is not None else None

    def _run_guarded(self, loop: Callable[[], None]) -> None:
        """Run the loop with preemption signals watched; tell callbacks about any exception."""
        run = self._run
        watcher = SignalWatcher(run.preemption_signals, run.control_group) if self.handle_signals else None
        try:
            with watcher if watcher is not None else nullcontext():
                run.signals = watcher
                try:
                    loop()
                except StopRequested as stop:
                    self._stop_for_preemption(stop.signal_number)
        except BaseException as exc:
            self._notify_exception(exc)
            raise
        finally:
            run.signals = None
            self._end_run()

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
        steps = run._open_steps(train_dl, self._accelerator, self.run_history.current_epoch, training=True)
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
        scaled = shims.loss_for_backward(self._accelerator, loss, batch_output, ga, steps.is_empty, steps.num_active)
        self.backward_step(scaled)

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
            raise StopRequested(signals.signal_number)

    def _run_eval_epoch(self, valid_dl: Any, is_training: bool = True, is_intermediate: bool = False) -> float:
        run, was_training, was_evaluating = self._run, self.model.training, self._run.evaluating
        run.evaluating = True  # (run_eval_epoch refuses to nest the trainer's own callbacks)
        self.eval_epoch_start()
        run.eval_loss_tracker.reset()
        self.callback_handler.call_event("on_eval_epoch_start", self, is_intermediate=is_intermediate)
        steps = run._open_steps(valid_dl, self._accelerator, self.run_history.current_epoch, training=False)
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
        metric = (
            "intermediate_eval_loss" if is_intermediate else "eval_loss_epoch" if is_training else "evaluation_loss"
        )
        loss = self._record_epoch_loss(metric, run.eval_loss_tracker, steps)
        self.callback_handler.call_event("on_eval_epoch_end", self, is_intermediate=is_intermediate)
        if was_training:
            self.model.train()
        run.evaluating = was_evaluating
        return loss

    def _check_signals(self, agree: bool = False) -> None:
        """Unwind to the run's top level if a preemption signal says to stop here (``agree``: at an
        epoch's or run's end, where the processes agree with a collective)."""
        signals = self._run.signals
        if signals is not None:
            signal_number = signals.agree() if agree else signals.poll()
            if signal_number:
                raise StopRequested(signal_number)

    def _record_epoch_loss(self, metric: str, tracker: LossTracker, steps: data.EpochSteps) -> float:
        """Record the epoch's sample-weighted mean loss over every process (one host read)."""
        loss, count = epoch_loss(tracker, self._accelerator)
        data.warn_if_length_was_wrong(steps, count, metric)
        _checks.warn_about_epoch_loss(metric, loss, self.run_history.current_epoch, self._run)
        if loss is None:
            return float("nan")
        self.run_history.update_metric(metric, loss)
        return loss

    # -- Overridable steps ---------------------------------------------------------------------------

    def create_train_dataloader(self, batch_size: int, train_dl_kwargs: dict[str, Any] | None = None) -> DataLoader:
        """Build the training ``DataLoader`` from the defaults updated with ``train_dl_kwargs``."""
        defaults = self.get_default_train_dl_kwargs(batch_size)
        return self._new_dataloader("train", self.train_dataset, defaults, train_dl_kwargs)

    def create_eval_dataloader(self, batch_size: int, eval_dl_kwargs: dict[str, Any] | None = None) -> DataLoader:
        """Build the evaluation ``DataLoader`` from the defaults updated with ``eval_dl_kwargs``."""
        defaults = self.get_default_eval_dl_kwargs(batch_size)
        return self._new_dataloader("eval", self.eval_dataset, defaults, eval_dl_kwargs)

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
        _checks.check_evaluate_arguments(dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self.eval_dataset = dataset
        if collate_fn is not None:
            self.collate_fn = collate_fn
        self._start_run(training=False, reset_run_history=True)
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


class TrainerWithTimmScheduler(Trainer):
    """A Trainer for timm schedulers: ``step_update(num_updates)`` per update, ``step(epoch)`` per epoch."""

    def scheduler_step(self) -> None:
        self.scheduler.step_update(num_updates=self.run_state.num_updates)

    def train_epoch_end(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step(self.run_history.current_epoch)
