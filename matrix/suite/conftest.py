"""The hardware-agnostic suite runs in every process of a launch (see matrix/run_row.py).

Every process runs the same tests in the same order, so collective operations line up. Files
go to PA_MATRIX_DIR, a folder shared by the processes of one launch.
"""

import os
from pathlib import Path

import pytest
import torch
from accelerate import PartialState


@pytest.fixture(scope="session")
def shared_dir():
    return Path(os.environ.get("PA_MATRIX_DIR", "/tmp/pa-matrix"))


@pytest.fixture
def workdir(shared_dir, request):
    """A folder for this test, the same on every process of the launch."""
    path = shared_dir / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def state():
    return PartialState()


@pytest.fixture(autouse=True)
def no_autoloaded_plugins(monkeypatch):
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")


def pytest_report_header(config):
    state = PartialState()
    return (
        f"pa matrix: process {state.process_index}/{state.num_processes}, local {state.local_process_index}, "
        f"{state.distributed_type}, device {state.device}, torch {torch.__version__}"
    )
