"""MLflowCallback on real Trainer runs, logging to a real SQLite tracking store read back with MlflowClient."""

from __future__ import annotations

from importlib.metadata import entry_points

import mlflow
import pytest
import torch

from pa_core import Trainer, TrainingPreempted, hookimpl
from pa_core.testing import CountHostSyncs, make_classification_dataset
from pa_tracking import MLflowCallback


def steps(points):
    return [step for step, _ in points]


def values(points):
    return [value for _, value in points]


def runs_of(experiment_name):
    experiment = mlflow.MlflowClient().get_experiment_by_name(experiment_name)
    return mlflow.MlflowClient().search_runs([experiment.experiment_id]) if experiment else []


def test_training_run_is_logged_with_params_and_metric_histories(
    make_trainer, mlflow_uri, experiment, mlflow_metrics, train_data, eval_data
):
    callback = MLflowCallback(
        experiment,
        tracking_uri=mlflow_uri,
        run_name="first",
        tags={"team": "pa"},
        config={"model": "mlp", "lr": 0.1},
        log_every_n_updates=2,
    )
    trainer = make_trainer([callback])
    trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)

    client = mlflow.MlflowClient()
    (run,) = runs_of(experiment)
    assert run.info.run_id == callback.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert run.data.tags["team"] == "pa"
    # The run config and the user's hyperparameters, as parameters (MLflow keeps them as text).
    params = run.data.params
    assert params["num_epochs"] == "3" and params["train_per_device_batch_size"] == "8"
    assert params["num_processes"] == "1" and params["train_dl_kwargs.shuffle"] == "True"
    assert params["model"] == "mlp" and params["lr"] == "0.1"
    # Every epoch's metrics at the update the epoch ended with; the step logs every 2 updates.
    metrics = mlflow_metrics(client, run.info.run_id)
    history = trainer.run_history
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert steps(metrics[name]) == [5, 10, 15]
        assert values(metrics[name]) == pytest.approx(history.get_metric_values(name))
    assert metrics["epoch"] == [(5, 1.0), (10, 2.0), (15, 3.0)]
    assert steps(metrics["train_loss_step"]) == [2, 4, 6, 8, 10, 12, 14]
    assert metrics["lr"] == [(step, pytest.approx(0.1)) for step in (2, 4, 6, 8, 10, 12, 14)]
    assert mlflow.active_run() is None


def test_a_failing_run_is_marked_failed_with_what_it_logged(
    make_trainer, mlflow_uri, experiment, mlflow_metrics, fail_at, train_data, eval_data
):
    callback = MLflowCallback(experiment, tracking_uri=mlflow_uri)
    trainer = make_trainer([callback, fail_at(update=7)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)

    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"
    metrics = mlflow_metrics(mlflow.MlflowClient(), run.info.run_id)
    assert steps(metrics["train_loss_epoch"]) == [5] and steps(metrics["eval_loss_epoch"]) == [5]
    assert mlflow.active_run() is None


def test_a_preempted_run_is_marked_killed(make_trainer, mlflow_uri, experiment, fail_at, train_data):
    preempted = TrainingPreempted(signal_number=15, state_dir=None, epoch=1, num_updates=3)
    trainer = make_trainer([MLflowCallback(experiment, tracking_uri=mlflow_uri), fail_at(update=3, error=preempted)])
    with pytest.raises(TrainingPreempted):
        trainer.train(train_data, num_epochs=1, per_device_batch_size=8)
    (run,) = runs_of(experiment)
    assert run.info.status == "KILLED"


def test_mlflow_environment_is_honoured_and_arguments_win(
    make_trainer, mlflow_uri, experiment, monkeypatch, train_data
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"{experiment}-env")
    make_trainer(["mlflow"]).train(train_data, num_epochs=1, per_device_batch_size=8)  # all from the environment
    make_trainer([MLflowCallback(f"{experiment}-argument")]).train(train_data, num_epochs=1, per_device_batch_size=8)

    (from_env,) = runs_of(f"{experiment}-env")
    (from_argument,) = runs_of(f"{experiment}-argument")
    assert from_env.info.status == from_argument.info.status == "FINISHED"
    assert from_env.data.metrics["train_loss_epoch"] > 0


class SaveStateAtEpochEnd:
    def __init__(self, folder):
        self.folder = folder

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if trainer.run_history.current_epoch == 1:
            trainer.save_training_state(self.folder)


def test_resumed_run_continues_the_same_run_without_duplicated_points(
    make_trainer, mlflow_uri, experiment, mlflow_metrics, fail_at, train_data, eval_data, tmp_path
):
    def train(callbacks, **kwargs):
        trainer = make_trainer(callbacks)
        trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8, **kwargs)
        return trainer

    first = MLflowCallback(experiment, tracking_uri=mlflow_uri, log_every_n_updates=2)
    # Interrupted after update 9: updates 6 and 8 were logged after the state of epoch 1 was saved.
    with pytest.raises(RuntimeError, match="boom"):
        train([first, SaveStateAtEpochEnd(tmp_path / "state"), fail_at(update=9)])
    assert runs_of(experiment)[0].info.status == "FAILED"
    resumed = MLflowCallback(experiment, tracking_uri=mlflow_uri, log_every_n_updates=2)
    train([resumed, SaveStateAtEpochEnd(tmp_path / "state")], resume_from=tmp_path / "state")

    (run,) = runs_of(experiment)
    assert resumed.run_id == first.run_id == run.info.run_id
    assert run.info.status == "FINISHED"
    # The points of an uninterrupted run, each step once (the resumed run reproduces the values exactly).
    uninterrupted = MLflowCallback(f"{experiment}-uninterrupted", tracking_uri=mlflow_uri, log_every_n_updates=2)
    train([uninterrupted])
    client = mlflow.MlflowClient()
    expected, got = mlflow_metrics(client, uninterrupted.run_id), mlflow_metrics(client, run.info.run_id)
    assert sorted(got) == sorted(expected)
    for key, points in expected.items():
        assert steps(got[key]) == steps(points), key
        assert values(got[key]) == pytest.approx(values(points), rel=1e-6), key


def test_a_run_the_user_started_is_logged_into_and_left_open(make_trainer, mlflow_uri, experiment, train_data):
    mlflow.set_tracking_uri(mlflow_uri)
    experiment_id = mlflow.MlflowClient().create_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name="mine") as mine:
        make_trainer([MLflowCallback()]).train(train_data, num_epochs=1, per_device_batch_size=8)
        assert mlflow.active_run().info.run_id == mine.info.run_id
        mlflow.log_metric("test_accuracy", 0.9)

    (run,) = runs_of(experiment)
    assert run.info.run_name == "mine" and run.info.status == "FINISHED"
    assert {"train_loss_epoch", "test_accuracy"} <= set(run.data.metrics)
    assert run.data.params["num_epochs"] == "1"


def test_evaluate_after_train_logs_into_the_training_run(
    make_trainer, mlflow_uri, experiment, mlflow_metrics, train_data, eval_data
):
    callback = MLflowCallback(experiment, tracking_uri=mlflow_uri)
    trainer = make_trainer([callback])
    trainer.train(train_data, num_epochs=1, per_device_batch_size=8)
    trainer.evaluate(eval_data, per_device_batch_size=8)

    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED"
    metrics = mlflow_metrics(mlflow.MlflowClient(), run.info.run_id)
    assert metrics["evaluation_loss"] == [(5, pytest.approx(trainer.run_history.get_latest_metric("evaluation_loss")))]


def test_no_host_sync_per_step(mlflow_uri, experiment):
    def host_syncs(num_batches):
        model = torch.nn.Linear(4, 2)
        callback = MLflowCallback(f"{experiment}-{num_batches}", tracking_uri=mlflow_uri)
        trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), [callback])
        data = make_classification_dataset(num_samples=4 * num_batches)
        with CountHostSyncs() as counter:
            trainer.train(data, num_epochs=1, per_device_batch_size=4)
        return counter.count

    assert host_syncs(16) == host_syncs(4)


def test_catalogue_name_gives_the_callback():
    (entry,) = [ep for ep in entry_points(group="pa.callbacks") if ep.name == "mlflow"]
    assert entry.load() is MLflowCallback
