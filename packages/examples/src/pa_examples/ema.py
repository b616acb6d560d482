"""Keep an exponential moving average (EMA) of the weights with ModelEmaCallback.

The averaged model is usually smoother and often generalises better than the weights of the
last step. ``ModelEmaCallback`` keeps the average (updated here after every optimizer update),
evaluates it after each epoch's evaluation, which adds ``ema_model_eval_loss_epoch`` to the run
history, and saves the best average to ``--output-dir``/ema_model.pt. The trainer's own model
is left as trained; the script compares both on the test set, loading the saved average into a
fresh model as you would to use it.

    pa-examples run ema --output-dir runs/ema
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from pa_callbacks import ModelEmaCallback, get_default_callbacks
from pa_core import Trainer
from pa_examples.common import accuracy, digits_datasets, leave_process_group, mlp

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train with an EMA of the weights; return the test accuracy of both and the best EMA epoch."""
    parser = argparse.ArgumentParser(prog="pa-examples run ema", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default: 15)")
    parser.add_argument("--decay", type=float, default=0.98, help="EMA decay per update (default: 0.98)")
    parser.add_argument("--output-dir", default="ema_example", help="where ema_model.pt is saved")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 2 epochs only (for tests)")
    args = parser.parse_args(argv)
    ema_path = Path(args.output_dir) / "ema_model.pt"
    ema_path.parent.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    data = digits_datasets()
    model = mlp(in_features=64, num_classes=data.num_classes)
    ema = ModelEmaCallback(decay=args.decay, save_path=ema_path, update_every_n_steps=1)
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=1e-2),
        # The EMA callback writes metrics, so it goes before the defaults, which print them.
        callbacks=(ema, *get_default_callbacks(progress_bar=False)),
    )
    trainer.train(
        data.train, num_epochs=2 if args.fast else args.epochs, eval_dataset=data.eval, per_device_batch_size=32
    )

    # Use the saved average: a fresh model with the weights of the best EMA epoch.
    ema_model = mlp(in_features=64, num_classes=data.num_classes)
    ema_model.load_state_dict(torch.load(ema_path, map_location="cpu", weights_only=True)["model_state_dict"])
    results = {
        "model_accuracy": accuracy(trainer.model, data.test),
        "ema_accuracy": accuracy(ema_model, data.test),
        "ema_best_epoch": ema.best_metric_epoch,
    }
    trainer.print(
        f"test accuracy: {results['model_accuracy']:.4f} with the trained weights, {results['ema_accuracy']:.4f} with "
        f"the average of epoch {results['ema_best_epoch']} (saved to {ema_path})"
    )
    leave_process_group()
    return results


if __name__ == "__main__":
    main()
