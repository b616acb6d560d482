"""Fixtures for pa-tracking tests: real TensorBoard folders and MLflow runs, read back with the
trackers' own readers (``EventAccumulator`` and ``mlflow.MlflowClient``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, tiny_classifier

# Tiny models gain nothing from intra-op threads, and a process forked by the two-process tests
# after OpenMP started its thread pool can hang in its first parallel region.
torch.set_num_threads(1)


def _read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for the run in ``run_dir``: tag -> [(step, value), ...]."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def _metric_history(client: mlflow.MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of an MLflow run: key -> [(step, value), ...] in logging order."""
    return {
        key: [(point.step, point.value) for point in client.get_metric_history(run_id, key)]
        for key in client.get_run(run_id).data.metrics
    }


class _RecordBatchLosses:
    """Keeps every training batch's loss (a test helper; reading each loss back is fine here)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    @hookimpl
    def on_train_step_end(self, batch_output):
        self.losses.append(batch_output["loss"].item())


class _FailAt:
    """Raises ``error`` after optimizer update ``update``."""

    def __init__(self, update: int, error: BaseException | None = None) -> None:
        self.update, self.error = update, error or RuntimeError("boom")

    @hookimpl
    def on_train_update_end(self, num_updates):
        if num_updates == self.update:
            raise self.error


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No third-party plugins, no MLflow settings from the environment, files in a fresh folder."""
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # MLflowCallback(tracking_uri=...) sets it for the process, as MLflow does


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite tracking store for the session (creating its tables takes seconds); each test uses
    its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def experiment(request) -> str:
    """An experiment name of this test's own."""
    return request.node.name


@pytest.fixture
def train_data():
    return make_classification_dataset(num_samples=40, seed=0)  # 5 batches of 8


@pytest.fixture
def eval_data():
    return make_classification_dataset(num_samples=20, seed=1)


@pytest.fixture
def read_scalars():
    """``read_scalars(run_dir)``: tag -> [(step, value), ...], read with TensorBoard's EventAccumulator."""
    return _read_scalars


@pytest.fixture
def mlflow_metrics():
    """``mlflow_metrics(client, run_id)``: key -> [(step, value), ...], read with MlflowClient."""
    return _metric_history


@pytest.fixture
def record_batch_losses():
    """The class of a callback keeping every training batch's loss in ``.losses``."""
    return _RecordBatchLosses


@pytest.fixture
def fail_at():
    """``fail_at(update, error=RuntimeError("boom"))``: a callback raising after that optimizer update."""
    return _FailAt


@pytest.fixture
def make_trainer():
    """A Trainer over a fresh tiny classifier with SGD and the given callbacks."""

    def make(callbacks=(), lr=0.1, **kwargs: Any) -> Trainer:
        model = tiny_classifier()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        return Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=list(callbacks), **kwargs)

    return make
