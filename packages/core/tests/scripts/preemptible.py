"""A training script the reliability tests start, signal, kill and resume.

python preemptible.py OUT_DIR [--resume] [--fail-rank1] [--sleep S] [--catch SIGTERM,SIGUSR1,...]
                        [--send-self SIGUSR1,SIGUSR1,...]
Writes OUT_DIR/ready.<rank> (holding the process id) after the 3rd optimizer update and
OUT_DIR/weights.pt at the end. --catch sets Trainer.preemption_signals; --send-self makes every
process send itself these signals, one after the other, after the 3rd update.
"""

import argparse
import json
import os
import signal
import time
from pathlib import Path

import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset


class Pace:
    """Slows each update down so a signal can arrive mid-run, and fails on purpose if asked."""

    def __init__(self, out_dir: Path, sleep: float, fail_rank1: bool, send_self: tuple[int, ...] = ()):
        self.out_dir, self.sleep, self.fail_rank1, self.send_self = out_dir, sleep, fail_rank1, send_self

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        rank = trainer.accelerator.process_index
        if num_updates == 3:
            (self.out_dir / f"ready.{rank}").write_text(str(os.getpid()))
            if self.fail_rank1 and rank == 1:
                raise RuntimeError("rank 1 fails on purpose")
            for signum in self.send_self:
                os.kill(os.getpid(), signum)
                time.sleep(0.05)  # each signal handled on its own
        time.sleep(self.sleep)


def _signals(names: str) -> tuple[signal.Signals, ...]:
    return tuple(signal.Signals[name] for name in names.split(",")) if names else ()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fail-rank1", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--catch", default="", help="comma-separated signal names for Trainer.preemption_signals")
    parser.add_argument("--send-self", default="", help="comma-separated signal names to send to itself")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=0.01),
        callbacks=[Pace(args.out_dir, args.sleep, args.fail_rank1, _signals(args.send_self))],
    )
    trainer.preemption_save_dir = args.out_dir / "preempted"
    if args.catch:
        trainer.preemption_signals = _signals(args.catch)
    trainer.train(
        make_classification_dataset(num_samples=64),
        num_epochs=3,
        eval_dataset=make_classification_dataset(num_samples=16, seed=1),
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        resume_from=args.out_dir / "preempted" if args.resume else None,
    )
    if trainer.run_config.is_world_process_zero:
        torch.save(trainer.model.state_dict(), args.out_dir / "weights.pt")
        losses = {name: trainer.run_history.get_metric_values(name) for name in ("train_loss_epoch", "eval_loss_epoch")}
        (args.out_dir / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # as torch asks of every multi-process script
