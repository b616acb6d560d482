"""Every hook a pa Trainer calls: the reference for callback and plugin authors.

A callback or plugin is any object with methods named after these hooks, marked with
:data:`pa_core.hookimpl`. Each method takes only the arguments it needs, in any order, so
hooks can gain arguments without breaking old plugins::

    from pa_core import hookimpl

    class PrintLoss:
        @hookimpl
        def on_train_epoch_end(self, trainer):
            trainer.print(trainer.run_history.get_latest_metric("train_loss_epoch"))

Upstream-style callbacks (subclasses of :class:`pa_core.TrainerCallback` with plain
``on_*(self, trainer, **kwargs)`` methods) receive the arguments as keywords instead: all of
them with ``**kwargs``, otherwise only those the method names (so a method written for
pytorch-accelerated never receives an argument pa added, such as ``error``).

Every callback must implement at least one hook; an object with hook-named methods that are
not marked (and that is not a ``TrainerCallback``) is refused when it is added, since pa would
never call them.

Callbacks are called in the order the user listed them. Events return nothing; a callback
ends training early by raising :class:`pa_core.StopTrainingError`. Hooks marked *hot* run
once per batch: keep them cheap and avoid reading tensors back to the host (``.item()``)
there, which stalls the device.

What a hook can use is public: ``trainer.run_state`` (:class:`pa_core.RunState`: the run's data
loaders, loss trackers and position), ``trainer.run_config``, ``trainer.run_history``,
``trainer.accelerator``, ``trainer.num_processes``, ``trainer.is_world_process_zero``,
``trainer.print``, ``trainer.gather``, ``trainer.run_eval_epoch`` (evaluate now, another model
or loader if need be) and ``trainer.prepare_dataloader`` (a loader of the plugin's own, split
between processes as pa's are). pa's own callbacks use nothing else. A callback that raises
``StopTrainingError`` does so on every process (at an epoch's end, one process is enough).

**Several processes.** Every process runs the same number of training and evaluation steps, and
every step's hooks fire on every process, so a collective call made from a hook on every process
(``trainer.gather``, a metric's sync, ``torch.distributed.all_reduce``) always completes. At the
end of an epoch a process whose data has run out takes its remaining steps with an *empty batch*:
the structure of its batches with zero rows. On such a step ``batch_output["batch_size"]`` is 0,
``batch_output["loss"]`` is 0 and ``model_outputs`` has zero rows; it adds nothing to the losses
and its gradients are zero. Count samples with ``batch_size``, never with steps, and skip
per-sample updates on empty steps (:func:`pa_core.data.is_empty_step`), but still make collective
calls there. This holds for map-style datasets and for iterable ones (which pa splits between
processes), with or without DataLoader workers; on one process there are no empty steps.

Besides these, ``trainer.callback_handler.call_event("on_my_event", trainer=trainer, ...)``
calls any custom event on the callbacks that define it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pa_core.trainer import Trainer

PROJECT_NAME = "pa"
#: Marks a function as a hook specification; every pa hook below is declared with it.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a callback or plugin method as the implementation of the hook it is named after
#: (``@hookimpl``, or ``@hookimpl(tryfirst=True)`` to run before the other callbacks).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# ---------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------


@hookspec
def on_init_end(trainer: Trainer) -> None:
    """Called at the end of ``Trainer.__init__``.

    The Accelerator exists, so ``trainer.device`` and ``trainer.print`` work.
    """


@hookspec
def pa_configure_accelerator(trainer: Trainer, accelerator_kwargs: dict[str, Any]) -> None:
    """Called before each Accelerator is created; edit ``accelerator_kwargs`` in place.

    The Trainer creates an Accelerator at construction and a fresh one for every
    ``train()`` and ``evaluate()`` call. ``accelerator_kwargs`` is the dict of keyword
    arguments about to be passed to ``accelerate.Accelerator``; integrations use this
    hook to add, for example, a ``deepspeed_plugin``. Fires before ``on_init_end``.
    """


# ---------------------------------------------------------------------------
# Training run
# ---------------------------------------------------------------------------


@hookspec
def on_training_run_start(trainer: Trainer) -> None:
    """Called at the start of ``train()``, after the model, optimizer, data loaders and
    scheduler are prepared and any ``resume_from`` state is restored, before the first epoch.

    ``trainer.run_config`` is available from here on.
    """


@hookspec
def on_train_epoch_start(trainer: Trainer) -> None:
    """Called at the start of each training epoch, after ``model.train()``."""


@hookspec
def on_train_step_start(trainer: Trainer) -> None:
    """Called before each training batch's forward pass. *Hot.*"""


@hookspec
def on_train_step_end(trainer: Trainer, batch: Any, batch_output: dict[str, Any], step: int) -> None:
    """Called after a training batch's loss is computed and before ``backward``. *Hot.*

    Fires on every process at every step, an empty batch's included (see the module docs).

    :param batch: the batch as yielded by the (prepared) train data loader, or an empty batch.
    :param batch_output: the dict returned by ``calculate_train_batch_loss``: ``loss``
        (unscaled by gradient accumulation, a tensor on the device), ``model_outputs``,
        ``batch_size`` and anything else the method returned.
    :param step: the step's index within the epoch, starting at 0 (the same on every process).
    """


@hookspec
def on_train_update_end(trainer: Trainer, step: int, num_updates: int) -> None:
    """Called after each optimizer update (after the scheduler step and ``zero_grad``). *Hot.*

    With gradient accumulation this fires once every ``gradient_accumulation_steps``
    batches (and after the last batch of an epoch). A training state saved here resumes
    exactly.

    :param step: the index within the epoch of the batch that completed the update.
    :param num_updates: optimizer updates performed so far in this training run.
    """


@hookspec
def on_train_epoch_end(trainer: Trainer) -> None:
    """Called after each training epoch; ``train_loss_epoch`` is already in the run history."""


@hookspec
def on_eval_epoch_start(trainer: Trainer, is_intermediate: bool) -> None:
    """Called at the start of each evaluation epoch, after ``model.eval()``.

    :param is_intermediate: True when the evaluation was started in the middle of a
        training epoch (for example by a step-based evaluation callback).
    """


@hookspec
def on_eval_step_start(trainer: Trainer) -> None:
    """Called before each evaluation batch's forward pass. *Hot.*"""


@hookspec
def on_eval_step_end(trainer: Trainer, batch: Any, batch_output: dict[str, Any]) -> None:
    """Called after each evaluation batch's loss is computed. *Hot.*

    Every sample of the evaluation set is in exactly one non-empty step of one process, on any
    number of processes, for map-style and iterable datasets: ``trainer.gather(t,
    padding_value=...)`` called here on every step returns each sample's rows once, process 0's
    first, which for an unshuffled map-style dataset is the dataset's order. A process with no
    data left gets an empty batch (``batch_output["batch_size"] == 0``).

    :param batch: the batch as yielded by the eval data loader, or an empty batch.
    :param batch_output: the dict returned by ``calculate_eval_batch_loss`` (for an empty
        batch, with ``loss`` and ``batch_size`` 0).
    """


@hookspec
def on_eval_epoch_end(trainer: Trainer, is_intermediate: bool) -> None:
    """Called after each evaluation epoch; ``eval_loss_epoch`` (or
    ``intermediate_eval_loss`` / ``evaluation_loss``) is already in the run history.

    :param is_intermediate: see :func:`on_eval_epoch_start`.
    """


@hookspec
def on_training_run_epoch_end(trainer: Trainer) -> None:
    """Called after each epoch's training and evaluation, before the epoch counter advances.

    This is where callbacks compare metrics across epochs (early stopping, saving the
    best model).
    """


@hookspec
def on_training_run_end(trainer: Trainer) -> None:
    """Called at the end of ``train()``, also when a ``StopTrainingError`` ended it early."""


# ---------------------------------------------------------------------------
# Evaluation run
# ---------------------------------------------------------------------------


@hookspec
def on_evaluation_run_start(trainer: Trainer) -> None:
    """Called at the start of ``evaluate()``, after the model and data loader are prepared."""


@hookspec
def on_evaluation_run_end(trainer: Trainer) -> None:
    """Called at the end of ``evaluate()``; ``evaluation_loss`` is in the run history."""


# ---------------------------------------------------------------------------
# Failure
# ---------------------------------------------------------------------------


@hookspec
def on_stop_training_error(trainer: Trainer, error: BaseException) -> None:
    """Called when a :class:`pa_core.StopTrainingError` ended training or evaluation.

    :param error: the raised error; its message has already been printed.
    """


@hookspec
def on_preemption(trainer: Trainer, signal_number: int, state_dir: str | None) -> None:
    """Called when a preemption signal (``trainer.preemption_signals``) stopped ``train()`` or
    ``evaluate()``.

    The run stops at the first optimizer update, evaluation step or epoch end after the signal,
    at the same place on every process (even when only one received it). This fires on every
    process, after the training state was saved to ``state_dir`` (None when
    ``trainer.preemption_save_dir`` is not set, and in ``evaluate()``) and before
    :class:`pa_core.TrainingPreempted` is raised. Save anything else that must survive here.

    :param signal_number: the signal received (e.g. ``signal.SIGTERM``, ``signal.SIGINT``,
        ``signal.SIGUSR1``).
    :param state_dir: where the training state was saved, or None.
    """


@hookspec
def on_exception(trainer: Trainer, exception: BaseException) -> None:
    """Called when ``train()`` or ``evaluate()`` is about to propagate an exception.

    Lets integrations clean up (close files, mark an experiment-tracker run as failed).
    The exception is re-raised after every callback has run; an exception raised here is
    reported but does not replace the original one.
    """


#: The names of every hook above, in the order a training run meets them.
EVENT_NAMES: tuple[str, ...] = (
    "on_init_end",
    "on_training_run_start",
    "on_train_epoch_start",
    "on_train_step_start",
    "on_train_step_end",
    "on_train_update_end",
    "on_train_epoch_end",
    "on_eval_epoch_start",
    "on_eval_step_start",
    "on_eval_step_end",
    "on_eval_epoch_end",
    "on_training_run_epoch_end",
    "on_training_run_end",
    "on_evaluation_run_start",
    "on_evaluation_run_end",
    "on_stop_training_error",
    "on_preemption",
    "on_exception",
)
HOOK_NAMES: tuple[str, ...] = (*EVENT_NAMES, "pa_configure_accelerator")
