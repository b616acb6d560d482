"""Fault tolerance beyond one process: finding the latest state, resuming on another number of
processes, and SIGUSR1 (SLURM's --signal) through torchrun and accelerate launch.

Multi-process runs are real torchrun / accelerate launch launches on CPU (gloo), each under a
timeout, in a ProcessTree whose every process is killed when the test ends however it ends.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pa_core
from pa_core import CheckpointError, Trainer, TrainingPreempted, hookimpl, latest_training_state, read_training_state
from pa_core.cli import main as pa_main
from pa_core.testing import (
    ProcessTree,
    make_classification_dataset,
    run_process_tree,
    tiny_classifier,
    torchrun_command,
)
from pa_core.training_state import (
    TRAINER_STATE_FILE,
    check_training_state_files,
    is_epoch_boundary,
    reseed_unmapped_process,
)

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from resizable import SaveStates  # noqa: E402  (the state saver the launched scripts use)

RESIZABLE = SCRIPTS / "resizable.py"
PREEMPTIBLE = SCRIPTS / "preemptible.py"
LAUNCH_TIMEOUT = 240  # seconds for one launch on a busy 2-core machine


def launch_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a launch: no inherited launcher variables, one thread, scratch in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    scratch = tmp_path / "scratch"  # torchrun leaves torchelastic_* folders in the temporary directory
    scratch.mkdir(exist_ok=True)
    env.update(TMPDIR=str(scratch), OMP_NUM_THREADS="1", PA_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def run(command: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    result = run_process_tree(command, timeout=LAUNCH_TIMEOUT, env={**launch_env(tmp_path), **env})
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return result


def launch(script: Path, *args: str, processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, str(script), *args]
    return torchrun_command(str(script), *args, num_processes=processes)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same_weights(actual: dict, expected: dict, atol: float = 0.0) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=atol, msg=name)


# ----------------------------------------------------------------------------------------
# latest_training_state and `pa state`
# ----------------------------------------------------------------------------------------


def small_trainer(callbacks=()):
    model = tiny_classifier()
    return Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=0.01), list(callbacks))


def test_latest_training_state_is_exported_and_none_means_a_fresh_start(tmp_path):
    assert pa_core.latest_training_state is latest_training_state
    assert latest_training_state(tmp_path / "missing") is None
    assert latest_training_state(tmp_path) is None
    trainer = small_trainer()
    trainer.train(make_classification_dataset(num_samples=16), num_epochs=1, resume_from=None)  # a fresh start
    assert trainer.run_history.current_epoch == 2
    trainer.save_training_state(tmp_path / "older")
    trainer.save_training_state(tmp_path / "newer")
    (tmp_path / "not-a-state").mkdir()
    shutil.copytree(tmp_path / "newer", tmp_path / "copying.incomplete")  # a save in progress
    assert latest_training_state(tmp_path) == tmp_path / "newer"
    assert latest_training_state(tmp_path / "older") == tmp_path / "older"  # the folder itself

    # A state missing a file it was saved with (half-deleted, half-copied) is not complete.
    (tmp_path / "newer" / "optimizer.bin").unlink()
    assert latest_training_state(tmp_path) == tmp_path / "older"
    (tmp_path / "older" / TRAINER_STATE_FILE).write_bytes(b"damaged")
    assert latest_training_state(tmp_path) is None


def save_numbered_states_forever(folder: Path, markers: Path) -> None:
    """Save training states step_1, step_2, ... keeping the newest two, as SaveTrainingStateCallback
    does; an empty marker file says each save is complete."""
    trainer = small_trainer()
    trainer.train(make_classification_dataset(num_samples=16), num_epochs=1)
    number = 0
    while True:
        number += 1
        trainer.save_training_state(folder / f"step_{number}", checkpoint_kwargs={"number": number})
        (markers / str(number)).touch()
        if number > 2:
            shutil.rmtree(folder / f"step_{number - 2}")


@pytest.mark.slow
def test_latest_training_state_never_returns_a_state_caught_mid_save(tmp_path):
    rng = random.Random(4321)
    folder, markers = tmp_path / "states", tmp_path / "markers"
    folder.mkdir()
    for _ in range(8):
        markers.mkdir()
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed
            try:
                save_numbered_states_forever(folder, markers)
            finally:
                os._exit(1)
        deadline = time.monotonic() + 60
        while not any(markers.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        confirmed = max(int(marker.name) for marker in markers.iterdir())  # saves known to be complete
        latest = latest_training_state(folder)
        assert latest is not None
        check_training_state_files(latest)  # every file it was saved with is there and loads
        assert read_training_state(latest).checkpoint_kwargs["number"] >= confirmed
        shutil.rmtree(markers)
        survivor = tmp_path / "survivor"
        shutil.rmtree(survivor, ignore_errors=True)
        shutil.copytree(latest, survivor)
        shutil.rmtree(folder)  # the next child numbers its states from 1 again
        folder.mkdir()
    assert latest_training_state(folder) is None
    resumed = small_trainer()
    resumed.train(make_classification_dataset(num_samples=16), num_epochs=2, resume_from=survivor)
    assert resumed.run_history.current_epoch == 3


@pytest.fixture
def saved_states(tmp_path):
    """One process, 48 samples in batches of 8, 2 accumulation steps: 3 updates per epoch, 2 epochs."""
    trainer = small_trainer([SaveStates(tmp_path / "states")])
    trainer.train(make_classification_dataset(num_samples=48), num_epochs=2, per_device_batch_size=8,
                  gradient_accumulation_steps=2)  # fmt: skip
    return tmp_path / "states"


def test_pa_state_inspect_and_latest(saved_states, capsys):
    assert pa_main(["state", "inspect", str(saved_states / "step_2")]) == 0
    out = capsys.readouterr().out
    for line in (
        "epoch:             1 (after 4 of 6 training steps)",
        "optimizer updates: 2",
        "world size:        1",
        "per-device batch:  8",
        "accumulation:      2",
        "global batch:      16",
        "resumes on:        1 process with 8 samples per device only (saved in the middle of an epoch)",
        "files:             model.safetensors, optimizer.bin, pa_trainer_state.pt, random_states_0.pkl",
    ):
        assert line in out, out
    assert pa_main(["state", "inspect", str(saved_states / "step_3")]) == 0
    assert "resumes on:        any number of processes (saved at an epoch boundary)" in capsys.readouterr().out
    assert pa_main(["state", "inspect", str(saved_states / "epoch_1")]) == 0
    assert "epoch:             1 (at its end)" in capsys.readouterr().out

    # A folder of states: each is described, and the newest is named.
    assert pa_main(["state", "inspect", str(saved_states)]) == 0
    out = capsys.readouterr().out
    assert out.count("training state ") == 8
    assert out.rstrip().endswith("(the newest complete state here: what latest_training_state returns)")
    assert f"training state {saved_states / 'epoch_2'}" in out.split("\n\n")[-1]
    assert pa_main(["state", "latest", str(saved_states)]) == 0
    assert capsys.readouterr().out.strip() == str(saved_states / "epoch_2")
    assert pa_main(["state", "latest", str(saved_states / "nothing")]) == 1
    assert "No complete training state" in capsys.readouterr().err
    assert pa_main(["state", "inspect", str(saved_states / "nothing")]) == 1
    assert "is not a training state" in capsys.readouterr().err


def test_epoch_boundaries():
    assert is_epoch_boundary({"epoch_step": 0, "epoch_done": False})
    assert is_epoch_boundary({"epoch_step": 0, "train_done": True, "epoch_done": False})
    assert is_epoch_boundary({"epoch_step": 5, "epoch_done": True})
    assert is_epoch_boundary({"epoch_step": 6, "epoch_length": 6, "sized": True})
    assert not is_epoch_boundary({"epoch_step": 4, "epoch_length": 6, "sized": True})
    # Iterable data: its last update is not a boundary (the stream's position is per process).
    assert not is_epoch_boundary({"epoch_step": 6, "epoch_length": 6, "sized": False})
    assert not is_epoch_boundary({"epoch_step": 6, "epoch_length": None, "sized": True})


def test_processes_without_a_saved_random_state_are_reseeded_deterministically():
    draws = {}
    for process_index in (2, 2, 3):
        seed = reseed_unmapped_process(42, process_index, num_updates=8)
        draws.setdefault(process_index, []).append((seed, torch.rand(3), random.random()))
    (first, second), (other,) = draws[2], draws[3]
    assert first[0] == second[0] and torch.equal(first[1], second[1]) and first[2] == second[2]
    assert other[0] != first[0] and not torch.equal(other[1], first[1])
    assert reseed_unmapped_process(42, 2, num_updates=9) != first[0]  # another state, other numbers


def test_a_new_batch_size_resumes_from_an_epoch_boundary_only(saved_states, capsys):
    data = make_classification_dataset(num_samples=48)
    results = {}
    for name in ("epoch_1", "step_3"):  # the end of epoch 1, and its last update (its data all consumed)
        trainer = small_trainer()
        trainer.train(data, num_epochs=2, per_device_batch_size=4, gradient_accumulation_steps=2,
                      resume_from=saved_states / name)  # fmt: skip
        out = capsys.readouterr().out
        assert (
            f"Resuming {str(saved_states / name)!r}, saved on 1 process with 8 samples per device, on 1 process with "
            "4 samples per device: global batch size 16 -> 8 samples per optimizer update (4 per device x 1 process "
            "x 2 accumulation steps); the learning rate and the scheduler continue from optimizer update 3 unchanged."
        ) in out
        assert trainer.run_state.num_updates == 3 + 6
        results[name] = trainer.run_history.get_metric_values("train_loss_epoch")
    assert results["epoch_1"] == results["step_3"]
    assert len(results["epoch_1"]) == 2

    with pytest.raises(CheckpointError) as error:
        small_trainer().train(data, num_epochs=2, per_device_batch_size=4, gradient_accumulation_steps=2,
                              resume_from=saved_states / "step_2")  # fmt: skip
    message = str(error.value)
    assert "saved in the middle of epoch 1 (after 4 of 6 training steps) on 1 process with 8 samples" in message
    assert "Resume it on 1 process with per_device_batch_size=8, or resume from a state saved at an epoch" in message
    # A new run that only starts from the weights of a mid-epoch state is another matter: allowed.
    trainer = small_trainer([LoadWeightsAtStart(saved_states / "step_2")])
    trainer.train(data, num_epochs=1, per_device_batch_size=4)
    assert trainer.run_state.num_updates == 12


class LoadWeightsAtStart:
    def __init__(self, state):
        self.state = state

    @hookimpl
    def on_training_run_start(self, trainer):
        trainer.load_training_state(self.state, restore_position=False)


# ----------------------------------------------------------------------------------------
# Another number of processes: 2 -> 1, 2 -> 3, 1 -> 2 at an epoch boundary
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """resizable.py on 2 processes with 12 samples per device: 2 updates per epoch, 3 epochs."""
    out = tmp_path_factory.mktemp("two-processes")
    run(launch(RESIZABLE, str(out), "--batch", "12", processes=2), out)
    return out, json.loads((out / "result.json").read_text())


def resume(tmp_path, state, processes, batch):
    out = tmp_path / f"resumed-on-{processes}"
    out.mkdir()
    result = run(launch(RESIZABLE, str(out), "--batch", str(batch), "--resume-from", str(state), processes=processes),
                 tmp_path)  # fmt: skip
    return out, json.loads((out / "result.json").read_text()), result.stdout + result.stderr


def assert_every_sample_once_per_epoch(result):
    expected = sorted(make_classification_dataset(num_samples=48, seed=0).tensors[0][:, 0].tolist())
    for epoch, seen in result["samples_seen"].items():
        assert seen == pytest.approx(expected), f"epoch {epoch}"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_to_one_at_an_epoch_boundary(two_process_run, tmp_path):
    reference_dir, reference = two_process_run
    assert reference["num_processes"] == 2 and reference["updates_per_epoch"] == 2
    state = reference_dir / "states" / "epoch_1"
    assert read_training_state(state).world_size == 2
    # 1 process x 24 samples: the same 24 samples per update as 2 x 12, so the same run.
    out, result, output = resume(tmp_path, state, processes=1, batch=24)
    assert (
        "saved on 2 processes with 12 samples per device, on 1 process with 24 samples per device: global batch size "
        "24 samples per optimizer update (24 per device x 1 process x 1 accumulation step), unchanged; " in output
    )
    assert "re-seeded" not in output  # process 0 has its own random state
    assert result["num_updates"] == result["callback_count"] == result["scheduler_position"] == 6
    assert result["optimizer_steps"] == [6]
    assert result["train_loss_epoch"][0] == reference["train_loss_epoch"][0]  # epoch 1 came with the state
    assert result["train_loss_epoch"] == pytest.approx(reference["train_loss_epoch"], rel=1e-5)
    assert list(result["samples_seen"]) == ["2", "3"]
    assert_every_sample_once_per_epoch(result)
    assert_same_weights(load_weights(out / "weights.pt"), load_weights(reference_dir / "weights.pt"), atol=1e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_to_three_from_the_last_update_of_an_epoch(two_process_run, tmp_path):
    reference_dir, reference = two_process_run
    state = reference_dir / "states" / "step_2"  # epoch 1's last update: its end hooks had not run yet
    assert read_training_state(state).at_epoch_boundary
    # 3 processes x 8 samples: again the same 24 samples per update.
    out, result, output = resume(tmp_path, state, processes=3, batch=8)
    assert "on 3 processes with 8 samples per device: global batch size 24 samples per optimizer update (8 " in output
    assert "holds no random state for process index 2 of this run" in output
    assert result["num_updates"] == result["callback_count"] == result["scheduler_position"] == 6
    assert result["lr"] == pytest.approx(reference["lr"])
    # Epoch 1 ends in the resumed run (no more steps): its loss is the one the 2-process run recorded.
    assert result["train_loss_epoch"] == pytest.approx(reference["train_loss_epoch"], rel=1e-5)
    assert list(result["samples_seen"]) == ["1", "2", "3"] and result["samples_seen"]["1"] == []
    result["samples_seen"].pop("1")
    assert_every_sample_once_per_epoch(result)
    assert_same_weights(load_weights(out / "weights.pt"), load_weights(reference_dir / "weights.pt"), atol=1e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_one_process_to_two_with_a_larger_global_batch(tmp_path):
    first = tmp_path / "one-process"
    first.mkdir()
    run(launch(RESIZABLE, str(first), "--batch", "24", processes=1), tmp_path)
    one = json.loads((first / "result.json").read_text())
    assert one["updates_per_epoch"] == 2
    out, result, output = resume(tmp_path, first / "states" / "epoch_1", processes=2, batch=24)
    assert (
        "saved on 1 process with 24 samples per device, on 2 processes with 24 samples per device: global batch size "
        "24 -> 48 samples per optimizer update (24 per device x 2 processes x 1 accumulation step)" in output
    )
    assert "holds no random state for process index 1 of this run" in output
    # Epoch 1: 2 updates of 24 samples; epochs 2 and 3: 1 update of 48 each. Every position continues.
    assert result["updates_per_epoch"] == 1
    assert result["num_updates"] == result["callback_count"] == result["scheduler_position"] == 4
    assert result["optimizer_steps"] == [4]
    assert result["lr"] == pytest.approx(0.05 * 0.5**2)  # StepLR(step_size=2) after 4 updates
    assert result["train_loss_epoch"][0] == one["train_loss_epoch"][0]
    assert len(result["train_loss_epoch"]) == 3
    assert_every_sample_once_per_epoch(result)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_mid_epoch_state_refuses_another_number_of_processes(two_process_run, tmp_path):
    reference_dir, _ = two_process_run
    result = run_process_tree(
        launch(RESIZABLE, str(tmp_path), "--batch", "24", "--resume-from", str(reference_dir / "states" / "step_1"),
               processes=1),
        timeout=LAUNCH_TIMEOUT,
        env=launch_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 1
    assert "CheckpointError" in result.stderr
    assert "was saved in the middle of epoch 1 (after 1 of 2 training steps) on 2 processes" in result.stderr
    assert "Resume it on 2 processes with per_device_batch_size=12, or resume from a state saved at an" in result.stderr


# ----------------------------------------------------------------------------------------
# SIGUSR1 (SLURM's --signal=USR1@90)
# ----------------------------------------------------------------------------------------


class SendSignal:
    def __init__(self, at, signum):
        self.at, self.signum = at, signum

    @hookimpl
    def on_train_update_end(self, num_updates):
        if num_updates == self.at:
            os.kill(os.getpid(), self.signum)


def test_sigusr1_stops_with_status_138(tmp_path):
    trainer = small_trainer([SendSignal(2, signal.SIGUSR1)])
    trainer.preemption_signals = (signal.SIGTERM, signal.SIGUSR1)
    trainer.preemption_save_dir = tmp_path / "preempted"
    with pytest.raises(TrainingPreempted) as stopped:
        trainer.train(make_classification_dataset(num_samples=64), num_epochs=2, per_device_batch_size=4)
    assert stopped.value.code == 138 == 128 + signal.SIGUSR1
    assert "Training stopped by SIGUSR1 in epoch 1 after 2 optimizer updates" in str(stopped.value)
    assert latest_training_state(tmp_path) == tmp_path / "preempted"
    assert read_training_state(tmp_path / "preempted").num_updates == 2
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # restored after the run


@pytest.mark.slow
def test_the_same_signal_delivered_twice_counts_once(tmp_path):
    # On a cluster the scheduler signals every process of the job step, and the launcher forwards
    # the signal it got to its workers too: each worker receives it twice, a moment apart.
    result = run_process_tree(
        [sys.executable, str(PREEMPTIBLE), str(tmp_path), "--catch", "SIGTERM,SIGUSR1", "--send-self",
         "SIGUSR1,SIGUSR1"],
        timeout=LAUNCH_TIMEOUT,
        env=launch_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 138, result.stderr[-3000:]
    assert "Training stopped by SIGUSR1 in epoch 1 after 3 optimizer updates" in result.stdout
    assert read_training_state(tmp_path / "preempted").num_updates == 3


@pytest.mark.slow
def test_a_different_second_signal_still_acts_at_once(tmp_path):
    result = run_process_tree(
        [sys.executable, str(PREEMPTIBLE), str(tmp_path), "--catch", "SIGTERM,SIGUSR1", "--send-self",
         "SIGUSR1,SIGTERM"],
        timeout=LAUNCH_TIMEOUT,
        env=launch_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == -signal.SIGTERM  # ended by SIGTERM's default action, before any save
    assert latest_training_state(tmp_path) is None


@pytest.fixture(scope="module")
def preemptible_reference(tmp_path_factory):
    """preemptible.py on 2 processes, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    run(torchrun_command(str(PREEMPTIBLE), str(out)), out)
    return load_weights(out / "weights.pt")


def worker_pids(out: Path, processes: int = 2) -> list[int]:
    pids = []
    for rank in range(processes):
        text = ""
        while not text:  # the file may be caught between its creation and its content
            text = (out / f"ready.{rank}").read_text()
        pids.append(int(text))
    return pids


def wait_until_ready(tree: ProcessTree, out: Path, processes: int = 2) -> list[int]:
    tree.wait_for(lambda: all((out / f"ready.{r}").exists() for r in range(processes)), 120, "the third update")
    return worker_pids(out, processes)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigusr1_to_the_workers_of_torchrun_saves_and_resumes_exactly(preemptible_reference, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    command = torchrun_command(str(PREEMPTIBLE), str(out), "--sleep", "0.2", "--catch", "SIGTERM,SIGINT,SIGUSR1")
    with ProcessTree(command, env=launch_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True) as tree:  # fmt: skip
        workers = wait_until_ready(tree, out)
        assert sorted(workers) == tree.pids(exclude_root=True)
        tree.signal(signal.SIGUSR1, workers)  # not torchrun: SIGUSR1 would end torchrun itself
        output = tree.communicate(timeout=60)
    # The workers exit with 138 once the state is saved; torchrun reports them and exits with 1. (It
    # stops the group as soon as one has exited: a worker still exiting then shows SIGTERM, -15.)
    assert tree.returncode == 1
    codes = re.findall(r"exitcode  : (-?\d+)", output)
    assert "138" in codes and set(codes) <= {"138", "-15"}, output[-4000:]
    assert "Training stopped by SIGUSR1" in output
    state = latest_training_state(out)
    assert state == out / "preempted"
    assert not (out / "weights.pt").exists()

    run(torchrun_command(str(PREEMPTIBLE), str(out), "--resume"), tmp_path)
    assert_same_weights(load_weights(out / "weights.pt"), preemptible_reference)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigusr1_forwarded_by_accelerate_launch_and_sent_to_every_process_exits_138(tmp_path):
    # As on a SLURM cluster: the signal reaches every process of the job step (the launcher and its
    # workers), and the launcher, told to handle SIGUSR1, forwards it to the workers again.
    out = tmp_path / "run"
    out.mkdir()
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(pa_core.testing.free_port()),
        str(PREEMPTIBLE), str(out), "--sleep", "0.2", "--catch", "SIGTERM,SIGINT,SIGUSR1",
    ]  # fmt: skip
    env = {**launch_env(tmp_path), "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGUSR1"}
    with ProcessTree(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as tree:
        workers = wait_until_ready(tree, out)
        tree.signal(signal.SIGUSR1, [tree.process.pid, *workers])
        output = tree.communicate(timeout=60)
    assert tree.returncode == 128 + signal.SIGUSR1, output[-4000:]
    assert "Training stopped by SIGUSR1" in output
    info = read_training_state(out / "preempted")
    assert info.world_size == 2 and 3 <= info.num_updates <= 6
    check_training_state_files(info.path)
