"""A training script that continues from its latest training state whenever it is started:
what `torchrun --max-restarts N` runs again after a worker dies.

python restartable.py OUT_DIR [--kill-rank R --kill-epoch E --kill-step S]

States are saved after every optimizer update (SaveTrainingStateCallback, keeping the newest
two) to OUT_DIR/states. With --kill-*, process R SIGKILLs itself after step S of epoch E, on the
first attempt only (torchrun's TORCHELASTIC_RESTART_COUNT is 0). Process 0 of the attempt that
finishes writes OUT_DIR/weights.pt and OUT_DIR/result.json; every attempt appends a line to
OUT_DIR/attempts.jsonl saying which state it resumed from.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch

from pa_callbacks import SaveTrainingStateCallback
from pa_core import Trainer, hookimpl, latest_training_state
from pa_core.testing import make_classification_dataset


class KillOnFirstAttempt:
    """SIGKILLs this process after a chosen step, as an out-of-memory kill or a lost machine would."""

    def __init__(self, rank: int, epoch: int, step: int) -> None:
        self.rank, self.epoch, self.step = rank, epoch, step

    @hookimpl
    def on_train_step_end(self, trainer, step):
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        here = trainer.run_history.current_epoch == self.epoch and step == self.step
        if first_attempt and here and trainer.accelerator.process_index == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--kill-rank", type=int, default=-1)
    parser.add_argument("--kill-epoch", type=int, default=0)
    parser.add_argument("--kill-step", type=int, default=0)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    states = args.out_dir / "states"
    resume_from = latest_training_state(states)  # None on the first start: a fresh run
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    callbacks = [
        KillOnFirstAttempt(args.kill_rank, args.kill_epoch, args.kill_step),
        SaveTrainingStateCallback(states, save_every_n_steps=1, save_at_end=False, max_checkpoints=2),
    ]
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=0.01), callbacks)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if trainer.is_world_process_zero:
        with open(args.out_dir / "attempts.jsonl", "a") as log:
            log.write(json.dumps({"attempt": attempt, "resume_from": str(resume_from) if resume_from else None}) + "\n")
    trainer.train(
        make_classification_dataset(num_samples=64),
        num_epochs=3,
        eval_dataset=make_classification_dataset(num_samples=16, seed=1),
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        resume_from=resume_from,
    )
    if trainer.is_world_process_zero:
        torch.save(trainer.get_model().state_dict(), args.out_dir / "weights.pt")
        losses = {name: trainer.run_history.get_metric_values(name) for name in ("train_loss_epoch", "eval_loss_epoch")}
        (args.out_dir / "result.json").write_text(json.dumps({"attempt": attempt, "losses": losses}))
    # Leave the process group together before exiting (a process that exits while another still
    # talks to it can abort in its exit handlers, which torchrun would count as a failure).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
