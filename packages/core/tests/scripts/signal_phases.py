"""A preemption signal at each phase of train() and evaluate(), on one process or several.

python signal_phases.py OUT_DIR   (or under torchrun)
For each phase the signal (SIGTERM; SIGINT for one phase) is sent to process 0 only, by
process 0 itself or, for data loading, by one of its DataLoader workers. Every process must stop
at the same place: the run raises TrainingPreempted (status 128 + signal) after saving a training
state and firing on_preemption; a new Trainer resumes from that state. Writes
OUT_DIR/rank<r>.json: per phase, the exit status, the on_preemption calls, whether the resumed
run's weights equal an uninterrupted run's bit for bit, and what else the phase checks.
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pa_core import Trainer, TrainingPreempted, hookimpl
from pa_core.testing import make_classification_dataset
from pa_core.training_state import find_training_state

RANK = int(os.environ.get("RANK", "0"))
TRAIN, EVAL = make_classification_dataset(num_samples=48), make_classification_dataset(num_samples=14, seed=1)


class SignallingDataset(Dataset):
    """TRAIN's samples; process 0's DataLoader worker sends the signal to its parent on fetching one."""

    def __init__(self, signal_at=None):
        self.signal_at = signal_at

    def __len__(self):
        return len(TRAIN)

    def __getitem__(self, index):
        if index == self.signal_at and RANK == 0:
            os.kill(os.getppid(), signal.SIGTERM)
        return TRAIN[index]


class SendSignal:
    """Sends ``signum`` to this process (process 0 only) when ``phase`` is reached."""

    def __init__(self, phase, signum=signal.SIGTERM):
        self.phase, self.signum, self.sent, self.preemptions = phase, signum, False, []
        self.saved_mid_run = None

    def _send(self, phase):
        if phase == self.phase and not self.sent and RANK == 0:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    @hookimpl
    def on_train_step_end(self, trainer, step):
        epoch = trainer.run_history.current_epoch
        if epoch == 1 and step == 3:
            self._send("train-step")
        if epoch == trainer.last_epoch and step == 2:
            self._send("last-epoch")

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates == 5 and self.phase == "during-save":
            self.saved_mid_run = os.path.join(os.environ["OUT_DIR"], "mid-run-save")
            trainer.save_training_state(self.saved_mid_run)  # state_dict() below signals during it

    def state_dict(self):
        self._send("during-save")
        return {}

    def load_state_dict(self, state):
        pass

    @hookimpl
    def on_eval_step_end(self, trainer):
        if trainer.run_state.training and trainer.run_history.current_epoch == 1:
            self._send("eval-epoch")
        if trainer.run_state.training and trainer.run_history.current_epoch == trainer.last_epoch:
            self._send("after-last-update")
        if not trainer.run_state.training:
            self._send("evaluate")

    @hookimpl
    def on_training_run_end(self):
        self._send("run-end")

    @hookimpl
    def on_preemption(self, signal_number, state_dir):
        self.preemptions.append([signal_number, state_dir])


def make_trainer(callbacks):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    return Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=callbacks)


def train(trainer, dataset, workers=0, resume_from=None):
    trainer.train(
        dataset,
        num_epochs=3,
        eval_dataset=EVAL,
        per_device_batch_size=4,
        train_dataloader_kwargs={"num_workers": workers},
        resume_from=resume_from,
    )
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def run_phase(phase, reference, out_dir, signum=signal.SIGTERM):
    sender = SendSignal(phase, signum)
    trainer = make_trainer([sender])
    trainer.preemption_save_dir = out_dir / phase
    result = {"status": None}
    data, workers = (SignallingDataset(signal_at=10), 2) if phase == "data-loading" else (TRAIN, 0)
    try:
        train(trainer, data, workers)
    except TrainingPreempted as stop:
        result["status"], result["epoch"], result["num_updates"] = stop.code, stop.epoch, stop.num_updates
    result["preemptions"] = sender.preemptions
    if sender.saved_mid_run is not None:
        find_training_state(sender.saved_mid_run)  # the save the signal arrived in finished
        result["save_finished"] = True
    resumed = train(make_trainer([SendSignal(None)]), TRAIN, resume_from=out_dir / phase)
    result["resumed_equals_uninterrupted"] = same_weights(resumed, reference)
    return result


def evaluate_phase(out_dir):
    sender = SendSignal("evaluate")
    trainer = make_trainer([sender])
    trainer.preemption_save_dir = out_dir / "evaluate"
    try:
        trainer.evaluate(EVAL, per_device_batch_size=4)
        status = None
    except TrainingPreempted as stop:
        status = stop.code
    return {"status": status, "preemptions": sender.preemptions, "saved": (out_dir / "evaluate").exists()}


def main():
    out_dir = Path(sys.argv[1])
    os.environ["OUT_DIR"] = str(out_dir)
    torch.set_num_threads(1)
    reference = train(make_trainer([]), TRAIN)
    phases = ["data-loading", "train-step", "eval-epoch", "last-epoch", "after-last-update", "run-end", "during-save"]
    results = {phase: run_phase(phase, reference, out_dir) for phase in phases}
    results["train-step-sigint"] = run_phase("train-step", reference, out_dir / "sigint", signal.SIGINT)
    results["evaluate"] = evaluate_phase(out_dir)
    (out_dir / f"rank{RANK}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # as torch asks of every multi-process script
