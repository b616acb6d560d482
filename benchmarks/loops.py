"""The loops being compared: the same training and evaluation work, written once for each framework.

Every loop gets a fresh model, the data, the batch size and a ``started`` callable, which it calls right before the
framework's ``train()`` / ``fit()`` / ``evaluate()`` (for the hand-written loops: before they create their data
loader). Everything a user builds before that call (optimizer, Trainer objects) is outside the timed region; the
model records the time at the start of every forward pass, which is how run.py times steps (see its docstring).

All loops do the same per step: forward, cross-entropy, backward, SGD step, zero_grad, and keep a running loss on the
device that is read back once per epoch (what a careful hand-written loop does). Frameworks run as their users would
run them, output discarded by the harness; the only setting changed from a framework's defaults is
``num_workers=0`` for pytorch-accelerated (its default starts one worker process per CPU; the
"pytorch-accelerated-workers" loop keeps that default to show its cost).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader

LR = 0.01


class Stamped(nn.Module):
    """The benchmarked network, calling ``clock()`` at the start of every forward pass (the same cost in every loop)."""

    def __init__(self, net: nn.Module, clock: Callable[[], None]) -> None:
        super().__init__()
        self.net = net
        self.clock = clock

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.clock()
        return self.net(inputs)


def _parts(model: nn.Module) -> tuple[torch.optim.Optimizer, nn.Module]:
    return torch.optim.SGD(model.parameters(), lr=LR), nn.CrossEntropyLoss()


# ------------------------------------------------------------------------------------------------
# Plain PyTorch: the baseline every other loop is divided by
# ------------------------------------------------------------------------------------------------


def plain_train(model, data, batch_size, epochs, started):
    optimizer, loss_func = _parts(model)
    started()
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    model.train()
    for _ in range(epochs):
        total = torch.zeros(())
        for inputs, targets in loader:
            loss = loss_func(model(inputs), targets)
            total += loss.detach() * len(targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        epoch_loss = total.item() / len(data)
    return epoch_loss


def plain_eval(model, data, batch_size, started):
    _, loss_func = _parts(model)
    started()
    loader = DataLoader(data, batch_size=batch_size)
    model.eval()
    total = torch.zeros(())
    with torch.no_grad():
        for inputs, targets in loader:
            total += loss_func(model(inputs), targets) * len(targets)
    return total.item() / len(data)


# ------------------------------------------------------------------------------------------------
# A hand-written Accelerate loop, as Accelerate's documentation shows it
# ------------------------------------------------------------------------------------------------


def accelerate_train(model, data, batch_size, epochs, started):
    from accelerate import Accelerator

    optimizer, loss_func = _parts(model)
    started()
    accelerator = Accelerator()
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    for _ in range(epochs):
        total = torch.zeros((), device=accelerator.device)
        for inputs, targets in loader:
            loss = loss_func(model(inputs), targets)
            total += loss.detach() * len(targets)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        epoch_loss = accelerator.reduce(total, "sum").item() / len(data)
    return epoch_loss


def accelerate_eval(model, data, batch_size, started):
    from accelerate import Accelerator

    _, loss_func = _parts(model)
    started()
    accelerator = Accelerator()
    model, loader = accelerator.prepare(model, DataLoader(data, batch_size=batch_size))
    model.eval()
    total = torch.zeros((), device=accelerator.device)
    with torch.no_grad():
        for inputs, targets in loader:
            total += loss_func(model(inputs), targets) * len(targets)
    return accelerator.reduce(total, "sum").item() / len(data)


# ------------------------------------------------------------------------------------------------
# pa: with no callbacks, and with its default callbacks (progress bar, printing, logging, NaN check)
# ------------------------------------------------------------------------------------------------


def _pa_trainer(model, defaults: bool):
    from pa_core import Trainer

    optimizer, loss_func = _parts(model)
    return Trainer(model, loss_func, optimizer) if defaults else Trainer(model, loss_func, optimizer, callbacks=())


def pa_train(model, data, batch_size, epochs, started, defaults=False):
    trainer = _pa_trainer(model, defaults)
    started()
    trainer.train(data, num_epochs=epochs, per_device_batch_size=batch_size)
    return trainer.run_history.get_latest_metric("train_loss_epoch")


def pa_eval(model, data, batch_size, started, defaults=False):
    trainer = _pa_trainer(model, defaults)
    started()
    trainer.evaluate(data, per_device_batch_size=batch_size)
    return trainer.run_history.get_latest_metric("evaluation_loss")


# ------------------------------------------------------------------------------------------------
# pytorch-accelerated 0.1.61 with its default callbacks
# ------------------------------------------------------------------------------------------------

NO_WORKERS = {"num_workers": 0}


def pta_train(model, data, batch_size, epochs, started, loader_kwargs=NO_WORKERS):
    from pytorch_accelerated import Trainer

    optimizer, loss_func = _parts(model)
    trainer = Trainer(model, loss_func, optimizer)
    started()
    trainer.train(
        train_dataset=data, num_epochs=epochs, per_device_batch_size=batch_size, train_dataloader_kwargs=loader_kwargs
    )
    return trainer.run_history.get_latest_metric("train_loss_epoch")


def pta_eval(model, data, batch_size, started):
    from pytorch_accelerated import Trainer

    optimizer, loss_func = _parts(model)
    trainer = Trainer(model, loss_func, optimizer)
    started()
    trainer.evaluate(dataset=data, per_device_batch_size=batch_size, dataloader_kwargs=NO_WORKERS)
    return trainer.run_history.get_latest_metric("evaluation_loss")


# ------------------------------------------------------------------------------------------------
# Lightning: a LightningModule and the barebones Trainer (no logging, checkpoints or progress bar)
# ------------------------------------------------------------------------------------------------


def _lightning_module(model, num_samples, optimizer, loss_func):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        # Barebones mode forbids self.log: the running loss is kept by hand, as in the plain loop.
        def __init__(self) -> None:
            super().__init__()
            self.model, self.loss_func = model, loss_func

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            loss = self.loss_func(self.model(inputs), targets)
            self.total += loss.detach() * len(targets)
            return loss

        def validation_step(self, batch, batch_idx):
            inputs, targets = batch
            self.total += self.loss_func(self.model(inputs), targets) * len(targets)

        def on_train_epoch_start(self) -> None:
            self.total = torch.zeros((), device=self.device)

        def on_validation_epoch_start(self) -> None:
            self.total = torch.zeros((), device=self.device)

        def on_train_epoch_end(self) -> None:
            self.epoch_loss = self.total.item() / num_samples

        def on_validation_epoch_end(self) -> None:
            self.epoch_loss = self.total.item() / num_samples

        def configure_optimizers(self):
            return optimizer

    return Module()


def _lightning_trainer(epochs: int = 1):
    import lightning.pytorch as pl

    return pl.Trainer(barebones=True, accelerator="cpu", devices=1, max_epochs=epochs)


def lightning_train(model, data, batch_size, epochs, started):
    module = _lightning_module(model, len(data), *_parts(model))
    trainer = _lightning_trainer(epochs)
    started()
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=batch_size, shuffle=True))
    return module.epoch_loss


def lightning_eval(model, data, batch_size, started):
    module = _lightning_module(model, len(data), *_parts(model))
    trainer = _lightning_trainer()
    started()
    trainer.validate(module, dataloaders=DataLoader(data, batch_size=batch_size))
    return module.epoch_loss


# ------------------------------------------------------------------------------------------------
# The catalogue run.py iterates over
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loop:
    name: str
    requires: str | None  # the import a framework needs; None for plain PyTorch
    train: Callable[..., float]
    evaluate: Callable[..., float] | None  # None: not part of the eval workload
    overhead_only: bool = False  # only run on the overhead-bound workload W1

    @property
    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires.split(".")[0]) is not None


LOOPS = [
    Loop("plain", None, plain_train, plain_eval),
    Loop("accelerate", "accelerate", accelerate_train, accelerate_eval),
    Loop("pa", "pa_core", pa_train, pa_eval),
    Loop("pa-defaults", "pa_callbacks", partial(pa_train, defaults=True), partial(pa_eval, defaults=True)),
    Loop("pytorch-accelerated", "pytorch_accelerated", pta_train, pta_eval),
    Loop("pytorch-accelerated-workers", "pytorch_accelerated", partial(pta_train, loader_kwargs=None), None, True),
    Loop("lightning", "lightning", lightning_train, lightning_eval),
]
BASELINE = "plain"
