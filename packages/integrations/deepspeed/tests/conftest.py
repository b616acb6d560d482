"""Helpers for the pa-deepspeed tests: start real DeepSpeed runs on several CPU processes.

Each run is ``tests/scripts/ds_train.py`` started by ``torchrun`` (two processes joined over
gloo), ``accelerate launch`` or plain ``python``; it writes its results to a folder the test
then reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ds_train.py"

# Variables a launcher sets for its children; a test process must not pass its own on.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def no_autoloaded_plugins(monkeypatch):
    """Third-party plugins installed in the environment must not change these tests."""
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")


def _run_script(out_dir: Path, mode: str, *args: str, launcher: str = "torchrun", timeout: float = 300) -> dict:
    """Run ``ds_train.py MODE`` with ``launcher`` and return the JSON results it wrote for ``mode``.

    ``launcher`` is ``"torchrun"`` (2 processes), ``"python"`` (1 process, no launcher) or
    ``"accelerate"`` (``accelerate launch --use_deepspeed --zero_stage 2``, 2 processes).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / "tmp"  # torchrun leaves torchelastic_* folders in the temporary directory
    scratch.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in _LAUNCH_VARIABLES}
    env = {key: value for key, value in env.items() if not key.startswith("ACCELERATE_")}
    env.update(TMPDIR=str(scratch), OMP_NUM_THREADS="1", PA_DISABLE_PLUGIN_AUTOLOAD="1")
    script = [str(SCRIPT), mode, "--out", str(out_dir), *args]
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *script]
    elif launcher == "accelerate":
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--use_deepspeed",
            "--zero_stage",
            "2",
            "--gradient_accumulation_steps",
            "2",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            *script,
        ]
    elif launcher == "python":
        command = [sys.executable, *script]
    else:
        raise ValueError(f"unknown launcher {launcher!r}")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-8000:]
        pytest.fail(f"{launcher} {mode} exited with status {result.returncode}:\n{output}")
    name = f"zero{args[args.index('--stage') + 1]}" if mode == "zero" else mode
    return json.loads((out_dir / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def run_script():
    """``run_script(out_dir, mode, *args, launcher="torchrun")``: run ``ds_train.py`` and return its results."""
    return _run_script


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> tuple[dict, Path]:
    """The plain two-process (DDP) run every DeepSpeed run is compared with: (results, folder)."""
    out_dir = tmp_path_factory.mktemp("reference")
    return _run_script(out_dir, "reference"), out_dir
