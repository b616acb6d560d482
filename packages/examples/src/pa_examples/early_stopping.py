"""Stop when the eval loss stops improving, and keep the best model (early stopping + save-best).

``SaveBestModelCallback`` saves a checkpoint whenever ``eval_loss_epoch`` reaches a new best,
and loads the best one back when training ends. ``EarlyStoppingCallback`` ends training (cleanly,
with a ``StopTrainingError``) once the loss has not improved by more than ``--threshold`` for
``--patience`` epochs. Both can watch any run-history metric instead, e.g. an accuracy written
by pa-torchmetrics with ``watch_metric="eval_accuracy", greater_is_better=True``.

    pa-examples run early-stopping --output-dir runs/early-stopping
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from pa_callbacks import EarlyStoppingCallback, SaveBestModelCallback, get_default_callbacks
from pa_core import Trainer
from pa_examples.common import accuracy, digits_datasets, leave_process_group, mlp

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Train until early stopping; return the epochs run, the best epoch and the test accuracy."""
    parser = argparse.ArgumentParser(prog="pa-examples run early-stopping", description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=50, help="the most epochs to train (default: 50)")
    parser.add_argument("--patience", type=int, default=3, help="epochs without improvement (default: 3)")
    parser.add_argument("--threshold", type=float, default=0.001, help="the least improvement (default: 0.001)")
    parser.add_argument("--output-dir", default="early_stopping_example", help="where best_model.pt is saved")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="at most 3 epochs (for tests)")
    args = parser.parse_args(argv)
    best_model_path = Path(args.output_dir) / "best_model.pt"
    best_model_path.parent.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    data = digits_datasets()
    model = mlp(in_features=64, num_classes=data.num_classes)
    save_best = SaveBestModelCallback(save_path=best_model_path, watch_metric="eval_loss_epoch")
    early_stopping = EarlyStoppingCallback(
        early_stopping_patience=args.patience, early_stopping_threshold=args.threshold, watch_metric="eval_loss_epoch"
    )
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=1e-2),
        callbacks=(*get_default_callbacks(progress_bar=False), save_best, early_stopping),
    )
    trainer.train(
        data.train,
        num_epochs=3 if args.fast else args.max_epochs,
        eval_dataset=data.eval,
        per_device_batch_size=32,
    )

    # The trainer now holds the best weights again (SaveBestModelCallback loaded them).
    epochs_run = len(trainer.run_history.get_metric_values("eval_loss_epoch"))
    test_accuracy = accuracy(trainer.model, data.test)
    trainer.print(
        f"trained {epochs_run} epochs; best eval_loss_epoch {save_best.best_metric:.4f} at epoch "
        f"{save_best.best_metric_epoch} (saved to {best_model_path}); test accuracy with it: {test_accuracy:.4f}"
    )
    leave_process_group()
    return {"epochs_run": epochs_run, "best_epoch": save_best.best_metric_epoch, "test_accuracy": test_accuracy}


if __name__ == "__main__":
    main()
