"""Interrupt a run, then resume it exactly from a saved training state with train(resume_from=...).

``SaveTrainingStateCallback`` saves a complete training state (model, optimizer, scheduler, random
number generators, run history, callback states, the position in the run) after every epoch, to
``--output-dir``/epoch_N. Here the first run is interrupted on purpose after
``--interrupt-after-epoch`` epochs (a callback raises, standing in for a crash or a lost machine).
A new Trainer, built as a new process would build it, then continues with
``train(..., resume_from=latest_state)``: same epoch, same remaining schedule, same data order.
With ``--compare`` an uninterrupted run is trained too, and the weights compared.

SIGTERM and SIGINT (Ctrl-C) are handled too: set ``trainer.preemption_save_dir`` and the Trainer
saves a training state there before stopping, ready for ``resume_from``.

    pa-examples run resume --output-dir runs/resume --compare
    pa-examples run resume --output-dir runs/resume --resume-from runs/resume/epoch_2 --interrupt-after-epoch 0
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pa_callbacks import SaveTrainingStateCallback, get_default_callbacks
from pa_core import Trainer, TrainerCallback
from pa_core.schedulers import CosineLrScheduler
from pa_examples.common import digits_datasets, leave_process_group, mlp

__all__ = ["InterruptAfterEpoch", "SimulatedInterruption", "build_trainer", "latest_training_state", "main"]


class SimulatedInterruption(RuntimeError):
    """Stands in for whatever stops a real run: a crash, a pre-empted machine, a time limit."""


class InterruptAfterEpoch(TrainerCallback):
    """Raises :class:`SimulatedInterruption` at the end of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if trainer.run_history.current_epoch == self.epoch:
            raise SimulatedInterruption(f"training interrupted after epoch {self.epoch}")


def build_trainer(seed: int, save_dir: Path, interrupt_after_epoch: int = 0) -> Trainer:
    """The same Trainer every time, as a restarted script would build it."""
    torch.manual_seed(seed)
    model = mlp(in_features=64, num_classes=10)
    # Save after every epoch, keeping the two most recent states. The saving callback goes after
    # the others, so the state it saves includes what they did in the epoch.
    callbacks: list[Any] = [
        *get_default_callbacks(progress_bar=False),
        SaveTrainingStateCallback(save_dir=save_dir, save_every_n_epochs=1, save_at_end=False, max_checkpoints=2),
    ]
    if interrupt_after_epoch:
        callbacks.append(InterruptAfterEpoch(interrupt_after_epoch))
    return Trainer(model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=1e-2), callbacks)


def latest_training_state(save_dir: Path) -> Path:
    """The ``epoch_N`` folder with the largest N."""
    states = sorted(save_dir.glob("epoch_*"), key=lambda path: int(path.name.split("_")[1]))
    if not states:
        raise SystemExit(f"No training state in {save_dir}: nothing to resume from.")
    return states[-1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, interrupt, resume (and compare with ``--compare``); return the eval losses and more."""
    parser = argparse.ArgumentParser(prog="pa-examples run resume", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the whole run (default: 6)")
    parser.add_argument("--interrupt-after-epoch", type=int, default=3, help="0: no interruption (default: 3)")
    parser.add_argument("--output-dir", default="resume_example", help="where training states are saved")
    parser.add_argument("--resume-from", help="continue from this training state instead of starting afresh")
    parser.add_argument("--compare", action="store_true", help="also train without interruption and compare")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="a 2-epoch run interrupted after epoch 1 (for tests)")
    args = parser.parse_args(argv)
    if args.fast:
        args.epochs, args.interrupt_after_epoch = 2, min(args.interrupt_after_epoch, 1)
    save_dir = Path(args.output_dir)
    data = digits_datasets()

    def train(trainer: Trainer, resume_from: Path | None = None) -> None:
        trainer.train(
            data.train,
            num_epochs=args.epochs,
            eval_dataset=data.eval,
            per_device_batch_size=32,
            create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1),
            resume_from=resume_from,
        )

    resume_from = Path(args.resume_from) if args.resume_from else None
    if resume_from is None:
        trainer = build_trainer(args.seed, save_dir, args.interrupt_after_epoch)
        try:
            train(trainer)
        except SimulatedInterruption as interruption:
            trainer.print(f"\n*** {interruption} ***")
            resume_from = latest_training_state(save_dir)

    if resume_from is not None:
        trainer = build_trainer(args.seed, save_dir)  # a fresh start, as after a restart
        trainer.print(f"\nResuming from {resume_from}")
        train(trainer, resume_from=resume_from)

    results: dict[str, Any] = {
        "eval_losses": trainer.run_history.get_metric_values("eval_loss_epoch"),
        "resumed_from": resume_from,
    }
    if args.compare:
        trainer.print("\nTraining once more, without interruption, to compare")
        uninterrupted = build_trainer(args.seed, save_dir / "uninterrupted")
        train(uninterrupted)
        same = all(
            torch.equal(a, b)
            for a, b in zip(trainer.model.state_dict().values(), uninterrupted.model.state_dict().values())
        )
        results["same_weights_as_uninterrupted"] = same
        trainer.print(f"same weights as the uninterrupted run: {same}")
    leave_process_group()
    return results


if __name__ == "__main__":
    main()
