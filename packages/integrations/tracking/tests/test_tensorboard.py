"""TensorBoardCallback on real Trainer runs; the event files are read back with TensorBoard's EventAccumulator."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml

from pa_core import Trainer
from pa_core.testing import CountHostSyncs, make_classification_dataset
from pa_tracking import TensorBoardCallback


def steps(points):
    return [step for step, _ in points]


def values(points):
    return [value for _, value in points]


def test_epoch_metrics_running_loss_and_learning_rates_with_update_steps(
    make_trainer, read_scalars, record_batch_losses, train_data, eval_data, tmp_path
):
    losses = record_batch_losses()
    callback = TensorBoardCallback(tmp_path / "tb" / "first", config={"model": "mlp"}, log_every_n_updates=2)
    trainer = make_trainer([losses, callback])
    scheduler = lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: 1 / (n + 1))  # noqa: E731
    # 5 updates per epoch: epoch ends at updates 5, 10 and 15; step logs at updates 2, 4, ..., 14.
    trainer.train(
        train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8, create_scheduler_fn=scheduler
    )

    assert callback.run_dir == str(tmp_path / "tb" / "first")
    scalars = read_scalars(callback.run_dir)
    history = trainer.run_history
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert steps(scalars[name]) == [5, 10, 15]
        assert values(scalars[name]) == pytest.approx(history.get_metric_values(name), rel=1e-6)
    assert scalars["epoch"] == [(5, 1.0), (10, 2.0), (15, 3.0)]
    # The learning rate after the scheduler stepped n times, at update n.
    assert steps(scalars["lr"]) == [2, 4, 6, 8, 10, 12, 14]
    assert values(scalars["lr"]) == pytest.approx([0.1 / (n + 1) for n in (2, 4, 6, 8, 10, 12, 14)], rel=1e-6)
    # The mean loss of the batches since the previous log, never across an epoch start (batch 5 of
    # each epoch is in no window: the epoch ends at update 5, 10, 15).
    batch = losses.losses
    windows = [(0, 2), (2, 4), (5, 6), (6, 8), (8, 10), (10, 12), (12, 14)]
    assert steps(scalars["train_loss_step"]) == [2, 4, 6, 8, 10, 12, 14]
    expected = [sum(batch[a:b]) / (b - a) for a, b in windows]
    assert values(scalars["train_loss_step"]) == pytest.approx(expected, rel=1e-5)
    # The run config and the user's hyperparameters, once, where Accelerate's tracker writes them.
    (hparams_file,) = Path(callback.run_dir).glob("*/hparams.yml")
    hparams = yaml.safe_load(hparams_file.read_text())
    assert hparams["num_epochs"] == 3 and hparams["train_per_device_batch_size"] == 8
    assert hparams["train_dl_kwargs.shuffle"] is True and hparams["model"] == "mlp"
    assert callback.tracker is None  # finished


def test_default_folder_is_runs_slash_a_run_name(make_trainer, read_scalars, train_data, tmp_path):
    callback = TensorBoardCallback()
    make_trainer([callback]).train(train_data, num_epochs=1, per_device_batch_size=8)

    (run_dir,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(rf"[A-Z][a-z]{{2}}\d\d_\d\d-\d\d-\d\d_{re.escape(socket.gethostname())}", run_dir.name)
    assert callback.run_dir == str(run_dir)
    assert steps(read_scalars(run_dir)["train_loss_epoch"]) == [5]


def test_epochs_only_logs_learning_rates_at_epoch_ends(make_trainer, read_scalars, train_data, tmp_path):
    callback = TensorBoardCallback(tmp_path / "tb", log_every_n_updates=None)
    make_trainer([callback]).train(train_data, num_epochs=2, per_device_batch_size=8)

    scalars = read_scalars(tmp_path / "tb")
    assert "train_loss_step" not in scalars
    assert scalars["lr"] == [(5, pytest.approx(0.1)), (10, pytest.approx(0.1))]


def test_failing_run_keeps_what_was_logged_and_closes_the_writer(
    make_trainer, read_scalars, fail_at, train_data, tmp_path
):
    callback = TensorBoardCallback(tmp_path / "tb", log_every_n_updates=2)
    trainer = make_trainer([callback, fail_at(update=7)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(train_data, num_epochs=3, per_device_batch_size=8)

    scalars = read_scalars(tmp_path / "tb")
    assert steps(scalars["train_loss_epoch"]) == [5]
    assert steps(scalars["train_loss_step"]) == [2, 4, 6]
    assert callback.tracker is None


SCRIPTS = Path(__file__).parent / "scripts"


@pytest.mark.parametrize("order", ["tracker-then-saver", "saver-then-tracker"])
def test_resumed_run_continues_the_same_folder_without_duplicated_points(
    make_trainer, read_scalars, train_data, eval_data, tmp_path, order
):
    """Interrupted after update 9 (update 6 logged after the state of epoch 1 was saved), then resumed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPTS / "interrupt_and_resume.py"), str(tmp_path), order]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    run_dirs = json.loads(result.stdout.splitlines()[-1])
    assert run_dirs["resumed"] == run_dirs["first"]
    assert len(list((tmp_path / "runs").iterdir())) == 1

    # The same points as a run that was never interrupted, each step once.
    uninterrupted = TensorBoardCallback(tmp_path / "uninterrupted", log_every_n_updates=2)
    make_trainer([uninterrupted]).train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)
    expected, got = read_scalars(uninterrupted.run_dir), read_scalars(run_dirs["resumed"])
    assert sorted(got) == sorted(expected)
    for tag, points in expected.items():
        assert steps(got[tag]) == steps(points), tag
        assert values(got[tag]) == pytest.approx(values(points), rel=1e-5), tag


def test_evaluate_after_train_writes_to_the_training_run(make_trainer, read_scalars, train_data, eval_data, tmp_path):
    callback = TensorBoardCallback(tmp_path / "tb")
    trainer = make_trainer([callback])
    trainer.train(train_data, num_epochs=1, per_device_batch_size=8)
    trainer.evaluate(eval_data, per_device_batch_size=8)

    scalars = read_scalars(tmp_path / "tb")
    assert scalars["evaluation_loss"] == [
        (5, pytest.approx(trainer.run_history.get_latest_metric("evaluation_loss"), rel=1e-6))
    ]
    assert steps(scalars["train_loss_epoch"]) == [5]


def test_the_loss_is_read_from_the_device_once_per_log_and_never_per_step(tmp_path):
    def host_syncs(num_batches, every):
        model = torch.nn.Linear(4, 2)
        callback = TensorBoardCallback(tmp_path / f"tb-{num_batches}-{every}", log_every_n_updates=every)
        trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), [callback])
        data = make_classification_dataset(num_samples=4 * num_batches)
        with CountHostSyncs() as counter:
            trainer.train(data, num_epochs=1, per_device_batch_size=4)
        return counter.count

    assert host_syncs(16, every=50) == host_syncs(4, every=50)  # no step log: nothing per step
    assert host_syncs(16, every=4) - host_syncs(4, every=4) == 3  # logs at updates 8, 12, 16: one read each


def test_catalogue_name_gives_the_callback(tmp_path):
    (entry,) = [ep for ep in entry_points(group="pa.callbacks") if ep.name == "tensorboard"]
    assert entry.load() is TensorBoardCallback
    trainer = Trainer(torch.nn.Linear(4, 2), torch.nn.CrossEntropyLoss(), None, callbacks=["tensorboard"])
    assert isinstance(trainer.callback_handler.callbacks[0], TensorBoardCallback)


def test_a_missing_tensorboard_says_which_extra_to_install(monkeypatch):
    monkeypatch.setattr("pa_tracking._tracker.get_available_trackers", lambda: [])
    with pytest.raises(ImportError, match=re.escape('pip install "pa-tracking[tensorboard]"')):
        TensorBoardCallback()


@pytest.mark.parametrize("every", [0, -1, 2.5, True])
def test_log_every_n_updates_must_be_a_positive_integer(every):
    with pytest.raises(ValueError, match="log_every_n_updates"):
        TensorBoardCallback(log_every_n_updates=every)
