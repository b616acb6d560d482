"""Write your own callbacks, and let them talk to each other through a custom event.

Three callbacks join the default ones:

- ``SamplesSeen`` and ``RecordLearningRate`` are plain classes whose methods are marked with
  ``@hookimpl`` and take only the arguments they need (see ``pa_core.hookspecs`` for every hook
  and its arguments). ``RecordLearningRate`` writes into the run history, so the default
  LogMetricsCallback prints the rate next to the losses.
- ``PlateauDetector`` is written in pytorch-accelerated's style, a ``TrainerCallback`` subclass
  whose ``on_*`` methods take ``(self, trainer, **kwargs)``. When the eval loss stops improving
  it fires a custom event, ``on_plateau``, with
  ``trainer.callback_handler.call_event("on_plateau", trainer=trainer, epoch=..., best_loss=...)``.
- ``HalveLearningRateOnPlateau`` answers that event. Callbacks without an ``on_plateau`` method
  are skipped; a custom event's method needs no marker and takes the arguments it wants.

    pa-examples run custom-callback
    pa-examples run custom-callback --patience 1 --min-improvement 1   # plateaus at once
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from pa_callbacks import get_default_callbacks
from pa_core import Trainer, TrainerCallback, hookimpl
from pa_examples.common import accuracy, digits_datasets, leave_process_group, mlp

__all__ = ["HalveLearningRateOnPlateau", "PlateauDetector", "RecordLearningRate", "SamplesSeen", "main"]


class SamplesSeen:
    """Counts the training samples this process has seen (no read from the device per step)."""

    def __init__(self) -> None:
        self.count = 0

    @hookimpl
    def on_train_step_end(self, batch_output: dict[str, Any]) -> None:
        """Add the batch's size (a Python int: no device read)."""
        self.count += batch_output["batch_size"]

    @hookimpl
    def on_training_run_end(self, trainer: Trainer) -> None:
        """Report the count."""
        trainer.print(f"SamplesSeen: this process trained on {self.count} samples")


class RecordLearningRate:
    """Writes the learning rate into the run history at the end of every training epoch."""

    @hookimpl
    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Record the first parameter group's learning rate as ``lr``."""
        trainer.run_history.update_metric("lr", trainer.optimizer.param_groups[0]["lr"])


class PlateauDetector(TrainerCallback):
    """Fires ``on_plateau`` when ``eval_loss_epoch`` has not improved by ``min_improvement`` for
    ``patience`` epochs in a row."""

    def __init__(self, patience: int = 2, min_improvement: float = 0.01) -> None:
        self.patience = patience
        self.min_improvement = min_improvement
        self.best_loss: float | None = None
        self.epochs_without_improvement = 0

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self.best_loss, self.epochs_without_improvement = None, 0

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        loss = trainer.run_history.get_latest_metric("eval_loss_epoch")
        if self.best_loss is None or loss < self.best_loss - self.min_improvement:
            self.best_loss, self.epochs_without_improvement = loss, 0
            return
        self.best_loss = min(self.best_loss, loss)
        self.epochs_without_improvement += 1
        if self.epochs_without_improvement >= self.patience:
            trainer.callback_handler.call_event(
                "on_plateau", trainer=trainer, epoch=trainer.run_history.current_epoch, best_loss=self.best_loss
            )
            self.epochs_without_improvement = 0


class HalveLearningRateOnPlateau:
    """Answers the custom ``on_plateau`` event by halving every parameter group's learning rate."""

    def __init__(self) -> None:
        self.times_halved = 0

    def on_plateau(self, trainer: Trainer, epoch: int) -> None:
        """Halve the learning rates (a custom event: no ``@hookimpl`` needed)."""
        for group in trainer.optimizer.param_groups:
            group["lr"] /= 2
        self.times_halved += 1
        trainer.print(
            f"on_plateau at epoch {epoch}: learning rate halved to {trainer.optimizer.param_groups[0]['lr']:g}"
        )


def main(argv: list[str] | None = None) -> float:
    """Train on the digits with the custom callbacks; return the test accuracy."""
    parser = argparse.ArgumentParser(prog="pa-examples run custom-callback", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default: 12)")
    parser.add_argument("--lr", type=float, default=1e-2, help="starting learning rate (default: 0.01)")
    parser.add_argument("--patience", type=int, default=2, help="epochs without improvement (default: 2)")
    parser.add_argument(
        "--min-improvement", type=float, default=0.01, help="the least drop of eval loss that counts (default: 0.01)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 3 epochs only (for tests)")
    args = parser.parse_args(argv)

    data = digits_datasets()
    torch.manual_seed(args.seed)
    model = mlp(in_features=64, num_classes=data.num_classes)
    halver = HalveLearningRateOnPlateau()
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=args.lr),
        # Called in this order. The learning rate is recorded before LogMetricsCallback prints.
        callbacks=(
            SamplesSeen(),
            RecordLearningRate(),
            PlateauDetector(args.patience, args.min_improvement),
            halver,
            *get_default_callbacks(progress_bar=False),
        ),
    )
    trainer.train(
        data.train, num_epochs=3 if args.fast else args.epochs, eval_dataset=data.eval, per_device_batch_size=32
    )
    test_accuracy = accuracy(trainer.model, data.test)
    trainer.print(f"learning rate halved {halver.times_halved} times; test accuracy: {test_accuracy:.4f}")
    leave_process_group()
    return test_accuracy


if __name__ == "__main__":
    main()
