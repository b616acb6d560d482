"""The Trainer: a plain PyTorch training loop over Hugging Face Accelerate.

Read it top to bottom: ``train()`` builds the data loaders, prepares everything with
Accelerate and runs ``_run_training``, which runs ``_run_train_epoch`` and ``_run_eval_epoch``
each epoch. Every step of the loop is a short method a subclass can override, and each
overridable method runs before the callback event of the same name.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.data_loader import BatchSamplerShard
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from pa_core import _plugins
from pa_core._accelerate_shims import optimizer_step_function, optimizer_zero_grad_function
from pa_core._checks import (
    check_batch_output,
    check_distributed_eval_size,
    check_evaluate_arguments,
    check_train_arguments,
    check_trainer_arguments,
    check_training_state_dir,
)
from pa_core._preemption import SignalWatcher, TrainingPreempted
from pa_core._serialization import (
    TRAINER_STATE_FILE,
    atomic_save,
    check_checkpoint,
    check_optimizer_state,
    check_training_state_files,
    list_state_files,
    load_file,
    load_model_state,
    read_trainer_state,
    replace_directory,
)
from pa_core.callbacks import CallbackHandler, StopTrainingError
from pa_core.placeholders import replace_trainer_placeholder_values
from pa_core.run_config import TrainerRunConfig
from pa_core.tracking import InMemoryRunHistory, LossTracker, RunHistory

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

LIMIT_BATCHES_ENV = "PT_ACC_LIMIT_BATCHES"


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

    SIGTERM or SIGINT during ``train()`` stops the run within two optimizer updates, at the
    same update on every process; the Trainer then saves a training state to
    ``preemption_save_dir`` (if set), fires ``on_preemption`` and raises
    :class:`TrainingPreempted` (exit status 143 or 130). A second signal acts at once. In
    multi-process runs the processes agree through torch.distributed's key-value store, checked
    every ``preemption_check_interval`` updates (never a GPU synchronisation). Set
    ``handle_signals = False`` to leave signals alone.
    """

    seed: int | None = 42
    preemption_save_dir: str | os.PathLike[str] | None = None
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
        check_trainer_arguments(model, loss_func, optimizer, callbacks)
        self.model = model
        self.loss_func = loss_func
        self.optimizer = optimizer
        self.callback_handler = CallbackHandler(_available_callbacks(callbacks))
        for entry, plugin in _plugins.autoload_plugins():
            self.callback_handler.add_plugin(plugin, origin=entry.origin)
        self.run_history: RunHistory = run_history if run_history is not None else InMemoryRunHistory()
        self.scheduler: Any = None
        self.create_scheduler_fn: Callable[..., Any] | None = None
        self.run_config: TrainerRunConfig | None = None
        self.train_dataset: Dataset | None = None
        self.eval_dataset: Dataset | None = None
        self.collate_fn: Callable[..., Any] | None = None
        self._train_dataloader: Any = None
        self._eval_dataloader: Any = None
        self._train_dl_kwargs: dict[str, Any] = {}
        self._eval_dl_kwargs: dict[str, Any] = {}
        self._loss_tracker = LossTracker()
        self._eval_loss_tracker = LossTracker()
        self._position = _RunPosition()
        self._first_epoch = 1  # the run_history epoch the current training run started with
        self._signals: SignalWatcher | None = None
        self._wrapped_model: Any = None  # the prepared model (DDP, DeepSpeed engine) of the last run
        # Read at construction, as upstream does: `with LimitBatches(2): trainer = Trainer(...)`.
        self._limit_batches_at_init = _limit_batches_from_env()
        self._accelerator = self._new_accelerator()
        self.callback_handler.call_event("on_init_end", self)

    # ------------------------------------------------------------------------------------
    # Accelerate
    # ------------------------------------------------------------------------------------

    def _create_accelerator(self) -> Accelerator:
        """Create the Accelerator; override to pass options (mixed precision, kwargs handlers).

        Build on ``self._accelerator_kwargs()`` to keep what integrations configure::

            def _create_accelerator(self):
                return Accelerator(**self._accelerator_kwargs(), mixed_precision="bf16")
        """
        return Accelerator(**self._accelerator_kwargs())

    def _accelerator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Accelerator``, as configured by the callbacks."""
        kwargs: dict[str, Any] = {}
        launched_with_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _accelerator_device_available():
            if launched_with_deepspeed:
                # DeepSpeed runs on the CPU only with cpu=False and an explicit gloo process group
                # (without one Accelerate finds no backend and counts a single process).
                from accelerate.utils import InitProcessGroupKwargs

                kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
            else:
                # Launched on several processes (torchrun, accelerate launch) on a machine without
                # an accelerator: Accelerate only goes multi-process on the CPU when told to.
                kwargs["cpu"] = True
        self.callback_handler.call_event("pa_configure_accelerator", self, accelerator_kwargs=kwargs)
        return kwargs

    def _new_accelerator(self) -> Accelerator:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            _forget_single_process_state()
        accelerator = self._create_accelerator()
        # Shuffling from (seed, epoch) makes the data order reproducible, so a resumed run
        # sees the same batches as an uninterrupted one.
        config = accelerator.dataloader_config
        config.use_seedable_sampler = True
        if config.data_seed is None:
            config.data_seed = self.seed if self.seed is not None else 0
        return accelerator

    # ------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        return self._accelerator.device

    @property
    def is_world_process_zero(self) -> bool:
        """True on the first process of the whole run (the one that writes shared files)."""
        return self._accelerator.is_main_process

    @property
    def is_local_process_zero(self) -> bool:
        """True on the first process of this machine."""
        return self._accelerator.is_local_main_process

    @property
    def num_updates(self) -> int:
        """Optimizer updates performed so far in the current (or last) training run."""
        return self._position.num_updates

    @property
    def last_epoch(self) -> int:
        """The ``run_history`` epoch the current (or last) training run ends with.

        ``run_config.num_epochs`` if the run started from a fresh history; with
        ``train(..., reset_run_history=False)`` the epochs continue from the previous run, so a
        second ``train(num_epochs=3)`` after 2 epochs trains epochs 3 to 5 and this is 5.
        """
        if self.run_config is None:
            raise RuntimeError("last_epoch is known once train() has been called.")
        return self._first_epoch - 1 + self.run_config.num_epochs

    @property
    def loss_tracker(self) -> LossTracker:
        """The current training epoch's running loss (values stay on the device)."""
        return self._loss_tracker

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the local main process only."""
        self._accelerator.print(*args, **kwargs)

    def gather(self, tensor: torch.Tensor, padding_value: Any = None) -> torch.Tensor:
        """Gather ``tensor`` from every process, concatenated along the first dimension.

        Evaluation batches are not padded with repeated samples, so the last batches can
        differ in size between processes: pass a ``padding_value`` that cannot occur in the
        data, and tensors are padded to a common size, gathered, and the padding rows (rows
        whose every element equals ``padding_value``) removed.
        """
        if padding_value is None:
            return self._accelerator.gather(tensor)
        from pa_core.utils import remove_padding

        padded = self._accelerator.pad_across_processes(tensor, dim=0, pad_index=padding_value)
        return remove_padding(self._accelerator.gather(padded), padding_value)

    def get_model(self, keep_torch_compile: bool = True) -> torch.nn.Module:
        """The model without Accelerate's wrappers (DDP, mixed precision)."""
        return self._accelerator.unwrap_model(self.model, keep_torch_compile=keep_torch_compile)

    # ------------------------------------------------------------------------------------
    # train()
    # ------------------------------------------------------------------------------------

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
        """Train the model.

        :param train_dataset: the training data; by default each batch is ``(inputs, targets)``.
        :param num_epochs: how many passes over ``train_dataset``.
        :param eval_dataset: evaluated after every training epoch, if given.
        :param per_device_batch_size: the batch size on each process.
        :param max_num_train_steps: stop after this many optimizer updates (``num_epochs``
            becomes the number of epochs needed to reach it).
        :param gradient_accumulation_steps: batches per optimizer update.
        :param gradient_clip_value: clip gradients to this absolute value before each update.
        :param create_scheduler_fn: called with the optimizer to build a scheduler stepped
            after every optimizer update; may hold :class:`TrainerPlaceholderValues`.
        :param train_dataloader_kwargs: override the default ``DataLoader`` arguments.
        :param eval_dataloader_kwargs: override the default eval ``DataLoader`` arguments.
        :param reset_run_history: clear metrics from previous runs first.
        :param collate_fn: passed to both data loaders.
        :param resume_from: a folder written by ``save_training_state``: continue that run.
        """
        check_train_arguments(
            train_dataset=train_dataset,
            num_epochs=num_epochs,
            eval_dataset=eval_dataset,
            per_device_batch_size=per_device_batch_size,
            max_num_train_steps=max_num_train_steps,
            gradient_accumulation_steps=gradient_accumulation_steps,
            gradient_clip_value=gradient_clip_value,
            create_scheduler_fn=create_scheduler_fn,
            train_dataloader_kwargs=train_dataloader_kwargs,
            eval_dataloader_kwargs=eval_dataloader_kwargs,
            reset_run_history=reset_run_history,
            collate_fn=collate_fn,
            optimizer=self.optimizer,
        )
        if resume_from is not None:
            resume_from = check_training_state_dir("resume_from", resume_from)

        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.collate_fn, self.create_scheduler_fn = collate_fn, create_scheduler_fn
        if reset_run_history:
            self.run_history.reset()

        self._accelerator = self._new_accelerator()
        self._take_over_gradient_accumulation(gradient_accumulation_steps)
        if self.seed is not None:
            set_seed(self.seed, device_specific=True)
        self._train_dataloader = self.create_train_dataloader(per_device_batch_size, train_dataloader_kwargs)
        self._eval_dataloader = (
            self.create_eval_dataloader(per_device_batch_size, eval_dataloader_kwargs)
            if eval_dataset is not None
            else None
        )
        self._prepare_model_optimizer_and_dataloaders()
        self.run_config = self._create_run_config(
            num_epochs, per_device_batch_size, gradient_accumulation_steps, gradient_clip_value, max_num_train_steps
        )
        self._check_eval_batch_size()
        self.scheduler = self.create_scheduler() if create_scheduler_fn is not None else None
        self._position = _RunPosition()
        self._first_epoch = self.run_history.current_epoch
        self._reported_non_finite = False
        if resume_from is not None:
            self.load_training_state(resume_from)
        try:
            with SignalWatcher() if self.handle_signals else nullcontext() as self._signals:
                self._run_training()
        except BaseException as exc:
            self._notify_exception(exc)
            raise
        finally:
            self._unwrap_after_run()

    def _take_over_gradient_accumulation(self, gradient_accumulation_steps: int) -> None:
        """pa divides the loss and skips gradient syncs itself; Accelerate must not do it again."""
        launched_with = self._accelerator.gradient_accumulation_steps
        if launched_with == 1 or self._accelerator.distributed_type == DistributedType.DEEPSPEED:
            return  # (DeepSpeed's engine accumulation is checked against train() at run start)
        if launched_with != gradient_accumulation_steps:
            raise ValueError(
                f"Accelerate was configured for {launched_with} gradient-accumulation steps (accelerate launch "
                f"--gradient_accumulation_steps or the Accelerator), but train() got gradient_accumulation_steps="
                f"{gradient_accumulation_steps}. pa accumulates itself: pass the number to train() only."
            )
        self._accelerator.gradient_accumulation_steps = 1

    def _prepare_model_optimizer_and_dataloaders(self) -> None:
        self.model, self.optimizer, self._train_dataloader = self._accelerator.prepare(
            self.model, self.optimizer, self._train_dataloader
        )
        self._wrapped_model = self.model
        self._step_optimizer = optimizer_step_function(self.optimizer)
        self._zero_grad = optimizer_zero_grad_function(self.optimizer)
        if self._eval_dataloader is not None:
            self._eval_dataloader = self._prepare_eval_dataloader(self._eval_dataloader)
        limit = _limit_batches_from_env() or self._limit_batches_at_init
        if limit:
            from pa_core.utils import DataLoaderSlice

            self._train_dataloader = DataLoaderSlice(self._train_dataloader, limit)
            if self._eval_dataloader is not None:
                self._eval_dataloader = DataLoaderSlice(self._eval_dataloader, limit)

    def _prepare_eval_dataloader(self, dataloader: DataLoader) -> Any:
        prepared = self._accelerator.prepare(dataloader)
        # Every eval sample is seen exactly once: no padding with repeated samples.
        if isinstance(getattr(prepared, "batch_sampler", None), BatchSamplerShard):
            prepared.batch_sampler.even_batches = False
        return prepared

    def _unwrap_after_run(self) -> None:
        self.model = self._accelerator.unwrap_model(self.model)
        if isinstance(self.optimizer, AcceleratedOptimizer):
            self.optimizer = self.optimizer.optimizer
        if self._accelerator.distributed_type != DistributedType.DEEPSPEED:
            # Only a DeepSpeed engine is needed after the run (to gather ZeRO-3 weights). A DDP
            # wrapper kept alive until interpreter exit is freed after its process group's
            # threads, and that deadlocks or aborts the process as it exits.
            self._wrapped_model = None

    def _create_run_config(
        self,
        num_epochs: int,
        per_device_batch_size: int,
        gradient_accumulation_steps: int,
        gradient_clip_value: float | None,
        max_num_train_steps: int | None,
    ) -> TrainerRunConfig:
        accelerator = self._accelerator
        num_update_steps_per_epoch = math.ceil(len(self._train_dataloader) / gradient_accumulation_steps)
        if max_num_train_steps is not None:
            num_epochs = math.ceil(max_num_train_steps / num_update_steps_per_epoch)
        eval_batch_size = self._eval_dl_kwargs.get("batch_size", per_device_batch_size)
        return TrainerRunConfig(
            num_epochs=num_epochs,
            train_per_device_batch_size=self._train_dl_kwargs.get("batch_size", per_device_batch_size),
            train_dl_kwargs=self._train_dl_kwargs,
            eval_per_device_batch_size=eval_batch_size,
            eval_dl_kwargs=self._eval_dl_kwargs,
            gradient_accumulation_steps=gradient_accumulation_steps,
            gradient_clip_value=gradient_clip_value,
            train_total_batch_size=per_device_batch_size * accelerator.num_processes * gradient_accumulation_steps,
            eval_total_batch_size=eval_batch_size * accelerator.num_processes,
            num_update_steps_per_epoch=num_update_steps_per_epoch,
            num_local_update_steps_per_epoch=num_update_steps_per_epoch,
            max_num_train_steps=max_num_train_steps,
            is_local_process_zero=accelerator.is_local_main_process,
            is_world_process_zero=accelerator.is_main_process,
            is_distributed=accelerator.distributed_type != DistributedType.NO,
            mixed_precision=accelerator.mixed_precision,
            num_processes=accelerator.num_processes,
        )

    def _check_eval_batch_size(self) -> None:
        if self._eval_dataloader is None or self.run_config is None or not self.run_config.is_distributed:
            return
        check_distributed_eval_size(
            self.eval_dataset,
            self.run_config.eval_per_device_batch_size,
            self._accelerator.num_processes,
            self._eval_dl_kwargs.get("drop_last", False),
        )

    # ------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------

    def _run_training(self) -> None:
        self.training_run_start()
        self.callback_handler.call_event("on_training_run_start", self)
        self._check_deepspeed_engine()
        try:
            while self.run_history.current_epoch <= self.last_epoch:
                self._run_train_epoch(self._train_dataloader)
                if self._eval_dataloader is not None:
                    self._run_eval_epoch(self._eval_dataloader)
                self._position.epoch_done = True
                self.training_run_epoch_end()
                self.callback_handler.call_event("on_training_run_epoch_end", self)
                self.run_history._increment_epoch()
                self._position = _RunPosition(num_updates=self._position.num_updates)
                if self._max_steps_reached():
                    break
        except StopTrainingError as error:
            self._accelerator.print(error)
            self.callback_handler.call_event("on_stop_training_error", self, error=error)
        self.training_run_end()
        self.callback_handler.call_event("on_training_run_end", self)

    def _run_train_epoch(self, train_dl: Any) -> None:
        position = self._position
        ga = self.run_config.gradient_accumulation_steps
        num_batches = len(train_dl)
        self.train_epoch_start()
        self._loss_tracker.reset()
        if position.batches_done:  # resuming in the middle of this epoch
            self._loss_tracker.total_loss, self._loss_tracker.running_count = position.loss_total, position.loss_count
        self.callback_handler.call_event("on_train_epoch_start", self)
        if hasattr(train_dl, "set_epoch"):
            train_dl.set_epoch(self.run_history.current_epoch - 1)
        if position.batches_done:
            train_dl = self._skip_batches(train_dl, position.batches_done)
        sync_free = ga > 1 and self._accelerator.distributed_type != DistributedType.NO
        first_step = position.batches_done
        for step, batch in enumerate(train_dl, start=first_step):
            self.callback_handler.call_event("on_train_step_start", self)
            is_update_step = (step + 1) % ga == 0 or step + 1 == num_batches
            if ga > 1:
                # Tell Accelerate where the accumulation window ends, so engines that accumulate
                # themselves (DeepSpeed) step exactly when this loop does.
                self._accelerator.sync_gradients = is_update_step
            with self._accelerator.no_sync(self.model) if sync_free and not is_update_step else nullcontext():
                batch_output = self.calculate_train_batch_loss(batch)
                if step == first_step:
                    check_batch_output(batch_output, "calculate_train_batch_loss")
                loss = batch_output["loss"]
                self._loss_tracker.update(_true_loss(loss, batch_output, ga), batch_output["batch_size"])
                self.callback_handler.call_event(
                    "on_train_step_end", self, batch=batch, batch_output=batch_output, step=step
                )
                self.backward_step(self._loss_for_backward(loss, batch_output, ga))
            if is_update_step:
                if self.run_config.gradient_clip_value is not None:
                    self._clip_gradients()
                self.optimizer_step()
                position.num_updates += 1
                if self.scheduler is not None and not self._accelerator.optimizer_step_was_skipped:
                    self.scheduler_step()
                self.optimizer_zero_grad()
                position.record_update(step + 1, self._loss_tracker)
                self.callback_handler.call_event(
                    "on_train_update_end", self, step=step, num_updates=position.num_updates
                )
                if self._signals is not None and position.num_updates % self.preemption_check_interval == 0:
                    signal_number = self._signals.poll(position.num_updates)
                    if signal_number:
                        self._stop_for_preemption(signal_number)
                if self._max_steps_reached():
                    break
        position.train_done = True
        self.train_epoch_end()
        train_loss = self._epoch_loss(self._loss_tracker)
        self.run_history.update_metric("train_loss_epoch", train_loss)
        if not math.isfinite(train_loss) and not self._reported_non_finite:
            self._reported_non_finite = True
            warnings.warn(
                f"train_loss_epoch is {train_loss} in epoch {self.run_history.current_epoch}: training diverged "
                "(lower the learning rate, clip gradients, check the data), and the weights are probably no longer "
                "finite. Add the terminate-on-nan callback to stop such runs automatically.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.callback_handler.call_event("on_train_epoch_end", self)

    def _skip_batches(self, train_dl: Any, num_batches: int) -> Any:
        """The rest of an epoch after ``num_batches`` batches, for a run resumed mid-epoch."""
        from pa_core.utils import DataLoaderSlice

        if isinstance(train_dl, DataLoaderSlice):  # a limited loader stays limited
            rest = self._accelerator.skip_first_batches(train_dl.dl, num_batches)
            return DataLoaderSlice(rest, train_dl.slice_size - num_batches)
        return self._accelerator.skip_first_batches(train_dl, num_batches)

    def _run_eval_epoch(self, valid_dl: Any, is_training: bool = True, is_intermediate: bool = False) -> None:
        was_training = self.model.training
        self.eval_epoch_start()
        self._eval_loss_tracker.reset()
        self.callback_handler.call_event("on_eval_epoch_start", self, is_intermediate=is_intermediate)
        with torch.no_grad():
            for step, batch in enumerate(valid_dl):
                self.callback_handler.call_event("on_eval_step_start", self)
                batch_output = self.calculate_eval_batch_loss(batch)
                if step == 0:
                    check_batch_output(batch_output, "calculate_eval_batch_loss")
                self._eval_loss_tracker.update(batch_output["loss"], batch_output["batch_size"])
                self.callback_handler.call_event("on_eval_step_end", self, batch=batch, batch_output=batch_output)
        self.eval_epoch_end()
        if is_intermediate:
            metric = "intermediate_eval_loss"
        else:
            metric = "eval_loss_epoch" if is_training else "evaluation_loss"
        self.run_history.update_metric(metric, self._epoch_loss(self._eval_loss_tracker))
        self.callback_handler.call_event("on_eval_epoch_end", self, is_intermediate=is_intermediate)
        if was_training:
            self.model.train()

    def _stop_for_preemption(self, signal_number: int) -> None:
        state_dir = os.fspath(self.preemption_save_dir) if self.preemption_save_dir is not None else None
        if state_dir is not None:
            self.save_training_state(state_dir)
        self.callback_handler.call_event("on_preemption", self, signal_number=signal_number, state_dir=state_dir)
        error = TrainingPreempted(signal_number, state_dir, self.run_history.current_epoch, self._position.num_updates)
        self._accelerator.print(error)
        raise error

    def _check_deepspeed_engine(self) -> None:
        """Under DeepSpeed the engine accumulates and clips: check it agrees with train()'s arguments.

        Runs after ``on_training_run_start``, where pa-deepspeed sizes the engine from ``train()``.
        """
        if self._accelerator.distributed_type != DistributedType.DEEPSPEED:
            return
        if self.run_config.gradient_clip_value is not None:
            raise ValueError(
                f"train(gradient_clip_value={self.run_config.gradient_clip_value!r}) clips gradients by value, which "
                "DeepSpeed cannot do: it clips the gradient norm inside its optimizer step (the DeepSpeed config's "
                "gradient_clipping). Remove gradient_clip_value."
            )
        ga = self.run_config.gradient_accumulation_steps
        engine_ga = self.model.gradient_accumulation_steps()  # type: ignore[operator]  # a DeepSpeed engine
        if engine_ga != ga:
            raise ValueError(
                f"DeepSpeed is configured for {engine_ga} gradient-accumulation steps but train() was called with "
                f"gradient_accumulation_steps={ga}. Pass --gradient_accumulation_steps {ga} to accelerate launch, set "
                "it in the DeepSpeed config, or add pa-deepspeed's DeepSpeedCallback, which takes it from train()."
            )

    def _max_steps_reached(self) -> bool:
        max_steps = self.run_config.max_num_train_steps
        return max_steps is not None and self._position.num_updates >= max_steps

    def _loss_for_backward(self, loss: torch.Tensor, batch_output: dict[str, Any], ga: int) -> torch.Tensor:
        if "num_items_in_batch" in batch_output:
            # The loss is already normalised over the whole accumulation window; DDP averages
            # gradients over processes, so undo that average when accumulating.
            if ga > 1 and self._accelerator.num_processes > 1:
                loss = loss * self._accelerator.num_processes
            if ga > 1 and self._accelerator.distributed_type == DistributedType.DEEPSPEED:
                loss = loss * ga  # the engine divides every loss by its accumulation steps
            return loss
        if ga == 1 or self._accelerator.distributed_type == DistributedType.DEEPSPEED:
            return loss  # the DeepSpeed engine divides by its accumulation steps itself
        return loss / ga

    def _epoch_loss(self, tracker: LossTracker) -> float:
        """The sample-weighted mean loss over every process (one host read per epoch)."""
        total, count = tracker.total_loss, tracker.running_count
        if self._accelerator.num_processes > 1:
            stats = torch.stack(
                [
                    torch.as_tensor(total, dtype=torch.float32, device=self.device).reshape(()),
                    torch.tensor(float(count), device=self.device),
                ]
            )
            total, count = self._accelerator.reduce(stats, reduction="sum").tolist()
        return float(total) / count if count else float("nan")

    def _notify_exception(self, exc: BaseException) -> None:
        if isinstance(exc, StopTrainingError):
            return
        try:
            self.callback_handler.call_event("on_exception", self, exception=exc)
        except Exception as hook_error:  # never hide the original error
            warnings.warn(f"A callback failed while handling an exception: {hook_error!r}", stacklevel=2)

    # ------------------------------------------------------------------------------------
    # Overridable steps
    # ------------------------------------------------------------------------------------

    def create_train_dataloader(self, batch_size: int, train_dl_kwargs: dict[str, Any] | None = None) -> DataLoader:
        """Build the training ``DataLoader`` from the defaults updated with ``train_dl_kwargs``."""
        self._train_dl_kwargs = _merge_dl_kwargs(
            self.get_default_train_dl_kwargs(batch_size), train_dl_kwargs, self.train_dataset
        )
        return DataLoader(self.train_dataset, collate_fn=self.collate_fn, **self._train_dl_kwargs)  # type: ignore[arg-type]

    def create_eval_dataloader(self, batch_size: int, eval_dl_kwargs: dict[str, Any] | None = None) -> DataLoader:
        """Build the evaluation ``DataLoader`` from the defaults updated with ``eval_dl_kwargs``."""
        self._eval_dl_kwargs = _merge_dl_kwargs(
            self.get_default_eval_dl_kwargs(batch_size), eval_dl_kwargs, self.eval_dataset
        )
        return DataLoader(self.eval_dataset, collate_fn=self.collate_fn, **self._eval_dl_kwargs)  # type: ignore[arg-type]

    def get_default_train_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        """Shuffled batches of ``batch_size``; see :func:`default_num_workers` for workers."""
        return self._default_dl_kwargs(batch_size, self.train_dataset, shuffle=True)

    def get_default_eval_dl_kwargs(self, batch_size: int) -> dict[str, Any]:
        """Unshuffled batches of ``batch_size``; see :func:`default_num_workers` for workers."""
        return self._default_dl_kwargs(batch_size, self.eval_dataset, shuffle=False)

    def _default_dl_kwargs(self, batch_size: int, dataset: Any, shuffle: bool) -> dict[str, Any]:
        num_workers = default_num_workers(dataset)
        kwargs: dict[str, Any] = {
            "shuffle": shuffle,
            "pin_memory": self.device.type == "cuda",
            "batch_size": batch_size,
            "num_workers": num_workers,
            # The loader's own generator (re-seeded each epoch by Accelerate's seedable
            # sampler) keeps starting an epoch from drawing on the global RNG, so a run
            # resumed mid-epoch replays the same random numbers (dropout, augmentation).
            "generator": torch.Generator(),
        }
        if num_workers:
            from pa_core.utils import worker_init_fn

            kwargs["worker_init_fn"] = worker_init_fn
            kwargs["persistent_workers"] = True
        return kwargs

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
        of the gradient-accumulation window. Override for other batch layouts.
        """
        xb, yb = _inputs_and_targets(batch, "calculate_train_batch_loss")
        model_outputs = self.model(xb)
        loss = _call_loss_func(self.loss_func, model_outputs, yb, "calculate_train_batch_loss")
        return {"loss": loss, "model_outputs": model_outputs, "batch_size": yb.size(0)}

    def backward_step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (already divided by the gradient-accumulation steps)."""
        self._accelerator.backward(loss)

    def _clip_gradients(self) -> None:
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
        xb, yb = _inputs_and_targets(batch, "calculate_eval_batch_loss")
        model_outputs = self.model(xb)
        loss = _call_loss_func(self.loss_func, model_outputs, yb, "calculate_eval_batch_loss")
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

    # ------------------------------------------------------------------------------------
    # evaluate()
    # ------------------------------------------------------------------------------------

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
        check_evaluate_arguments(dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self.eval_dataset = dataset
        if collate_fn is not None:
            self.collate_fn = collate_fn
        self.run_history.reset()
        self._accelerator = self._new_accelerator()
        self._eval_dataloader = self.create_eval_dataloader(per_device_batch_size, dataloader_kwargs)
        deepspeed_plugin = self._accelerator.state.deepspeed_plugin
        if deepspeed_plugin is not None and deepspeed_plugin.zero_stage != 3:
            # DeepSpeed builds ZeRO stage 1/2 engines only around an optimizer, and evaluation
            # needs no engine: every process holds the whole model.
            self.model = self._accelerator.prepare_model(self.model, evaluation_mode=True)
        else:
            self.model = self._accelerator.prepare(self.model)
        self._wrapped_model = self.model
        self._eval_dataloader = self._prepare_eval_dataloader(self._eval_dataloader)
        if self._accelerator.num_processes > 1:
            check_distributed_eval_size(
                dataset,
                self._eval_dl_kwargs.get("batch_size", per_device_batch_size),
                self._accelerator.num_processes,
                self._eval_dl_kwargs.get("drop_last", False),
            )
        try:
            self.evaluation_run_start()
            self.callback_handler.call_event("on_evaluation_run_start", self)
            try:
                self._run_eval_epoch(self._eval_dataloader, is_training=False)
            except StopTrainingError as error:
                self._accelerator.print(error)
                self.callback_handler.call_event("on_stop_training_error", self, error=error)
            self.evaluation_run_end()
            self.callback_handler.call_event("on_evaluation_run_end", self)
        except BaseException as exc:
            self._notify_exception(exc)
            raise
        finally:
            self._unwrap_after_run()

    # ------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------

    def save_checkpoint(
        self,
        save_path: str | os.PathLike[str],
        checkpoint_kwargs: dict[str, Any] | None = None,
        save_optimizer: bool = True,
        save_scheduler: bool = True,
        save_per_node: bool = True,
    ) -> None:
        """Save the model weights (and optimizer/scheduler state) to one portable file.

        The file holds ``model_state_dict`` (unwrapped, without ``torch.compile`` prefixes),
        ``optimizer_state_dict`` and ``scheduler_state_dict`` when present and asked for,
        and ``checkpoint_kwargs`` at the top level. Call it on every process; the file is
        written by the main process of each node (``save_per_node``) or of the world only.
        """
        model = self.model
        wrapped = getattr(self, "_wrapped_model", None)
        if wrapped is not None and wrapped is not model and self._accelerator.unwrap_model(wrapped) is model:
            model = wrapped  # after train(): sharded engines (DeepSpeed ZeRO-3) gather through their wrapper
        model_state = self._accelerator.get_state_dict(model, unwrap=True)
        # DeepSpeed ZeRO-3 gathers the full weights on the world's main process only (None elsewhere).
        has_weights = model_state is not None
        checkpoint: dict[str, Any] = {"model_state_dict": _strip_compile_prefix(model_state) if has_weights else {}}
        if save_optimizer and self.optimizer is not None:
            if self._accelerator.distributed_type == DistributedType.DEEPSPEED:
                warnings.warn(
                    "DeepSpeed shards the optimizer state across processes, so save_checkpoint saves the model "
                    "weights only; use save_training_state(dir) to keep the optimizer state.",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                checkpoint["optimizer_state_dict"] = self.optimizer.state_dict()
        if save_scheduler and self.scheduler is not None:
            checkpoint["scheduler_state_dict"] = self.scheduler.state_dict()
        checkpoint.update(checkpoint_kwargs or {})
        writer = self._accelerator.is_local_main_process if save_per_node else self._accelerator.is_main_process
        if writer and has_weights:
            atomic_save(checkpoint, save_path)
        self._accelerator.wait_for_everyone()

    def load_checkpoint(
        self, checkpoint_path: str | os.PathLike[str], load_optimizer: bool = True, load_scheduler: bool = True
    ) -> dict[str, Any]:
        """Load a file written by :meth:`save_checkpoint` and return its whole content.

        Only tensors and plain data are unpickled; anything else is refused.
        """
        checkpoint = check_checkpoint(load_file(checkpoint_path, "checkpoint"), checkpoint_path)
        if load_optimizer and "optimizer_state_dict" in checkpoint and self.optimizer is None:
            raise ValueError(
                "The checkpoint holds an optimizer state but this Trainer has no optimizer: create the Trainer "
                "with the optimizer, or call load_checkpoint(..., load_optimizer=False)."
            )
        if load_scheduler and "scheduler_state_dict" in checkpoint and self.scheduler is None:
            raise ValueError(
                "The checkpoint holds a scheduler state but this Trainer has no scheduler (one is created by "
                "train(create_scheduler_fn=...)); call load_checkpoint(..., load_scheduler=False)."
            )
        if load_optimizer and "optimizer_state_dict" in checkpoint:
            check_optimizer_state(self.optimizer, checkpoint["optimizer_state_dict"], checkpoint_path)
        model = self._accelerator.unwrap_model(self.model, keep_torch_compile=False)
        load_model_state(model, checkpoint["model_state_dict"], checkpoint_path)
        if load_optimizer and "optimizer_state_dict" in checkpoint:
            self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        if load_scheduler and "scheduler_state_dict" in checkpoint:
            self.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
        return checkpoint

    def save_training_state(
        self, output_dir: str | os.PathLike[str], checkpoint_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Save everything needed to continue this run with ``train(resume_from=output_dir)``.

        Accelerate writes the model, optimizer, RNG and gradient-scaler states (sharded
        where the model is); pa adds the epoch and step, run history, scheduler, loss
        tracker and callback states. The folder appears complete or not at all. Call it on
        every process. States saved at an optimizer update (``on_train_update_end``) or at an
        epoch's end (``on_training_run_epoch_end``) resume exactly.
        """
        final_dir = Path(output_dir)
        tmp_dir = final_dir.with_name(final_dir.name + ".incomplete")
        if self._accelerator.is_main_process and tmp_dir.exists():
            shutil.rmtree(tmp_dir)  # left by a save that was killed
        self._accelerator.wait_for_everyone()
        self._accelerator.save_state(str(tmp_dir))
        position = self._position.state_dict()
        if self._accelerator.num_processes > 1:
            # The epoch's partial loss, summed over processes; restored on the main process only,
            # so the epoch-end sum over processes counts it once.
            partial = torch.stack(
                [
                    position["loss_total"].to(self.device),
                    torch.tensor(float(position["loss_count"]), device=self.device),
                ]
            )
            total, count = self._accelerator.reduce(partial, reduction="sum").tolist()
            position["loss_total"], position["loss_count"] = torch.tensor(total), int(count)
        metadata = {
            "format": 1,
            "epoch": self.run_history.current_epoch,
            "first_epoch": self._first_epoch,
            "position": position,
            "run_history": self.run_history.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "callbacks": self.callback_handler.state_dict(),
            "checkpoint_kwargs": checkpoint_kwargs or {},
            "files": list_state_files(tmp_dir),  # so that a missing file is named when loading
        }
        if self._accelerator.is_main_process:
            atomic_save(metadata, tmp_dir / TRAINER_STATE_FILE)
        self._accelerator.wait_for_everyone()
        if self._accelerator.is_main_process:
            replace_directory(tmp_dir, final_dir)
        self._accelerator.wait_for_everyone()

    def load_training_state(self, input_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Restore a state written by :meth:`save_training_state`; returns pa's metadata.

        ``train(resume_from=...)`` calls this after preparing the run; call it yourself only
        on a trainer whose model and optimizer are prepared (inside a run).
        """
        input_dir = check_training_state_dir("input_dir", input_dir)
        metadata = read_trainer_state(input_dir)
        check_training_state_files(input_dir, metadata, optimizer=self.optimizer)
        self._accelerator.load_state(str(input_dir))
        self.run_history.load_state_dict(metadata["run_history"])
        if metadata["scheduler"] is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(metadata["scheduler"])
        self.callback_handler.load_state_dict(metadata["callbacks"])
        self._position = _RunPosition.from_state_dict(metadata["position"], device=self.device)
        # The resumed run ends where the interrupted one would have: num_epochs counted from the
        # epoch that run started with (which may be after 1 when it kept an earlier run's history).
        self._first_epoch = metadata.get("first_epoch", 1)
        if not self._accelerator.is_main_process:  # the saved partial loss is the sum over processes
            self._position.loss_total, self._position.loss_count = 0, 0
        if self._position.epoch_done:  # saved at an epoch's end: continue with the next epoch
            self.run_history._increment_epoch()
            self._position = _RunPosition(num_updates=self._position.num_updates)
        return metadata


class TrainerWithTimmScheduler(Trainer):
    """A Trainer for timm-style schedulers: ``step_update(num_updates)`` after every optimizer
    update and ``step(epoch)`` at the end of every training epoch."""

    def scheduler_step(self) -> None:
        self.scheduler.step_update(num_updates=self._position.num_updates)

    def train_epoch_end(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step(self.run_history.current_epoch)


# ----------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------


class _RunPosition:
    """Where the run is: what a training state records so a resumed run continues exactly."""

    def __init__(self, num_updates: int = 0) -> None:
        self.num_updates = num_updates  # optimizer updates since the run started
        self.batches_done = 0  # batches of the current epoch finished at the last update
        self.loss_total: Any = 0  # the epoch's loss tracker at the last update
        self.loss_count = 0
        self.train_done = False
        self.epoch_done = False

    def record_update(self, batches_done: int, tracker: LossTracker) -> None:
        self.batches_done = batches_done
        self.loss_total, self.loss_count = tracker.total_loss, tracker.running_count

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_updates": self.num_updates,
            "batches_done": 0 if self.train_done else self.batches_done,
            "loss_total": torch.as_tensor(self.loss_total, dtype=torch.float32).cpu(),
            "loss_count": self.loss_count,
            "epoch_done": self.epoch_done,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device) -> _RunPosition:
        position = cls(num_updates=state["num_updates"])
        position.batches_done = state["batches_done"]
        position.loss_total = state["loss_total"].to(device)
        position.loss_count = state["loss_count"]
        position.epoch_done = state["epoch_done"]
        return position


def _available_callbacks(callbacks: Iterable[Any]) -> list[Any]:
    """The callbacks to use; with pa-core alone, the default names are skipped with a hint."""
    if callbacks is not DEFAULT_CALLBACKS:
        return list(callbacks)
    installed = _plugins.entries(_plugins.CALLBACKS_GROUP)
    available = [name for name in callbacks if name in installed]
    if len(available) < len(callbacks):
        warnings.warn(
            "pa-callbacks is not installed, so the Trainer trains without progress output or metric logging. "
            "Install it with `pip install pa-callbacks`, or pass callbacks=() to silence this message.",
            UserWarning,
            stacklevel=3,
        )
    return available


def _forget_single_process_state() -> None:
    """Drop an Accelerate state that counts one process while several were launched.

    Under torchrun on a machine without an accelerator, a ``PartialState()`` made before the
    Trainer (by the user's script, a test fixture or a library) counts one process, and every
    later Accelerator would silently reuse it: each process would train alone on all the data.
    Dropping it is safe: the state made next reuses the process group it may have started.
    """
    from accelerate.state import AcceleratorState, PartialState

    if PartialState._shared_state.get("num_processes") == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def _accelerator_device_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool(
        torch.cuda.is_available()
        or (xpu is not None and xpu.is_available())
        or (mps is not None and mps.is_available())
    )


def _limit_batches_from_env() -> int | None:
    value = os.environ.get(LIMIT_BATCHES_ENV, "").strip()
    if value.lower() in ("", "none"):
        return None
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{LIMIT_BATCHES_ENV} must be a positive integer or 'none', got {value!r}.")
    return limit


def default_num_workers(dataset: Any) -> int:
    """DataLoader worker processes for ``dataset``: none for data already in memory.

    A ``TensorDataset``, list or tuple is indexed in microseconds, so worker processes
    only add start-up and inter-process cost. Other datasets get one worker per CPU
    available to each device (at most 8).
    """
    if dataset is None or isinstance(dataset, (TensorDataset, list, tuple)):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    devices = max(torch.cuda.device_count(), 1)
    return min(max(cpus // devices, 1), 8)


def _merge_dl_kwargs(defaults: dict[str, Any], overrides: dict[str, Any] | None, dataset: Any) -> dict[str, Any]:
    kwargs = {**defaults, **(overrides or {})}
    if "sampler" in kwargs or "batch_sampler" in kwargs or isinstance(dataset, IterableDataset):
        kwargs.pop("shuffle", None)
    if "batch_sampler" in kwargs:
        for key in ("batch_size", "drop_last"):
            kwargs.pop(key, None)
    if not kwargs.get("num_workers"):
        kwargs.pop("persistent_workers", None)
    return kwargs


def _inputs_and_targets(batch: Any, method: str) -> tuple[Any, Any]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    found = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else "")
    keys = f" with keys {sorted(batch)}" if isinstance(batch, dict) else ""
    raise TypeError(
        f"The default Trainer.{method} expects each batch to be (inputs, targets); the data loader yielded "
        f"{found}{keys}. Override Trainer.{method} to unpack your batches (see the README, 'Customising the loop')."
    )


def _call_loss_func(loss_func: Any, model_outputs: Any, targets: Any, method: str) -> torch.Tensor:
    if loss_func is None:
        raise ValueError(
            f"loss_func is None, so the default Trainer.{method} cannot compute a loss. Pass a loss_func, or "
            f"override Trainer.{method} to take the loss from your model's outputs."
        )
    try:
        return loss_func(model_outputs, targets)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(
                f"(pa: loss_func(model_outputs, targets) failed in Trainer.{method}; model_outputs: "
                f"{_describe(model_outputs)}, targets: {_describe(targets)}. Check the model's output and the "
                f"loss function agree, or override Trainer.{method}.)"
            )
        raise


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _true_loss(loss: torch.Tensor, batch_output: dict[str, Any], ga: int) -> torch.Tensor:
    # A loss normalised over the whole accumulation window is ~1/ga of the batch's own mean.
    return loss * ga if ga > 1 and "num_items_in_batch" in batch_output else loss


def _strip_compile_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    prefix = "_orig_mod."
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}
