"""Run by test_sharding.py under torchrun (2 CPU processes, gloo): a model sharded with torch's own
``fully_shard`` trains next to an unsharded copy; process 0 writes what pa_core._sharding.full_state
gathered (OUT_DIR/portable.pt) and the unsharded run's states (OUT_DIR/plain.pt).

python -m torch.distributed.run --nproc_per_node 2 shard_and_gather.py OUT_DIR
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pa_core._sharding import full_state, is_sharded
from pa_core.testing import make_classification_dataset, tiny_classifier

torch.set_num_threads(1)


def train_sharded_and_plain(out_dir):
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


if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        train_sharded_and_plain(Path(sys.argv[1]))
    finally:
        dist.destroy_process_group()
