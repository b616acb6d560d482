"""The :class:`TrackerCallback`: a pa Trainer's run history, logged through an Accelerate tracker."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, get_available_trackers
from accelerate.utils import LoggerType

from pa_core import hookimpl

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["EPOCH_KEY", "STEP_LOSS_KEY", "TRACKER_EXTRAS", "TrackerCallback"]

#: The running training loss, logged every ``log_every_n_updates`` optimizer updates.
STEP_LOSS_KEY = "train_loss_step"
#: The number of the epoch that just ended, logged at each epoch's end.
EPOCH_KEY = "epoch"
#: The pa-tracking extra that installs the library of each tracker Accelerate supports.
TRACKER_EXTRAS = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "comet_ml": "comet-ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}


def check_tracker_installed(name: str, owner: str) -> None:
    """Raise ``ImportError`` saying which extra to install when tracker ``name``'s library is missing."""
    builtin = {str(kind) for kind in LoggerType}
    if name in builtin and name not in {str(kind) for kind in get_available_trackers()}:
        extra = TRACKER_EXTRAS.get(name, name)
        raise ImportError(
            f"{owner} logs with {name}, whose library is not installed. Install it with "
            f'`pip install "pa-tracking[{extra}]"`.'
        )


class TrackerCallback:
    """Log a pa Trainer's runs through any Accelerate tracker.

    ``tracker`` is the name of a tracker Accelerate supports (``"tensorboard"``, ``"mlflow"``,
    ``"wandb"``, ``"comet_ml"``, ``"aim"``, ``"clearml"``, ``"dvclive"``, ``"swanlab"``,
    ``"trackio"``, or one registered with ``accelerate.tracking.register_tracker_class``), or an
    instance of your own ``accelerate.tracking.GeneralTracker``. A tracker named here is created
    when ``train()`` starts, as ``Accelerator.init_trackers`` creates it: with ``project_name``
    first, then ``logging_dir`` if the tracker needs a folder, then ``init_kwargs``.

    Only the world main process creates, starts and writes to the tracker. It logs:

    - when ``train()`` starts: ``trainer.run_config.to_dict()`` updated with ``config``, as the
      run's hyperparameters (nested values flattened to ``parent.child`` names);
    - every ``log_every_n_updates`` optimizer updates: ``train_loss_step``, the mean training
      loss over every process since the previous log (the only time the loss is read from the
      device), the learning rate of each parameter group (``lr``, or ``lr_group_<i>``), and the
      run-history metrics recorded since the previous log (e.g. the ``throughput`` callback's);
    - at each epoch's end: every run-history metric with a new value (``train_loss_epoch``,
      ``eval_loss_epoch``, and whatever other callbacks record) and ``epoch``;
    - at the end of ``evaluate()``: its metrics (``evaluation_loss``, ...).

    The step of every point is the number of optimizer updates done in the training run. The
    tracker is finished when ``train()`` or ``evaluate()`` ends, also when they raise. Its state
    (see :meth:`state_dict`) is saved with pa's training states, so ``train(resume_from=...)``
    continues logging from the update the state was saved at (TensorBoard and MLflow also
    continue the same run, without duplicated points; see their callbacks).

    Each callback class can be added to a Trainer once: to log to two trackers through this
    class, subclass it for one of them (``class AimLogger(TrackerCallback): ...``).

    :param tracker: a tracker name, or a ``GeneralTracker`` instance.
    :param project_name: the first argument of a named tracker: the project for W&B, Comet,
        ClearML, SwanLab and Trackio, the experiment for MLflow, the run folder's name for
        TensorBoard and Aim.
    :param logging_dir: the folder of trackers that need one (TensorBoard, Aim).
    :param config: hyperparameters to log with the run config; they win over run-config
        values of the same name.
    :param log_every_n_updates: optimizer updates between two step logs; None logs at epoch
        ends only.
    :param log_learning_rates: log each parameter group's learning rate: every
        ``log_every_n_updates`` updates, or at each epoch's end when that is None.
    :param init_kwargs: further keyword arguments for a named tracker's class.
    """

    def __init__(
        self,
        tracker: str | GeneralTracker,
        *,
        project_name: str = "pa",
        logging_dir: str = "runs",
        config: Mapping[str, Any] | None = None,
        log_every_n_updates: int | None = 50,
        log_learning_rates: bool = True,
        **init_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if isinstance(tracker, str):
            if tracker not in LOGGER_TYPE_TO_CLASS:
                raise ValueError(
                    f"{owner}(tracker={tracker!r}): Accelerate has no tracker of that name. Use one of "
                    f"{sorted(LOGGER_TYPE_TO_CLASS)}, register your tracker class with "
                    "accelerate.tracking.register_tracker_class, or pass an instance of it."
                )
            check_tracker_installed(tracker, owner)
        elif not isinstance(tracker, GeneralTracker):
            raise TypeError(
                f"{owner}(tracker=...) takes a tracker name or an accelerate.tracking.GeneralTracker instance, "
                f"got {tracker!r}."
            )
        if log_every_n_updates is not None and (
            isinstance(log_every_n_updates, bool) or not isinstance(log_every_n_updates, int) or log_every_n_updates < 1
        ):
            raise ValueError(
                f"{owner}(log_every_n_updates={log_every_n_updates!r}): give a positive number of optimizer "
                "updates, or None to log at epoch ends only."
            )
        self.tracker_name_or_instance = tracker
        self.project_name = project_name
        self.logging_dir = logging_dir
        self.init_kwargs = init_kwargs
        self.config = dict(config or {})
        self.log_every_n_updates = log_every_n_updates
        self.log_learning_rates = log_learning_rates

        #: The open tracker, on the world main process while a run is logged; None otherwise.
        self.tracker: GeneralTracker | None = None
        self._run: dict[str, Any] | None = None  # what identifies the tracker's run, for resuming (subclasses)
        self._config_logged = False
        self._logged_counts: dict[str, int] = {}  # values of each run-history metric already logged
        self._num_updates = 0
        self._skip_until: dict[str, int] = {}  # metric -> the last step the resumed tracker run already holds
        self._restored = False
        self._loss_mark: tuple[Any, int] = (0, 0)

    # -- what a subclass changes ------------------------------------------------------------

    def _create_tracker(self, resuming: bool) -> GeneralTracker:
        """The tracker for a run; ``resuming`` when it continues a run from a training state."""
        spec = self.tracker_name_or_instance
        if isinstance(spec, GeneralTracker):
            return spec
        tracker_class = LOGGER_TYPE_TO_CLASS[spec]
        if tracker_class.requires_logging_directory:
            return tracker_class(self.project_name, self.logging_dir, **self.init_kwargs)
        return tracker_class(self.project_name, **self.init_kwargs)

    def _start_tracker(self, resuming: bool) -> None:
        """Start ``self.tracker`` and note in ``self._run`` what a resumed run needs to find it again."""
        self.tracker.start()

    def _finish_tracker(self, exception: BaseException | None) -> None:
        """Finish ``self.tracker``; ``exception`` is what ended the run, or None."""
        self.tracker.finish()

    # -- training run -----------------------------------------------------------------------

    @hookimpl
    def on_training_run_start(self, trainer: Trainer) -> None:
        """Open the tracker's run (a new one, or the saved one when resuming) and log the config."""
        resuming, self._restored = self._restored, False
        # Values already in the run history (a resumed run, or reset_run_history=False) were logged
        # by an earlier run, or belong to one: log only what this run adds.
        self._logged_counts = _value_counts(trainer.run_history)
        self._skip_until = {}
        if resuming:  # continue at the update the training state was saved at
            self._num_updates = trainer.run_state.num_updates
        else:  # a new run: forget the previous one
            self._run, self._config_logged, self._num_updates = None, False, 0
        if not trainer.is_world_process_zero:
            return
        self._open(resuming)
        if not self._config_logged:
            self.tracker.store_init_configuration(flatten_config({**trainer.run_config.to_dict(), **self.config}))
            self._config_logged = True

    @hookimpl
    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Log values written after this callback ran at the previous epoch's end; mark the loss window's start."""
        if self.tracker is not None:
            self._log(self._take_new_values(trainer), self._num_updates)
        loss_tracker = trainer.loss_tracker
        self._loss_mark = (loss_tracker.total_loss, loss_tracker.running_count)

    @hookimpl(trylast=True)  # after the callbacks that record metrics at this update
    def on_train_update_end(self, trainer: Trainer, num_updates: int) -> None:
        """Every ``log_every_n_updates`` updates: the running loss, learning rates and new run-history values."""
        self._num_updates = num_updates
        every = self.log_every_n_updates
        if every is None or num_updates % every:
            return
        values: dict[str, Any] = {}
        loss = self._running_loss(trainer)  # on every process: the loss is averaged over them
        if loss is not None:
            values[STEP_LOSS_KEY] = loss
        if self.tracker is not None:
            if self.log_learning_rates:
                values.update(learning_rates(trainer))
            self._log({**values, **self._take_new_values(trainer)}, num_updates)

    @hookimpl
    def on_eval_epoch_start(self, trainer: Trainer) -> None:
        """Forget metrics removed from the run history (as intermediate evaluations remove theirs), so
        their next values count as new."""
        names = trainer.run_history.get_metric_names()
        self._logged_counts = {name: count for name, count in self._logged_counts.items() if name in names}

    @hookimpl
    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool) -> None:
        """After an intermediate evaluation, log its metrics (removed from the history right after) at this update."""
        if is_intermediate and self.tracker is not None:
            self._log(self._take_new_values(trainer), trainer.run_state.num_updates)

    @hookimpl
    def on_training_run_epoch_end(self, trainer: Trainer) -> None:
        """Log every run-history metric with a new value, and the epoch."""
        if self.tracker is None:
            return
        values = self._take_new_values(trainer)
        values[EPOCH_KEY] = trainer.run_history.current_epoch
        if self.log_learning_rates and self.log_every_n_updates is None:
            values.update(learning_rates(trainer))
        self._log(values, self._num_updates)

    @hookimpl
    def on_training_run_end(self, trainer: Trainer) -> None:
        """Log what is left and finish the tracker."""
        self._close(trainer, exception=None)

    # -- evaluation run ---------------------------------------------------------------------

    @hookimpl
    def on_evaluation_run_start(self, trainer: Trainer) -> None:
        """Open a run for ``evaluate()``: the one this callback logged the last training run to, if any."""
        self._logged_counts = _value_counts(trainer.run_history)
        if not trainer.is_world_process_zero:
            return
        self._open(resuming=False)
        if not self._config_logged and self.config:
            self.tracker.store_init_configuration(flatten_config(self.config))
            self._config_logged = True

    @hookimpl
    def on_evaluation_run_end(self, trainer: Trainer) -> None:
        """Log the evaluation metrics and finish the tracker."""
        self._close(trainer, exception=None)

    # -- failure ----------------------------------------------------------------------------

    @hookimpl
    def on_exception(self, trainer: Trainer, exception: BaseException) -> None:
        """Log the metrics recorded so far, then finish the tracker's run as failed where the tracker can."""
        self._close(trainer, exception=exception)

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What identifies the tracker's run (a folder, a run id), and whether its config was logged.

        pa saves this with every training state; :meth:`load_state_dict` restores it.
        """
        return {"run": self._run, "config_logged": self._config_logged}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved run when ``train(resume_from=...)`` restores a training state."""
        self._run = state.get("run")
        self._config_logged = bool(state.get("config_logged"))
        self._restored = True

    # -- internals --------------------------------------------------------------------------

    def _open(self, resuming: bool) -> None:
        self.tracker = self._create_tracker(resuming)
        try:
            self._start_tracker(resuming)
        except BaseException:
            self.tracker = None  # not started: nothing to log to or finish
            raise

    def _close(self, trainer: Trainer, exception: BaseException | None) -> None:
        if self.tracker is None:
            return
        try:
            self._log(self._take_new_values(trainer), self._num_updates)
        finally:
            try:
                self._finish_tracker(exception)
            finally:
                self.tracker = None

    def _take_new_values(self, trainer: Trainer) -> dict[str, Any]:
        """The latest value of every run-history metric that has values this tracker has not seen."""
        history = trainer.run_history
        new_values: dict[str, Any] = {}
        for name in sorted(history.get_metric_names()):
            values = history.get_metric_values(name)
            if len(values) > self._logged_counts.get(name, 0):
                new_values[name] = values[-1]
            self._logged_counts[name] = len(values)
        return new_values

    def _log(self, values: Mapping[str, Any], step: int) -> None:
        loggable = {}
        for name, value in values.items():
            number = as_number(value)
            if number is not None and step > self._skip_until.get(name, -1):
                loggable[name] = number
        if loggable:
            self.tracker.log(loggable, step=step)

    def _running_loss(self, trainer: Trainer) -> float | None:
        """The mean training loss over every process since the last log: one read from the device."""
        loss_tracker = trainer.loss_tracker
        total, count = loss_tracker.total_loss, loss_tracker.running_count
        mark_total, mark_count = self._loss_mark
        self._loss_mark = (total, count)
        total, count = total - mark_total, count - mark_count
        if trainer.run_config.num_processes > 1:
            stats = torch.stack(
                [
                    torch.as_tensor(total, dtype=torch.float32, device=trainer.device).reshape(()),
                    torch.as_tensor(count, dtype=torch.float32, device=trainer.device).reshape(()),
                ]
            )
            total, count = trainer.gather(stats.reshape(1, 2)).sum(dim=0).tolist()
        return float(total) / float(count) if count else None


def learning_rates(trainer: Trainer) -> dict[str, float]:
    """The learning rate of each of the optimizer's parameter groups: ``lr``, or ``lr_group_<i>`` for several."""
    groups = trainer.optimizer.param_groups if trainer.optimizer is not None else []
    if len(groups) == 1:
        return {"lr": float(groups[0]["lr"])}
    return {f"lr_group_{index}": float(group["lr"]) for index, group in enumerate(groups)}


def as_number(value: Any) -> int | float | None:
    """A run-history value as a tracker takes it: a number, or None for values that are not one."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real):
        return value if isinstance(value, (int, float)) else float(value)
    return None


def flatten_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``values`` as hyperparameters every tracker accepts: nested mappings flattened to ``parent.child``
    names, numbers, strings, booleans and None kept, anything else written as text."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            flat[name] = value.item()
        else:
            flat[name] = str(value)
    return flat


def _value_counts(history: Any) -> dict[str, int]:
    return {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}
