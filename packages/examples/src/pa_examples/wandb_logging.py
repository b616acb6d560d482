"""Log a training run to Weights & Biases with pa-wandb (offline unless you say otherwise).

``WandbCallback`` starts a W&B run on the main process with the run config (batch sizes,
epochs, processes, ...) plus your own config, logs every run-history metric at the end of each
epoch, the training loss and learning rate every few updates, and uploads the best checkpoint
as a model artifact when training ends. It finishes the run, and marks it failed if training
raises.

The example runs W&B offline (no account needed) unless ``WANDB_MODE`` is set: the run is
written under ``--dir`` and ``wandb sync`` uploads it later. ``WANDB_MODE=online`` logs live.

    pa-examples run wandb --dir runs/wandb
    WANDB_MODE=online pa-examples run wandb --project my-project
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

from pa_callbacks import SaveBestModelCallback, get_default_callbacks
from pa_core import Trainer
from pa_examples.common import accuracy, digits_datasets, leave_process_group, mlp

__all__ = ["main"]


def main(argv: list[str] | None = None) -> Path | None:
    """Train with W&B logging; return the offline run's folder, if one was written."""
    parser = argparse.ArgumentParser(prog="pa-examples run wandb", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="pa-examples", help="the W&B project (default: pa-examples)")
    parser.add_argument("--name", help="the run's name (W&B picks one by default)")
    parser.add_argument("--dir", default="wandb_example", help="where W&B and the checkpoint write their files")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's learning rate (default: 0.003)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 2 epochs only (for tests)")
    args = parser.parse_args(argv)

    try:
        from pa_wandb import WandbCallback
    except ImportError as error:
        raise SystemExit(f"This example needs pa-wandb: pip install pa-wandb ({error}).") from None
    # Offline by default: nothing leaves the machine unless WANDB_MODE says so.
    os.environ.setdefault("WANDB_MODE", "offline")
    output_dir = Path(args.dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    data = digits_datasets()
    torch.manual_seed(args.seed)
    model = mlp(in_features=64, num_classes=data.num_classes)
    best_model_path = output_dir / "best_model.pt"
    wandb_callback = WandbCallback(
        project=args.project,
        name=args.name,
        dir=output_dir,
        tags=["pa-examples", "digits"],
        config={"model": "mlp-128", "lr": args.lr},  # added to the run config the Trainer provides
        log_every_n_steps=10,  # the training loss and learning rate every 10 optimizer updates
        log_checkpoints=best_model_path,  # uploaded as a model artifact when training ends
    )
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=args.lr),
        # The logger goes last, so it sees every metric the other callbacks wrote in the epoch.
        callbacks=(*get_default_callbacks(), SaveBestModelCallback(save_path=best_model_path), wandb_callback),
    )
    trainer.train(
        data.train, num_epochs=2 if args.fast else args.epochs, eval_dataset=data.eval, per_device_batch_size=32
    )
    trainer.print(f"test accuracy: {accuracy(trainer.model, data.test):.4f}")

    offline_runs = sorted((output_dir / "wandb").glob("offline-run-*"), key=os.path.getmtime)
    if os.environ["WANDB_MODE"] == "offline" and offline_runs:
        trainer.print(f"W&B run written to {offline_runs[-1]}; upload it with: wandb sync {offline_runs[-1]}")
    leave_process_group()
    return offline_runs[-1] if offline_runs else None


if __name__ == "__main__":
    main()
