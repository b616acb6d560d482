"""Callbacks in a real two-process (gloo) run."""

import json
import os
import warnings

import pytest
import torch
from torch import nn

from pa_callbacks import ConvertSyncBatchNormCallback
from pa_core import StopTrainingError, Trainer, hookimpl
from pa_core.testing import make_classification_dataset, run_on_processes


def batchnorm_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


class ModuleTypes:
    """Records the model's layer types when training starts; optionally stops right there."""

    def __init__(self, stop):
        self.stop = stop
        self.types = None
        self.epochs = 0

    @hookimpl
    def on_train_epoch_start(self, trainer):
        self.types = sorted({type(m).__name__ for m in trainer.get_model().modules()})
        if self.stop:
            raise StopTrainingError("inspected")

    @hookimpl
    def on_train_epoch_end(self):
        self.epochs += 1


def train_and_inspect(convert, stop):
    inspector = ModuleTypes(stop)
    model = batchnorm_model()
    trainer = Trainer(
        model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[convert, inspector]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(make_classification_dataset(num_samples=32), num_epochs=1, per_device_batch_size=4)
    warned = any("SyncBatchNorm cannot train on 'cpu'" in str(w.message) for w in caught)
    return {"types": inspector.types, "epochs": inspector.epochs, "warned": warned}


class ConvertEvenOnCpu(ConvertSyncBatchNormCallback):
    sync_device_types = (*ConvertSyncBatchNormCallback.sync_device_types, "cpu")


def convert_on_two_processes(out_dir):
    results = {
        # On CPU processes the layers stay BatchNorm (SyncBatchNorm cannot train there) and training runs.
        "cpu": train_and_inspect(ConvertSyncBatchNormCallback(), stop=False),
        # Where SyncBatchNorm can train, the layers are converted (inspected before the first batch,
        # which SyncBatchNorm would refuse on a CPU).
        "accelerator": train_and_inspect(ConvertEvenOnCpu(), stop=True),
    }
    with open(os.path.join(out_dir, f"rank{torch.distributed.get_rank()}.json"), "w") as handle:
        json.dump(results, handle)


@pytest.mark.multiprocess
def test_batchnorm_layers_are_converted_in_a_distributed_run(tmp_path):
    run_on_processes(convert_on_two_processes, str(tmp_path), num_processes=2)
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert results["accelerator"]["types"] == ["Linear", "ReLU", "Sequential", "SyncBatchNorm"]
        assert results["cpu"] == {"types": ["BatchNorm1d", "Linear", "ReLU", "Sequential"], "epochs": 1, "warned": True}


def test_a_single_process_run_is_left_unchanged():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        result = train_and_inspect(ConvertEvenOnCpu(), stop=False)
    assert result["types"] == ["BatchNorm1d", "Linear", "ReLU", "Sequential"]
    assert result["epochs"] == 1
