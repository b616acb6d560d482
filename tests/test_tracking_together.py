"""pa-tracking with pa-callbacks: trackers named in the catalogue next to the default callbacks and the
throughput monitor (nox session `integration`, every distribution installed)."""

import math

import mlflow
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pa_callbacks import ProgressBarCallback, get_default_callbacks
from pa_core import Trainer
from pa_core.testing import CountHostSyncs, make_classification_dataset, tiny_classifier


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"  # its tables take seconds to create


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path, mlflow_db, request):
    """Files in a fresh folder; MLflow configured through its environment only, as `callbacks=["mlflow"]` users do."""
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)
    monkeypatch.chdir(tmp_path)
    yield
    mlflow.set_tracking_uri(None)


def train(callbacks, num_batches, num_epochs=1):
    model = tiny_classifier()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks)
    data = make_classification_dataset(num_samples=4 * num_batches)
    with CountHostSyncs() as counter:
        trainer.train(data, num_epochs=num_epochs, eval_dataset=data, per_device_batch_size=4)
    return trainer, counter.count


def test_trackers_and_throughput_add_no_host_sync_per_step():
    def callbacks():
        defaults = list(get_default_callbacks())
        defaults[3] = ProgressBarCallback(loss_refresh_interval=math.inf)  # no time-dependent reads
        return [*defaults, "tensorboard", "mlflow", "throughput"]

    _, short = train(callbacks(), num_batches=4)
    _, long = train(callbacks(), num_batches=16)
    assert short == long


def test_the_throughput_figures_reach_every_tracker(tmp_path, request):
    trainer, _ = train(["throughput", "tensorboard", "mlflow"], num_batches=5, num_epochs=2)

    (run_dir,) = (tmp_path / "runs").iterdir()
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(request.node.name).experiment_id])
    expected = trainer.run_history.get_metric_values("samples_per_second_epoch")
    from_tensorboard = [(e.step, e.value) for e in accumulator.Scalars("samples_per_second_epoch")]
    from_mlflow = [(p.step, p.value) for p in client.get_metric_history(run.info.run_id, "samples_per_second_epoch")]
    for points in (from_tensorboard, from_mlflow):
        assert [step for step, _ in points] == [5, 10]
        assert [value for _, value in points] == pytest.approx(expected, rel=1e-6)
    assert "peak_memory_mib" in run.data.metrics


def test_intermediate_evaluations_are_logged_at_their_update(tmp_path):
    from pa_callbacks import StepBasedEvaluationCallback

    # 5 updates per epoch, an intermediate evaluation after updates 2 and 4 of each (not after the
    # epoch's last update, whose own evaluation follows); the metric is removed from the run history
    # right after each evaluation.
    callbacks = [StepBasedEvaluationCallback(eval_every_n_steps=2), "tensorboard"]
    trainer, _ = train(callbacks, num_batches=5, num_epochs=2)

    (run_dir,) = (tmp_path / "runs").iterdir()
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("intermediate_eval_loss")] == [2, 4, 7, 9]
    assert [e.step for e in accumulator.Scalars("eval_loss_epoch")] == [5, 10]
    assert "intermediate_eval_loss" not in trainer.run_history.get_metric_names()
