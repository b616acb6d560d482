"""The :class:`MLflowCallback`: an MLflow run through Accelerate's ``MLflowTracker``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from accelerate.tracking import MLflowTracker

from pa_tracking._tracker import TrackerCallback, check_tracker_installed

__all__ = ["MLflowCallback"]

#: The experiment runs go to when neither ``experiment_name`` nor ``MLFLOW_EXPERIMENT_NAME`` names one.
DEFAULT_EXPERIMENT = "Default"


class MLflowCallback(TrackerCallback):
    """Log a pa Trainer's runs to MLflow (catalogue name ``mlflow``).

    Everything :class:`~pa_tracking.TrackerCallback` describes goes to one MLflow run per
    training run: the run config as the run's parameters, metrics with the optimizer update as
    their step. The run ends ``FINISHED``, or ``FAILED`` when ``train()`` raises (``KILLED`` when
    the run was preempted or interrupted, so it can be resumed). A run resumed from a training
    state continues the same MLflow run, and skips the points that run already holds, so none
    is logged twice. ``evaluate()`` after ``train()`` logs its metrics into the training run.

    MLflow's own environment applies: ``MLFLOW_TRACKING_URI`` says where runs are stored,
    ``MLFLOW_EXPERIMENT_NAME`` which experiment they join, ``MLFLOW_RUN_ID`` a run to log
    into; the arguments below win over it. If an MLflow run is active when training starts
    (``with mlflow.start_run(): trainer.train(...)``) the callback logs into it and leaves it
    open. MLflow 3.17 and later refuse a plain folder as the tracking store: use a database,
    such as ``sqlite:///mlflow.db``, or a tracking server.

    Needs ``pip install "pa-tracking[mlflow]"``.

    :param experiment_name: the experiment to log to (created if missing); else
        ``MLFLOW_EXPERIMENT_NAME``, else MLflow's ``Default`` experiment.
    :param tracking_uri: where MLflow stores runs, e.g. ``sqlite:///mlflow.db`` or
        ``http://mlflow:5000``; given, it is set with ``mlflow.set_tracking_uri`` when training
        starts (for the whole process, as MLflow does); else ``MLFLOW_TRACKING_URI``.
    :param run_name: the run's name (MLflow makes one up by default).
    :param tags: tags for the run.
    :param description: the run's description.
    :param config: hyperparameters to log with the run config.
    :param log_every_n_updates: optimizer updates between two logs of the running loss and
        learning rates; None: at epoch ends only.
    :param log_learning_rates: log each parameter group's learning rate.
    :param tracker_kwargs: further ``MLflowTracker`` arguments (``logging_dir`` for the
        artifact location of a new experiment, ``nested_run``).
    """

    def __init__(
        self,
        experiment_name: str | None = None,
        *,
        tracking_uri: str | os.PathLike[str] | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        config: Mapping[str, Any] | None = None,
        log_every_n_updates: int | None = 50,
        log_learning_rates: bool = True,
        **tracker_kwargs: Any,
    ) -> None:
        check_tracker_installed("mlflow", type(self).__name__)
        super().__init__(
            "mlflow", config=config, log_every_n_updates=log_every_n_updates, log_learning_rates=log_learning_rates
        )
        self.experiment_name = experiment_name
        self.tracking_uri = os.fspath(tracking_uri) if tracking_uri is not None else None
        self.run_name = run_name
        self.tags = dict(tags) if tags is not None else None
        self.description = description
        self.tracker_kwargs = tracker_kwargs
        self._owns_run = False

    @property
    def run_id(self) -> str | None:
        """The id of the current (or last) MLflow run, once training has started."""
        return self._run["run_id"] if self._run else None

    def _create_tracker(self, resuming: bool) -> MLflowTracker:
        import mlflow

        if self.tracking_uri is not None:
            mlflow.set_tracking_uri(self.tracking_uri)
        tracker = MLflowTracker(
            run_name=self.run_name, tags=self.tags, description=self.description, **self.tracker_kwargs
        )
        # MLflowTracker prefers MLFLOW_EXPERIMENT_NAME and MLFLOW_RUN_ID to its arguments; here the arguments win.
        tracker.experiment_name = self.experiment_name or tracker.experiment_name or DEFAULT_EXPERIMENT
        if self._run is not None:
            tracker.run_id = self._run["run_id"]
        return tracker

    def _start_tracker(self, resuming: bool) -> None:
        import mlflow

        active = mlflow.active_run()
        if active is not None and self._run is None:  # the user's own run: log into it, leave it open
            self.tracker.active_run, self._owns_run = active, False
        else:
            self.tracker.start()
            self._owns_run = True
        run_id = self.tracker.tracker.info.run_id
        self._run = {"run_id": run_id}
        if resuming:  # the points the interrupted run logged, also after its state was saved
            client = mlflow.MlflowClient()
            self._skip_until = {
                key: max(point.step for point in client.get_metric_history(run_id, key))
                for key in client.get_run(run_id).data.metrics
            }

    def _finish_tracker(self, exception: BaseException | None) -> None:
        import mlflow

        if not self._owns_run:
            return
        if exception is None:
            self.tracker.finish()
        elif isinstance(exception, (KeyboardInterrupt, SystemExit)):  # pa_core.TrainingPreempted is a SystemExit
            mlflow.end_run(status="KILLED")
        else:
            mlflow.end_run(status="FAILED")
