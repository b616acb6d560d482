"""FSDP2 through the Trainer (the `fsdp` rows: one GPU, and two): the model is wrapped by
``fully_shard``, its parameters and optimizer state are sharded ``DTensor``s, training states are
saved and loaded sharded, and ``save_checkpoint`` writes one file of whole tensors that loads into a
plain model. The rest of the suite (loss, counts, exact resume) runs under these rows as well.
"""

import os

import pytest
import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, tiny_classifier

pytestmark = pytest.mark.skipif(
    os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true", reason="only on the fsdp rows"
)

TRAIN = make_classification_dataset(num_samples=96, seed=0)


class Inspect:
    """What the model and optimizer look like once the run has made its first optimizer update."""

    def __init__(self):
        self.facts = None

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates != 1:
            return
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor

        parameters = list(trainer.model.parameters())
        optimizer_values = [
            value for state in trainer.optimizer.state_dict()["state"].values() for value in state.values()
        ]
        self.facts = {
            "wrapped": isinstance(trainer.model, FSDPModule),
            "sharded_parameters": all(isinstance(p, DTensor) for p in parameters),
            "sharded_optimizer": any(isinstance(v, DTensor) and v.ndim > 0 for v in optimizer_values),
            "first_layer": (parameters[0].to_local().shape[0], parameters[0].shape[0]),
            "mesh_size": parameters[0].device_mesh.size(),
        }


def make_trainer(*callbacks, seed=0):
    model = tiny_classifier(hidden=16, seed=seed)
    return Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=0.05), list(callbacks))


def test_fsdp2_wraps_the_model_and_shards_parameters_and_optimizer_state(state):
    inspect = Inspect()
    trainer = make_trainer(inspect)
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=8)
    facts = inspect.facts
    assert facts["wrapped"] and facts["sharded_parameters"] and facts["sharded_optimizer"], facts
    assert facts["mesh_size"] == state.num_processes
    # The first layer's 16 rows are split between the processes (all of them on one).
    assert facts["first_layer"] == (16 // state.num_processes, 16), facts


class SaveAt:
    def __init__(self, state_dir, at):
        self.state_dir, self.at = state_dir, at

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates == self.at:
            trainer.save_training_state(self.state_dir)


def test_sharded_training_state_and_a_portable_checkpoint(workdir, state):
    state_dir = workdir / "state"
    trainer = make_trainer(SaveAt(state_dir, at=4))
    trainer.train(TRAIN, num_epochs=2, per_device_batch_size=8)
    # Accelerate saved the model and the optimizer with torch.distributed.checkpoint, one shard per process.
    files = sorted(p.relative_to(state_dir).as_posix() for p in state_dir.rglob("*") if p.is_file())
    assert any(f.startswith("pytorch_model_fsdp_0/") and f.endswith(".distcp") for f in files), files
    assert any(f.startswith("optimizer_0/") and f.endswith(".distcp") for f in files), files
    assert not any(f in ("model.safetensors", "optimizer.bin") for f in files), files

    # save_checkpoint: one file of whole tensors (model and optimizer), loadable without FSDP.
    trainer.save_checkpoint(workdir / "checkpoint.pt", save_per_node=False)
    whole = [p.full_tensor().detach().float().cpu() for p in trainer.model.parameters()]
    if state.is_main_process:
        checkpoint = torch.load(workdir / "checkpoint.pt", weights_only=True, map_location="cpu")
        plain = tiny_classifier(hidden=16, seed=5)
        plain.load_state_dict(checkpoint["model_state_dict"])
        for loaded, expected in zip(plain.parameters(), whole):
            torch.testing.assert_close(loaded.detach().float(), expected, rtol=0, atol=0)
        optimizer = torch.optim.AdamW(plain.parameters(), lr=0.05)
        optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        assert optimizer.state_dict()["state"][0]["exp_avg"].shape == (16, 4)

    # The sharded state resumes (the suite's test_resume_is_exact checks the weights bit for bit).
    resumed = make_trainer(seed=9)
    resumed.train(TRAIN, num_epochs=2, per_device_batch_size=8, resume_from=state_dir)
    assert resumed.run_state.num_updates == trainer.run_state.num_updates
    assert resumed.run_history.get_metric_values("train_loss_epoch") == pytest.approx(
        trainer.run_history.get_metric_values("train_loss_epoch"), rel=1e-3
    )
