"""A training run the world-size tests start on 1, 2 or 3 processes, and resume on another number.

python resizable.py OUT_DIR --batch B [--resume-from STATE]

Trains a small classifier (no dropout) for 3 epochs on 48 samples with AdamW and a StepLR
schedule, saving a training state after every optimizer update (OUT_DIR/states/step_N) and
every epoch (OUT_DIR/states/epoch_N). The world's main process writes OUT_DIR/weights.pt and
OUT_DIR/result.json: update count, optimizer and scheduler positions, a stateful callback's
count, the run history, and which samples each epoch trained on (gathered from every process).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset

EPOCHS = 3
DATA = make_classification_dataset(num_samples=48, seed=0)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


class SaveStates:
    """Saves a training state after every optimizer update and at every epoch's end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        trainer.save_training_state(self.folder / f"step_{num_updates}")

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        trainer.save_training_state(self.folder / f"epoch_{trainer.run_history.current_epoch}")


class CountUpdates:
    """A stateful callback: its count must travel with the training state."""

    def __init__(self) -> None:
        self.count = 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]

    @hookimpl
    def on_train_update_end(self):
        self.count += 1


class SamplesSeen:
    """Which samples each epoch trained on, over every process (gathered at the epoch's end)."""

    def __init__(self) -> None:
        self.local: list[torch.Tensor] = []
        self.epochs: dict[int, list[float]] = {}

    @hookimpl
    def on_train_step_end(self, batch, batch_output):
        if batch_output["batch_size"]:
            self.local.append(batch[0][:, 0])

    @hookimpl
    def on_train_epoch_end(self, trainer):
        local = torch.cat(self.local) if self.local else torch.empty(0, device=trainer.device)
        self.epochs[trainer.run_history.current_epoch] = sorted(trainer.gather(local).tolist())
        self.local = []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--resume-from", type=Path)
    args = parser.parse_args()
    model = make_model()
    counter, seen = CountUpdates(), SamplesSeen()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=0.05),
        callbacks=[counter, seen, SaveStates(args.out_dir / "states")],
    )
    trainer.train(
        DATA,
        num_epochs=EPOCHS,
        per_device_batch_size=args.batch,
        create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.5),
        resume_from=args.resume_from,
    )
    if trainer.is_world_process_zero:
        torch.save(trainer.get_model().state_dict(), args.out_dir / "weights.pt")
        optimizer_steps = {int(v["step"]) for v in trainer.optimizer.state_dict()["state"].values()}
        result = {
            "num_processes": trainer.num_processes,
            "num_updates": trainer.run_state.num_updates,
            "updates_per_epoch": trainer.run_config.num_update_steps_per_epoch,
            "optimizer_steps": sorted(optimizer_steps),
            "scheduler_position": trainer.scheduler.last_epoch,
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "callback_count": counter.count,
            "train_loss_epoch": trainer.run_history.get_metric_values("train_loss_epoch"),
            "samples_seen": {str(epoch): values for epoch, values in seen.epochs.items()},
        }
        (args.out_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # as torch asks of every multi-process script
