"""Compute accuracy and F1 in the training loop with torchmetrics, through pa-torchmetrics.

pa-torchmetrics' MetricsCallback updates torchmetrics metrics with every batch's model outputs
and targets, computes them at the end of each epoch (synchronised across processes by
torchmetrics) and writes them into the run history, where the default LogMetricsCallback prints
them next to the losses and other callbacks (early stopping, W&B) can read them by name:
``eval_accuracy`` after each evaluation epoch, ``train_accuracy`` after each training epoch,
``evaluation_accuracy`` after ``evaluate()``.

    pa-examples run metrics
    torchrun --nproc_per_node 2 -m pa_examples.metrics    # the same values as on one process
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from pa_callbacks import get_default_callbacks
from pa_core import Trainer
from pa_examples.common import digits_datasets, leave_process_group, mlp

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train with torchmetrics metrics; return the test loss, accuracy and F1."""
    parser = argparse.ArgumentParser(prog="pa-examples run metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size on each process (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's learning rate (default: 0.003)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 2 epochs only (for tests)")
    args = parser.parse_args(argv)

    try:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        from pa_torchmetrics import MetricsCallback
    except ImportError as error:
        raise SystemExit(f"This example needs pa-torchmetrics: pip install pa-torchmetrics ({error}).") from None

    data = digits_datasets()
    torch.manual_seed(args.seed)
    model = mlp(in_features=64, num_classes=data.num_classes)

    def classification_metrics():
        return {
            "accuracy": MulticlassAccuracy(num_classes=data.num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes=data.num_classes, average="macro"),
        }

    # Separate metric objects for training and evaluation batches. List MetricsCallback
    # anywhere: it computes its metrics before the other callbacks see the end of an epoch.
    metrics = MetricsCallback(metrics=classification_metrics(), train_metrics=classification_metrics())
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=args.lr),
        callbacks=(metrics, *get_default_callbacks()),
    )
    trainer.train(
        train_dataset=data.train,
        eval_dataset=data.eval,
        num_epochs=2 if args.fast else args.epochs,
        per_device_batch_size=args.batch_size,
    )
    history = trainer.run_history
    trainer.print(f"eval accuracy by epoch: {[round(v, 4) for v in history.get_metric_values('eval_accuracy')]}")

    trainer.evaluate(data.test, per_device_batch_size=64)
    results = {
        "test_loss": history.get_latest_metric("evaluation_loss"),
        "test_accuracy": history.get_latest_metric("evaluation_accuracy"),
        "test_f1": history.get_latest_metric("evaluation_f1"),
    }
    trainer.print(" | ".join(f"{name}: {value:.4f}" for name, value in results.items()))
    leave_process_group()
    return results


if __name__ == "__main__":
    main()
