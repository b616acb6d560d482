"""TrackerCallback with any Accelerate tracker, and the trackers in a real two-process run."""

from __future__ import annotations

import json
import os

import mlflow
import pytest
import torch
from accelerate.tracking import GeneralTracker

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, run_on_processes, tiny_classifier
from pa_tracking import MLflowCallback, TensorBoardCallback, TrackerCallback


class ListTracker(GeneralTracker):
    """A user's own tracker: keeps every call in a list."""

    name = "list"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.calls = []

    @property
    def tracker(self):
        return self.calls

    def start(self):
        self.calls.append(("start",))

    def store_init_configuration(self, values):
        self.calls.append(("config", values))

    def log(self, values, step=None, **kwargs):
        self.calls.append(("log", step, values))

    def finish(self):
        self.calls.append(("finish",))


class RecordMetric:
    """Records ``custom_metric`` at every epoch's end, after the tracker logged the epoch."""

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        trainer.run_history.update_metric("custom_metric", trainer.run_history.current_epoch * 10)


def test_a_users_own_tracker_gets_the_config_and_every_metric(make_trainer, train_data, eval_data):
    tracker = ListTracker()
    trainer = make_trainer([TrackerCallback(tracker, config={"model": "mlp"}, log_every_n_updates=3), RecordMetric()])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=8)

    calls = tracker.calls
    assert calls[0] == ("start",) and calls[-1] == ("finish",)
    (config,) = [call[1] for call in calls if call[0] == "config"]
    assert config["num_epochs"] == 2 and config["model"] == "mlp" and config["train_dl_kwargs.shuffle"] is True
    logs = [(step, values) for kind, *rest in calls if kind == "log" for step, values in [rest]]
    assert [step for step, values in logs if "train_loss_step" in values] == [3, 6, 9]
    epoch_logs = [(step, values) for step, values in logs if "train_loss_epoch" in values]
    assert [step for step, _ in epoch_logs] == [5, 10]
    assert [values["train_loss_epoch"] for _, values in epoch_logs] == pytest.approx(
        trainer.run_history.get_metric_values("train_loss_epoch")
    )
    # A metric written after the tracker ran at an epoch's end is logged with that epoch's step,
    # when the next epoch starts (or the run ends).
    custom = [(step, values["custom_metric"]) for step, values in logs if "custom_metric" in values]
    assert custom == [(5, 10), (10, 20)]


def test_a_tracker_that_fails_to_start_fails_the_run_and_is_not_used(make_trainer, train_data):
    class Unreachable(ListTracker):
        def start(self):
            raise ConnectionError("tracking server unreachable")

    tracker = Unreachable()
    callback = TrackerCallback(tracker)
    with pytest.raises(ConnectionError, match="unreachable"):
        make_trainer([callback]).train(train_data, num_epochs=1, per_device_batch_size=8)
    assert (
        tracker.calls == [] and callback.tracker is None
    )  # nothing logged to, or finished on, a tracker never started


def test_a_tracker_named_by_accelerate_is_created_with_the_init_kwargs(
    make_trainer, read_scalars, train_data, tmp_path
):
    callback = TrackerCallback("tensorboard", project_name="named", logging_dir=str(tmp_path / "logs"), flush_secs=5)
    make_trainer([callback]).train(train_data, num_epochs=1, per_device_batch_size=8)
    assert [step for step, _ in read_scalars(tmp_path / "logs" / "named")["train_loss_epoch"]] == [5]


def test_two_tracker_callbacks_of_one_class_need_a_subclass(make_trainer):
    class SecondTracker(TrackerCallback):
        pass

    make_trainer([TrackerCallback(ListTracker()), SecondTracker(ListTracker())])  # accepted
    with pytest.raises(ValueError, match="already added"):
        make_trainer([TrackerCallback(ListTracker()), TrackerCallback(ListTracker())])


def test_unknown_tracker_names_and_objects_are_refused():
    with pytest.raises(ValueError, match="Accelerate has no tracker of that name.*register_tracker_class"):
        TrackerCallback("tensorbored")
    with pytest.raises(TypeError, match="tracker name or an accelerate.tracking.GeneralTracker"):
        TrackerCallback(object())


def test_a_missing_tracker_library_says_which_extra_to_install(monkeypatch):
    monkeypatch.setattr("pa_tracking._tracker.get_available_trackers", lambda: [])
    with pytest.raises(ImportError, match=r'pip install "pa-tracking\[comet-ml\]"'):
        TrackerCallback("comet_ml")
    with pytest.raises(ImportError, match=r'pip install "pa-tracking\[mlflow\]"'):
        MLflowCallback()


# -- two processes ------------------------------------------------------------------------------


class BatchLosses:
    def __init__(self):
        self.losses = []

    @hookimpl
    def on_train_step_end(self, batch_output):
        self.losses.append(batch_output["loss"].item())


def train_on_two_processes(out_dir, mlflow_uri, experiment):
    os.chdir(out_dir)
    losses = BatchLosses()
    tensorboard = TensorBoardCallback(log_every_n_updates=2)
    mlflow_callback = MLflowCallback(experiment, tracking_uri=mlflow_uri, log_every_n_updates=2)
    model = tiny_classifier()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[losses, tensorboard, mlflow_callback],
    )
    # 32 samples in batches of 4 on each of 2 processes: 4 updates per epoch.
    trainer.train(
        make_classification_dataset(num_samples=32),
        num_epochs=2,
        eval_dataset=make_classification_dataset(num_samples=16, seed=1),
        per_device_batch_size=4,
    )
    rank = torch.distributed.get_rank()
    result = {
        "losses": losses.losses,
        "train_loss_epoch": trainer.run_history.get_metric_values("train_loss_epoch"),
        "run_dir": tensorboard.run_dir,
        "run_id": mlflow_callback.run_id,
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


@pytest.mark.multiprocess
def test_two_processes_write_one_tensorboard_folder_and_one_mlflow_run(
    tmp_path, mlflow_uri, experiment, read_scalars, mlflow_metrics
):
    run_on_processes(train_on_two_processes, str(tmp_path), mlflow_uri, experiment, num_processes=2)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]

    # Only the world main process opened a run.
    assert ranks[1]["run_dir"] is None and ranks[1]["run_id"] is None
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert str(run_dir) == ranks[0]["run_dir"]
    mlflow.set_tracking_uri(mlflow_uri)
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.run_id == ranks[0]["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["num_processes"] == "2"

    # The same points in both trackers: epoch losses as the Trainer computed them, and the running
    # loss averaged over both processes' batches since the previous log.
    both = [ranks[0]["losses"], ranks[1]["losses"]]
    windows = [(0, 2), (2, 4), (4, 6), (6, 8)]  # updates 2, 4 (epoch 1) and 6, 8 (epoch 2)
    expected_step_loss = [sum(sum(losses[a:b]) for losses in both) / (2 * (b - a)) for a, b in windows]
    for points in (read_scalars(run_dir), mlflow_metrics(client, run.info.run_id)):
        assert [step for step, _ in points["train_loss_epoch"]] == [4, 8]
        assert [value for _, value in points["train_loss_epoch"]] == pytest.approx(ranks[0]["train_loss_epoch"])
        assert [step for step, _ in points["train_loss_step"]] == [2, 4, 6, 8]
        assert [value for _, value in points["train_loss_step"]] == pytest.approx(expected_step_loss, rel=1e-5)
