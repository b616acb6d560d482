"""save_checkpoint's gathering of FSDP2-sharded states into one portable file, on real CPU processes.

Accelerate runs FSDP on GPUs only (on a CPU-only machine it falls back to DDP; the matrix's
`fsdp` rows run it through the Trainer), so this checks the gathering itself: a model sharded
with torch's own ``fully_shard`` over 2 gloo processes, trained next to an unsharded copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pa_core._sharding import full_state, is_sharded
from pa_core.testing import run_process_tree, tiny_classifier, torchrun_command


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fsdp2_shards_are_gathered_into_a_file_that_loads_into_a_plain_model(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    command = torchrun_command(str(Path(__file__).parent / "scripts" / "shard_and_gather.py"), str(tmp_path))
    result = run_process_tree(command, timeout=180, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    portable = torch.load(tmp_path / "portable.pt", weights_only=True)  # plain tensors only
    expected = torch.load(tmp_path / "plain.pt", weights_only=True)
    model = tiny_classifier(hidden=8, seed=11)
    model.load_state_dict(portable["model_state_dict"])
    for name, value in expected["model_state_dict"].items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    optimizer.load_state_dict(portable["optimizer_state_dict"])
    for index, state in expected["optimizer_state_dict"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(optimizer.state_dict()["state"][index][key], state[key], rtol=0, atol=1e-6)


def test_plain_states_pass_through_unchanged():
    state = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    assert full_state(state) is state
    assert not is_sharded(state)
