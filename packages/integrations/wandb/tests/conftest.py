"""Fixtures for pa-wandb tests: quiet offline W&B runs, and a reader for what they wrote.

W&B 0.31 writes an offline run as one transaction log, ``run-<id>.wandb``: a 7-byte header
(``:W&B``, a 2-byte magic number, a version byte) followed by LevelDB-log framed records
(32 KiB blocks; each chunk has a 4-byte checksum, a 2-byte length and a 1-byte type: full,
first, middle or last), each record a ``wandb_internal_pb2.Record`` protobuf. The reader below
turns that into plain Python so the tests can check exactly what was logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import wandb
from wandb.proto import wandb_internal_pb2

from pa_core import Trainer
from pa_core.testing import tiny_classifier
from pa_wandb import WandbCallback

torch.set_num_threads(1)

QUIET = {"x_disable_stats": True, "silent": True, "console": "off", "save_code": False}

_BLOCK_SIZE = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What one offline W&B run wrote to disk."""

    path: Path
    run_id: str = ""
    project: str = ""
    name: str = ""
    notes: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    step_metrics: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None  # None: the run was never finished

    def values(self, key: str) -> list[Any]:
        """Every logged value of ``key``, in logging order."""
        return [row[key] for row in self.history if key in row]

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        """The history rows holding ``key``."""
        return [row for row in self.history if key in row]


def _chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", f"not a W&B transaction log (starts with {data[:7]!r})"
    records, pending, pos = [], b"", _CHUNK_HEADER
    while pos + _CHUNK_HEADER <= len(data):
        block_left = _BLOCK_SIZE - pos % _BLOCK_SIZE
        kind = data[pos + 6]
        if block_left < _CHUNK_HEADER or kind == 0:  # block trailer padding
            pos += block_left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        chunk = data[pos + _CHUNK_HEADER : pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
    return records


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def read_offline_run(run_dir: Path) -> OfflineRun:
    """Parse the ``run-*.wandb`` file in ``run_dir``."""
    (log_file,) = run_dir.glob("run-*.wandb")
    run = OfflineRun(path=run_dir)
    for chunk in _chunks(log_file.read_bytes()):
        record = wandb_internal_pb2.Record.FromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.run_id, run.project, run.name = info.run_id, info.project, info.display_name
            run.notes, run.job_type, run.tags = info.notes, info.job_type, list(info.tags)
            run.config.update({_key(item): json.loads(item.value_json) for item in info.config.update})
        elif kind == "config":
            run.config.update({_key(item): json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "metric" and record.metric.name and record.metric.step_metric:
            run.step_metrics[record.metric.name] = record.metric.step_metric
        elif kind == "artifact":
            art = record.artifact
            run.artifacts.append(
                {
                    "name": art.name,
                    "type": art.type,
                    "aliases": list(art.aliases),
                    "metadata": json.loads(art.metadata or "{}"),
                    "files": sorted(entry.path for entry in art.manifest.contents),
                }
            )
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


@pytest.fixture
def read_runs():
    """``read_runs(wandb_dir)``: every offline run under ``wandb_dir``, oldest first.

    The ``wandb-core`` service writes the log and may still be flushing it after
    ``run.finish()`` returns (measured with wandb 0.31: the file can hold only its header),
    so W&B is torn down first, which waits for the service to finish writing and exit.
    """

    def read(wandb_dir: Path) -> list[OfflineRun]:
        wandb.teardown()
        return [read_offline_run(d) for d in sorted((Path(wandb_dir) / "wandb").glob("offline-run-*"))]

    return read


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch):
    """Every test runs W&B offline and quietly, with no third-party pa plugins."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture(scope="session", autouse=True)
def no_wandb_process_left():
    """After the session, W&B's service is shut down and no ``wandb-core`` process remains."""
    yield
    wandb.teardown()
    leftover = [p for p in psutil.Process().children(recursive=True) if p.name() == "wandb-core"]
    assert not leftover, f"wandb-core processes left running: {leftover}"


@pytest.fixture
def wandb_dir(tmp_path):
    return tmp_path / "wandb-runs"


@pytest.fixture
def make_callback(wandb_dir):
    """A WandbCallback writing quiet offline runs under ``wandb_dir``; kwargs override."""

    def make(**kwargs: Any) -> WandbCallback:
        kwargs.setdefault("project", "pa-tests")
        kwargs.setdefault("dir", wandb_dir)
        kwargs.setdefault("settings", wandb.Settings(**QUIET))
        return WandbCallback(**kwargs)

    return make


@pytest.fixture
def make_trainer():
    """A Trainer over a fresh tiny classifier with SGD and the given callbacks."""

    def make(callbacks=(), lr=0.1, **kwargs: Any) -> Trainer:
        model = tiny_classifier()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        return Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=list(callbacks), **kwargs)

    return make
