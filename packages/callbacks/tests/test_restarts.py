"""A worker killed in the middle of an epoch: torchrun restarts the group and the run continues
from the latest training state to the weights of an uninterrupted run.

Real `torchrun --max-restarts 2 --nproc_per_node 2` launches on CPU (gloo), each under a timeout,
in a ProcessTree whose every process (torchrun starts its workers in sessions of their own) is
killed when the test ends however it ends.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from pa_core import latest_training_state, read_training_state
from pa_core.testing import run_process_tree

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

SCRIPT = Path(__file__).parent / "scripts" / "restartable.py"
TIMEOUT = 300


def launch(out: Path, *args: str, restarts: int = 0):
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "scratch"  # torchrun leaves torchelastic_* folders in the temporary directory
    scratch.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(
        TMPDIR=str(scratch),
        OMP_NUM_THREADS="1",
        PA_DISABLE_PLUGIN_AUTOLOAD="1",
        # torch 2.13: restarted workers can otherwise read the dead attempt's addresses from the
        # launcher's shared store and hang setting up gloo (pytorch/pytorch issue 135712).
        TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1",
        TORCH_ELASTIC_SHUTDOWN_TIMEOUT="15",
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--max-restarts", str(restarts), str(SCRIPT), str(out), *args,
    ]  # fmt: skip
    result = run_process_tree(command, timeout=TIMEOUT, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return output


def test_a_worker_killed_mid_epoch_is_restarted_by_torchrun_and_the_run_ends_as_if_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    launch(reference)
    interrupted = tmp_path / "interrupted"
    # 64 samples, 4 per process, 2 processes: 8 steps (4 updates) per epoch. Process 1 dies after
    # step 4 of epoch 2: in the middle of the epoch and of an accumulation window (steps 4-5).
    output = launch(interrupted, "--kill-rank", "1", "--kill-epoch", "2", "--kill-step", "4", restarts=2)
    assert "failed (exitcode: -9) local_rank: 1" in output, output[-4000:]  # torchrun saw the kill

    attempts = [json.loads(line) for line in (interrupted / "attempts.jsonl").read_text().splitlines()]
    assert [a["attempt"] for a in attempts] == ["0", "1"]
    assert attempts[0]["resume_from"] is None  # the first start: latest_training_state found nothing
    assert attempts[1]["resume_from"] == str(interrupted / "states" / "step_6")  # the last update before the kill
    result = json.loads((interrupted / "result.json").read_text())
    assert result["attempt"] == "1"

    expected = torch.load(reference / "weights.pt", weights_only=True)
    resumed = torch.load(interrupted / "weights.pt", weights_only=True)
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)
    reference_losses = json.loads((reference / "result.json").read_text())["losses"]
    assert result["losses"]["eval_loss_epoch"] == reference_losses["eval_loss_epoch"]
    assert result["losses"]["train_loss_epoch"] == pytest.approx(reference_losses["train_loss_epoch"], rel=1e-6)

    # SaveTrainingStateCallback kept pruning across the restart: the newest two states remain.
    latest = latest_training_state(interrupted / "states")
    assert latest == interrupted / "states" / "step_12"
    assert sorted(p.name for p in (interrupted / "states").iterdir()) == ["step_11", "step_12"]
    assert read_training_state(latest).num_updates == 12
