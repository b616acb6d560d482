"""Learning-rate schedules sized by the Trainer through placeholders.

A scheduler needs the length of the run, which is only known once ``train()`` has built the data
loaders. Pass ``create_scheduler_fn``, a ``functools.partial`` that takes the optimizer, and put
``TrainerPlaceholderValues`` where those numbers go: the Trainer substitutes ``NUM_EPOCHS`` and
``NUM_UPDATE_STEPS_PER_EPOCH`` (optimizer updates per epoch on each process, so gradient
accumulation and the number of processes are accounted for) and steps the scheduler after every
optimizer update. Three schedules to choose from:

- ``cosine``: ``pa_core.schedulers.CosineLrScheduler.create_scheduler_fn()``, a linear warmup,
  then cosine annealing (the run length defaults to the placeholders);
- ``wsd``: ``pa_core.schedulers.WSDLrScheduler``, warmup-stable-decay;
- ``onecycle``: PyTorch's own ``OneCycleLR`` in a ``functools.partial`` with placeholders.

    pa-examples run schedule --schedule wsd --gradient-accumulation-steps 2
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from torch import nn

from pa_callbacks import get_default_callbacks
from pa_core import Trainer, TrainerPlaceholderValues, hookimpl
from pa_core.schedulers import CosineLrScheduler, WSDLrScheduler
from pa_examples.common import accuracy, digits_datasets, leave_process_group, mlp

__all__ = ["LearningRateRecorder", "create_scheduler_fn", "main"]


def create_scheduler_fn(schedule: str, peak_lr: float):
    """A function from an optimizer to a scheduler, with placeholders for the run's length."""
    if schedule == "cosine":
        return CosineLrScheduler.create_scheduler_fn(
            num_warmup_epochs=1, warmup_starting_lr_ratio=0.01, min_lr_ratio=0.01
        )
    if schedule == "wsd":
        # Warm up for one epoch, hold the peak rate, decay over the last 20% of the updates
        # (to 1% of the peak).
        return WSDLrScheduler.create_scheduler_fn(num_warmup_epochs=1, decay_phase_ratio=0.2, lr_min=0.01)
    return partial(
        torch.optim.lr_scheduler.OneCycleLR,
        max_lr=peak_lr,
        epochs=TrainerPlaceholderValues.NUM_EPOCHS,
        steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
    )


class LearningRateRecorder:
    """Keeps the learning rate of every optimizer update and writes the epoch's last one into
    the run history as ``lr`` (which the default callbacks then print)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    @hookimpl
    def on_train_update_end(self, trainer: Trainer) -> None:
        """Keep the learning rate after this update."""
        self.values.append(trainer.optimizer.param_groups[0]["lr"])

    @hookimpl
    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Record the epoch's last learning rate as ``lr``."""
        trainer.run_history.update_metric("lr", self.values[-1])


def main(argv: list[str] | None = None) -> list[float]:
    """Train with the chosen schedule; return the learning rate after every update."""
    parser = argparse.ArgumentParser(prog="pa-examples run schedule", description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", choices=("cosine", "wsd", "onecycle"), default="cosine", help="default: cosine")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--lr", type=float, default=1e-2, help="the peak learning rate (default: 0.01)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1, help="batches per update (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 2 epochs only (for tests)")
    args = parser.parse_args(argv)

    data = digits_datasets()
    torch.manual_seed(args.seed)
    model = mlp(in_features=64, num_classes=data.num_classes)
    recorder = LearningRateRecorder()
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=args.lr),
        callbacks=(recorder, *get_default_callbacks(progress_bar=False)),
    )
    trainer.train(
        data.train,
        num_epochs=2 if args.fast else args.epochs,
        eval_dataset=data.eval,
        per_device_batch_size=32,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        create_scheduler_fn=create_scheduler_fn(args.schedule, args.lr),
    )

    lrs = recorder.values
    samples = sorted({round(i * (len(lrs) - 1) / 8) for i in range(9)})
    trainer.print(f"\n{args.schedule} schedule over {len(lrs)} optimizer updates ({type(trainer.scheduler).__name__}):")
    for update in samples:
        trainer.print(f"  after update {update + 1:>4}: lr {lrs[update]:.2e}")
    trainer.print(f"test accuracy: {accuracy(trainer.model, data.test):.4f}")
    leave_process_group()
    return lrs


if __name__ == "__main__":
    main()
