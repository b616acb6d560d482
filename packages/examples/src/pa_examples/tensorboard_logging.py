"""Watch a training run in TensorBoard with pa-tracking: losses, learning rate, throughput and memory.

The digits classifier of ``pa-examples run digits``, trained with a cosine learning-rate schedule
while ``TensorBoardCallback`` writes event files: the run config (HPARAMS tab), the training loss
and learning rate every few optimizer updates, every epoch's losses, and the figures of the
throughput monitor (samples per second, seconds per update, peak memory). The x-axis is the
optimizer update. At the end it prints the command that opens the run in TensorBoard.

    pa-examples run tensorboard                           # writes runs/<date>_<time>_<host>
    pa-examples run tensorboard --log-dir runs/cosine --epochs 20
    tensorboard --logdir runs                             # then open http://localhost:6006

Needs ``pip install "pa-examples[tensorboard]"`` (pa-tracking with TensorBoard).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

from pa_callbacks import ThroughputCallback, get_default_callbacks
from pa_core import Trainer
from pa_core.schedulers import CosineLrScheduler
from pa_examples.common import accuracy, digits_datasets, leave_process_group, mlp

__all__ = ["main"]


def main(argv: list[str] | None = None) -> Path | None:
    """Train with TensorBoard logging; return the run's folder (None on the other processes)."""
    parser = argparse.ArgumentParser(prog="pa-examples run tensorboard", description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", help="the run's folder (default: runs/<date>_<time>_<host>)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's peak learning rate (default: 0.003)")
    parser.add_argument("--log-every", type=int, default=5, help="optimizer updates between step logs (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 2 epochs only (for tests)")
    args = parser.parse_args(argv)

    try:
        from pa_tracking import TensorBoardCallback

        tensorboard = TensorBoardCallback(
            args.log_dir,
            config={"model": "mlp-128", "lr": args.lr},  # logged with the run config the Trainer provides
            log_every_n_updates=args.log_every,
        )
    except ImportError as error:
        raise SystemExit(
            f'This example needs pa-tracking with TensorBoard: pip install "pa-tracking[tensorboard]" ({error})'
        ) from None

    data = digits_datasets()
    torch.manual_seed(args.seed)
    model = mlp(in_features=64, num_classes=data.num_classes)
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=args.lr),
        # The tracker goes last, so it sees every metric the other callbacks record.
        callbacks=(*get_default_callbacks(), ThroughputCallback(log_every_n_updates=args.log_every), tensorboard),
    )
    trainer.train(
        data.train,
        num_epochs=2 if args.fast else args.epochs,
        eval_dataset=data.eval,
        per_device_batch_size=32,
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1),
    )
    trainer.print(f"test accuracy: {accuracy(trainer.model, data.test):.4f}")

    run_dir = tensorboard.run_dir
    if run_dir is not None:  # the main process, which wrote the run
        trainer.print(f"TensorBoard run written to {run_dir}; view it with:")
        trainer.print(f"    tensorboard --logdir {os.path.dirname(run_dir)}")
    leave_process_group()
    return Path(run_dir) if run_dir is not None else None


if __name__ == "__main__":
    main()
