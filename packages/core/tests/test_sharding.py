"""save_checkpoint's gathering of FSDP2-sharded states into one portable file, on real CPU processes.

Accelerate runs FSDP on GPUs only (on a CPU-only machine it falls back to DDP; the matrix's
`fsdp` rows run it through the Trainer), so this checks the gathering itself: a model sharded
with torch's own ``fully_shard`` over 2 gloo processes, trained next to an unsharded copy.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pa_core._sharding import full_state, is_sharded
from pa_core.testing import make_classification_dataset, run_on_processes, tiny_classifier


def train_sharded_and_plain(out_dir):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    rank = dist.get_rank()
    plain = tiny_classifier(hidden=8, seed=3)
    sharded = copy.deepcopy(plain)
    fully_shard(sharded, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    plain_optimizer = torch.optim.AdamW(plain.parameters(), lr=0.05)
    sharded_optimizer = torch.optim.AdamW(sharded.parameters(), lr=0.05)
    x, y = make_classification_dataset(num_samples=16).tensors
    for _ in range(3):  # every process sees the same batch: the sharded run computes what the plain one does
        for model, optimizer in ((plain, plain_optimizer), (sharded, sharded_optimizer)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    optimizer_state = sharded_optimizer.state_dict()
    assert is_sharded(optimizer_state) and is_sharded(sharded.state_dict())
    assert not is_sharded(plain_optimizer.state_dict())
    local_rows = optimizer_state["state"][0]["exp_avg"].to_local().shape[0]
    assert local_rows == 4  # the first layer's 8 rows, half on each process

    gathered = full_state({"model_state_dict": sharded.state_dict(), "optimizer_state_dict": optimizer_state})
    skipped = full_state(sharded_optimizer.state_dict(), keep=False)  # the same collectives, nothing kept
    assert skipped["state"][0]["exp_avg"] is None
    if rank == 0:
        torch.save(gathered, out_dir / "portable.pt")
        torch.save(
            {"model_state_dict": plain.state_dict(), "optimizer_state_dict": plain_optimizer.state_dict()},
            out_dir / "plain.pt",
        )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fsdp2_shards_are_gathered_into_a_file_that_loads_into_a_plain_model(tmp_path):
    run_on_processes(train_sharded_and_plain, tmp_path, num_processes=2)
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
