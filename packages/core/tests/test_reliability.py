"""Reliability: saves that survive SIGKILL, preemption by SIGTERM, failures that end every process."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pa_core import Trainer, UnsafeCheckpointError
from pa_core._serialization import safe_load
from pa_core.testing import make_classification_dataset, tiny_classifier, torchrun_command
from pa_core.training_state import TRAINER_STATE_FILE, check_training_state_files, find_training_state

SCRIPT = Path(__file__).parent / "scripts" / "preemptible.py"


def _trained_trainer():
    model = tiny_classifier()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=0.01), callbacks=[])
    trainer.train(make_classification_dataset(num_samples=16), num_epochs=1)
    return trainer


def _save_forever(directory: Path) -> None:
    trainer = _trained_trainer()
    iteration = 0
    while True:
        iteration += 1
        trainer.save_checkpoint(directory / "checkpoint.pt", checkpoint_kwargs={"iteration": iteration})
        trainer.save_training_state(directory / "state", checkpoint_kwargs={"iteration": iteration})
        if iteration == 1:
            (directory / "first-save-done").touch()


def _assert_complete(directory: Path) -> None:
    checkpoint = safe_load(directory / "checkpoint.pt")
    assert set(checkpoint) == {"model_state_dict", "optimizer_state_dict", "iteration"}
    state_dir = find_training_state(directory / "state")
    check_training_state_files(state_dir)
    names = set(os.listdir(state_dir))
    assert {TRAINER_STATE_FILE, "model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= names
    assert safe_load(state_dir / TRAINER_STATE_FILE)["checkpoint_kwargs"]["iteration"] >= 1


@pytest.mark.slow
def test_saves_killed_at_random_moments_always_leave_a_complete_checkpoint(tmp_path):
    rng = random.Random(1234)
    for _ in range(20):
        (tmp_path / "first-save-done").unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed
            try:
                _save_forever(tmp_path)
            finally:
                os._exit(1)
        deadline = time.monotonic() + 60
        while not (tmp_path / "first-save-done").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _assert_complete(tmp_path)
    # And the state that survived really resumes a run.
    resumed = _trained_trainer()
    resumed.train(make_classification_dataset(num_samples=16), num_epochs=2, resume_from=tmp_path / "state")
    assert len(resumed.run_history.get_metric_values("train_loss_epoch")) == 2


def _run(args, timeout=120, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def _wait_for(paths, process, timeout=60):
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never reached its third update"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.multiprocess)])
def test_sigterm_stops_saves_and_resumes_exactly(tmp_path, processes, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # torchrun leaves folders in the temporary directory
    launch = (lambda *a: torchrun_command(*a)) if processes == 2 else (lambda *a: [sys.executable, *a])
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    reference.mkdir(), interrupted.mkdir()
    result = _run(launch(str(SCRIPT), str(reference)))
    assert result.returncode == 0, result.stderr

    process = subprocess.Popen(
        launch(str(SCRIPT), str(interrupted), "--sleep", "0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for([interrupted / f"ready.{rank}" for rank in range(processes)], process)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert process.returncode != 0
    if processes == 1:
        assert process.returncode == 128 + signal.SIGTERM
    assert "Training stopped by SIGTERM" in output and "resume_from=" in output
    assert (interrupted / "preempted" / TRAINER_STATE_FILE).is_file()
    assert not (interrupted / "weights.pt").exists()

    result = _run(launch(str(SCRIPT), str(interrupted), "--resume"))
    assert result.returncode == 0, result.stderr
    expected = torch.load(reference / "weights.pt", weights_only=True)
    resumed = torch.load(interrupted / "weights.pt", weights_only=True)
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0)
    # The interrupted epoch's loss too: its first part was computed before the interruption.
    expected_losses = json.loads((reference / "losses.json").read_text())
    resumed_losses = json.loads((interrupted / "losses.json").read_text())
    for name, values in expected_losses.items():
        assert resumed_losses[name] == pytest.approx(values, rel=1e-6), name


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_failure_on_rank_1_ends_rank_0(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    started = time.monotonic()
    result = _run(torchrun_command(str(SCRIPT), str(tmp_path), "--fail-rank1", "--sleep", "0.2"), timeout=90)
    assert result.returncode != 0
    assert time.monotonic() - started < 60
    assert "rank 1 fails on purpose" in result.stdout + result.stderr
    assert not (tmp_path / "weights.pt").exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("file_name", ["optimizer.bin", "random_states_0.pkl", TRAINER_STATE_FILE])
def test_each_file_of_a_training_state_is_loaded_safely(tmp_path, file_name):
    trainer = _trained_trainer()
    state_dir = tmp_path / "state"
    trainer.save_training_state(state_dir)
    marker = tmp_path / "code-ran"
    with open(state_dir / file_name, "wb") as handle:
        pickle.dump({"payload": _RunsCode(str(marker))}, handle)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=False"):
        _trained_trainer().train(make_classification_dataset(num_samples=16), num_epochs=2, resume_from=state_dir)
    assert not marker.exists()


def test_a_state_interrupted_between_folder_swaps_is_recovered(tmp_path):
    trainer = _trained_trainer()
    trainer.save_training_state(tmp_path / "state")
    os.replace(tmp_path / "state", tmp_path / "state.old")  # the moment between the two renames
    with pytest.warns(UserWarning, match="save was interrupted"):
        trainer.train(make_classification_dataset(num_samples=16), num_epochs=2, resume_from=tmp_path / "state")
    assert trainer.run_history.current_epoch == 3


def test_non_finite_epoch_loss_is_reported_once(make_trainer):
    data = make_classification_dataset(num_samples=16)
    data.tensors[0][3] = float("nan")
    trainer = make_trainer()
    with pytest.warns(RuntimeWarning, match="train_loss_epoch is nan in epoch 1") as record:
        trainer.train(data, num_epochs=3)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
