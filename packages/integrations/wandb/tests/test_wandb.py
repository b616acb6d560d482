"""WandbCallback on real Trainer runs, logging real offline W&B runs that are read back from disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import wandb

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset
from pa_wandb import WandbCallback

TRAIN = make_classification_dataset(num_samples=40, seed=0)  # 5 batches of 8
EVAL = make_classification_dataset(num_samples=20, seed=1)


class RecordBatchLosses:
    """Keeps every training batch's loss (a test helper; reads each loss back, which is fine here)."""

    def __init__(self):
        self.losses: list[float] = []

    @hookimpl
    def on_train_step_end(self, batch_output):
        self.losses.append(batch_output["loss"].item())


class FailAt:
    """Raises RuntimeError at the end of training epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    @hookimpl
    def on_train_epoch_end(self, trainer):
        if trainer.run_history.current_epoch == self.epoch:
            raise RuntimeError("boom")


def test_training_run_is_logged_with_config_and_every_epoch_metric(make_callback, make_trainer, read_runs, wandb_dir):
    callback = make_callback(name="first", tags=["tiny", "cpu"], notes="a test run", config={"model": "mlp", "lr": 0.1})
    trainer = make_trainer([callback])
    trainer.train(TRAIN, num_epochs=3, eval_dataset=EVAL, per_device_batch_size=8)

    (run,) = read_runs(wandb_dir)
    assert (run.project, run.name, run.notes, run.tags, run.job_type) == (
        "pa-tests",
        "first",
        "a test run",
        ["tiny", "cpu"],
        "train",
    )
    assert run.exit_code == 0
    # The run config with the user's config on top.
    assert run.config["num_epochs"] == 3
    assert run.config["train_per_device_batch_size"] == 8
    assert run.config["num_processes"] == 1
    assert run.config["model"] == "mlp" and run.config["lr"] == 0.1
    # Each epoch's metrics, exactly as in the run history, plotted against the epoch.
    history = trainer.run_history
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert run.values(name) == pytest.approx(history.get_metric_values(name))
        assert [row["epoch"] for row in run.rows_with(name)] == [1, 2, 3]
        assert run.step_metrics[name] == "epoch"
    assert run.values("lr") == [0.1, 0.1, 0.1]
    assert [row["num_updates"] for row in run.rows_with("train_loss_epoch")] == [5, 10, 15]
    # The run is finished and W&B holds no active run.
    assert callback.run is None and wandb.run is None


def test_loss_and_learning_rate_every_n_updates(make_callback, make_trainer, read_runs, wandb_dir):
    losses = RecordBatchLosses()
    callback = make_callback(log_every_n_steps=2)
    trainer = make_trainer([callback, losses])
    scheduler = lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: 1 / (n + 1))  # noqa: E731
    # 5 batches per epoch, 2 batches per update: updates after batches 2, 4 and 5 of each epoch,
    # so updates 1-3 are in epoch 1 and 4-6 in epoch 2.
    trainer.train(
        TRAIN, num_epochs=2, per_device_batch_size=8, gradient_accumulation_steps=2, create_scheduler_fn=scheduler
    )

    (run,) = read_runs(wandb_dir)
    rows = run.rows_with("train_loss_step")
    assert [row["num_updates"] for row in rows] == [2, 4, 6]
    assert [row["epoch"] for row in rows] == [1, 2, 2]
    # The mean over the batches since the previous log (equal batch sizes), never crossing an epoch start.
    expected = [
        sum(losses.losses[0:4]) / 4,  # update 2: epoch 1, batches 1-4
        sum(losses.losses[5:7]) / 2,  # update 4: epoch 2, batches 1-2 (epoch 1's batch 5 is not logged)
        sum(losses.losses[7:10]) / 3,  # update 6: epoch 2, batches 3-5
    ]
    assert [row["train_loss_step"] for row in rows] == pytest.approx(expected, rel=1e-5)
    # Learning rates go with the step logs, after the scheduler stepped n times.
    assert [row["lr"] for row in rows] == pytest.approx([0.1 / 3, 0.1 / 5, 0.1 / 7])
    assert run.step_metrics["train_loss_step"] == "num_updates"
    assert run.step_metrics["lr"] == "num_updates"
    assert run.values("train_loss_epoch") == pytest.approx(trainer.run_history.get_metric_values("train_loss_epoch"))


def test_loss_is_not_read_when_no_log_is_due(make_callback, make_trainer, monkeypatch):
    """Between logs the callback leaves the device alone: it never converts the loss to a number."""
    conversions = []
    original = torch.Tensor.__float__

    def counting_float(self):
        conversions.append(1)
        return original(self)

    callback = make_callback(log_every_n_steps=3, mode="disabled")
    trainer = make_trainer([callback])
    monkeypatch.setattr(torch.Tensor, "__float__", counting_float)
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=8)  # 5 updates: one log, at update 3
    monkeypatch.undo()
    # One for the step log, one for train_loss_epoch (the Trainer's own epoch-end read).
    assert len(conversions) == 2


def test_failing_run_is_marked_failed(make_callback, make_trainer, read_runs, wandb_dir):
    callback = make_callback()
    trainer = make_trainer([callback, FailAt(epoch=2)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(TRAIN, num_epochs=3, eval_dataset=EVAL, per_device_batch_size=8)

    (run,) = read_runs(wandb_dir)
    assert run.exit_code == 1
    # Epoch 1 in full, and epoch 2's train loss, recorded before the failure.
    history = trainer.run_history
    assert run.values("eval_loss_epoch") == pytest.approx(history.get_metric_values("eval_loss_epoch"))
    assert len(history.get_metric_values("eval_loss_epoch")) == 1
    assert run.values("train_loss_epoch") == pytest.approx(history.get_metric_values("train_loss_epoch"))
    assert [row["epoch"] for row in run.rows_with("train_loss_epoch")] == [1, 2]
    assert callback.run is None and wandb.run is None


def test_user_started_run_is_logged_into_and_left_open(make_callback, make_trainer, read_runs, wandb_dir):
    user_run = wandb.init(
        project="mine",
        dir=wandb_dir,
        settings=wandb.Settings(x_disable_stats=True, console="off"),
        config={"owner": "user"},
    )
    try:
        trainer = make_trainer([make_callback(config={"extra": 1})])
        trainer.train(TRAIN, num_epochs=2, per_device_batch_size=8)
        assert wandb.run is user_run  # still open
        user_run.log({"after_training": 1.0})
    finally:
        user_run.finish()

    (run,) = read_runs(wandb_dir)
    assert run.project == "mine" and run.exit_code == 0
    assert run.config["owner"] == "user" and run.config["extra"] == 1 and run.config["num_epochs"] == 2
    assert run.values("train_loss_epoch") == pytest.approx(trainer.run_history.get_metric_values("train_loss_epoch"))
    assert run.values("after_training") == [1.0]


def test_failure_in_a_user_started_run_leaves_it_to_the_user(make_callback, make_trainer):
    user_run = wandb.init(project="mine", mode="disabled")
    try:
        trainer = make_trainer([make_callback(), FailAt(epoch=1)])
        with pytest.raises(RuntimeError):
            trainer.train(TRAIN, num_epochs=1, per_device_batch_size=8)
        assert wandb.run is user_run
    finally:
        user_run.finish()


def test_checkpoints_are_uploaded_as_an_artifact(make_callback, make_trainer, read_runs, wandb_dir, tmp_path):
    class SaveEachEpoch:
        @hookimpl
        def on_training_run_epoch_end(self, trainer):
            trainer.save_checkpoint(tmp_path / "checkpoints" / "last.pt")
            trainer.save_training_state(tmp_path / "checkpoints" / "state")

    checkpoints = tmp_path / "checkpoints"
    callback = make_callback(log_checkpoints=[str(checkpoints / "*.pt"), checkpoints / "state"])
    trainer = make_trainer([SaveEachEpoch(), callback])
    trainer.train(TRAIN, num_epochs=2, eval_dataset=EVAL, per_device_batch_size=8)

    (run,) = read_runs(wandb_dir)
    (artifact,) = run.artifacts
    assert artifact["name"] == f"model-{run.run_id}" and artifact["type"] == "model"
    assert artifact["aliases"] == ["latest"]
    assert "last.pt" in artifact["files"]
    state_files = {f for f in artifact["files"] if f.startswith("state/")}
    assert state_files == {f"state/{p.name}" for p in (tmp_path / "checkpoints" / "state").iterdir()}
    assert artifact["metadata"]["epoch"] == 2
    latest_eval_loss = trainer.run_history.get_latest_metric("eval_loss_epoch")
    assert artifact["metadata"]["eval_loss_epoch"] == pytest.approx(latest_eval_loss)


def test_checkpoint_pattern_matching_nothing_warns(make_callback, make_trainer, read_runs, wandb_dir, tmp_path):
    trainer = make_trainer([make_callback(log_checkpoints=str(tmp_path / "*.pt"))])
    with pytest.warns(UserWarning, match="matched no files"):
        trainer.train(TRAIN, num_epochs=1, per_device_batch_size=8)
    (run,) = read_runs(wandb_dir)
    assert run.artifacts == [] and run.exit_code == 0


def test_watch_logs_gradient_and_parameter_histograms(make_callback, make_trainer, read_runs, wandb_dir):
    trainer = make_trainer([make_callback(watch="all", watch_log_freq=2)])
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=8)
    (run,) = read_runs(wandb_dir)
    keys = {key for row in run.history for key in row}
    # A histogram is logged as its bin counts ("values") and edges ("bins").
    assert {"gradients/0.weight.values", "parameters/0.weight.values", "parameters/2.bias.bins"} <= keys


def test_intermediate_evaluations_are_logged_against_updates(make_callback, make_trainer, read_runs, wandb_dir):
    class EvaluateEveryTwoUpdates:
        @hookimpl
        def on_train_update_end(self, trainer, num_updates):
            if num_updates % 2 == 0:
                trainer.run_eval_epoch(is_intermediate=True)

    trainer = make_trainer([EvaluateEveryTwoUpdates(), make_callback()])
    trainer.train(TRAIN, num_epochs=2, eval_dataset=EVAL, per_device_batch_size=8)

    (run,) = read_runs(wandb_dir)
    assert [row["num_updates"] for row in run.rows_with("intermediate_eval_loss")] == [2, 4, 6, 8, 10]
    assert run.values("intermediate_eval_loss") == pytest.approx(
        trainer.run_history.get_metric_values("intermediate_eval_loss")
    )
    assert run.step_metrics["intermediate_eval_loss"] == "num_updates"
    assert run.step_metrics["eval_loss_epoch"] == "epoch"


def test_metrics_recorded_after_the_callback_are_logged_for_their_epoch(
    make_callback, make_trainer, read_runs, wandb_dir
):
    class LateMetric:  # listed after WandbCallback: writes when W&B has already logged the epoch
        @hookimpl
        def on_training_run_epoch_end(self, trainer):
            trainer.run_history.update_metric("late", float(trainer.run_history.current_epoch))

    trainer = make_trainer([make_callback(), LateMetric()])
    trainer.train(TRAIN, num_epochs=3, per_device_batch_size=8)
    (run,) = read_runs(wandb_dir)
    assert [(row["epoch"], row["late"]) for row in run.rows_with("late")] == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_evaluate_gets_its_own_run(make_callback, make_trainer, read_runs, wandb_dir):
    trainer = make_trainer([make_callback(config={"split": "test"})])
    trainer.evaluate(EVAL, per_device_batch_size=8)
    (run,) = read_runs(wandb_dir)
    assert run.job_type == "evaluation" and run.exit_code == 0
    assert run.config["split"] == "test"
    assert run.values("evaluation_loss") == pytest.approx([trainer.run_history.get_latest_metric("evaluation_loss")])


def test_resumed_training_logs_into_the_same_run(make_callback, make_trainer, read_runs, wandb_dir, tmp_path):
    class SaveThenFail:
        @hookimpl
        def on_training_run_epoch_end(self, trainer):
            trainer.save_training_state(tmp_path / "state")
            if trainer.run_history.current_epoch == 1:
                raise RuntimeError("preempted")

    trainer = make_trainer([make_callback(), SaveThenFail()])
    with pytest.raises(RuntimeError, match="preempted"):
        trainer.train(TRAIN, num_epochs=2, per_device_batch_size=8)
    trainer = make_trainer([make_callback(), SaveThenFail()])
    trainer.train(TRAIN, num_epochs=2, per_device_batch_size=8, resume_from=tmp_path / "state")

    first, second = read_runs(wandb_dir)
    assert first.run_id == second.run_id
    assert (first.exit_code, second.exit_code) == (1, 0)
    # Each epoch is logged once: the resumed run does not log epoch 1 again.
    assert [row["epoch"] for row in first.rows_with("train_loss_epoch")] == [1]
    assert [row["epoch"] for row in second.rows_with("train_loss_epoch")] == [2]


def test_disabled_mode_writes_nothing(make_callback, make_trainer, wandb_dir):
    trainer = make_trainer([make_callback(mode="disabled", log_every_n_steps=1, log_checkpoints="missing.pt")])
    with pytest.warns(UserWarning, match="matched no files"):
        trainer.train(TRAIN, num_epochs=1, eval_dataset=EVAL, per_device_batch_size=8)
    assert not wandb_dir.exists() or not any(wandb_dir.rglob("*.wandb"))
    assert wandb.run is None


def test_catalogue_name_gives_the_callback(monkeypatch):
    (entry,) = [ep for ep in entry_points(group="pa.callbacks") if ep.name == "wandb"]
    assert entry.load() is WandbCallback
    monkeypatch.setenv("WANDB_MODE", "disabled")
    trainer = Trainer(torch.nn.Linear(4, 2), torch.nn.CrossEntropyLoss(), None, callbacks=["wandb"])
    assert isinstance(trainer.callback_handler.callbacks[0], WandbCallback)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"log_every_n_steps": 0}, "log_every_n_steps must be a positive integer"),
        ({"watch": "weights"}, "watch must be one of"),
        ({"watch_log_freq": 0}, "watch_log_freq must be a positive integer"),
        ({"mode": "off"}, "mode must be"),
        ({"checkpoint_artifact_name": "my model"}, "checkpoint_artifact_name may hold only"),
    ],
)
def test_invalid_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WandbCallback(**kwargs)


SCRIPT = Path(__file__).parent / "scripts" / "train_from_env.py"


def _run_script(launcher: list[str], out_dir: Path, wandb_env: dict[str, str]) -> list[dict]:
    """Run the training script in fresh processes (W&B reads its environment once per process)."""
    env = {**os.environ, "WANDB_SILENT": "true", "PA_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1", **wandb_env}
    command = [*launcher, str(SCRIPT), str(out_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob("rank*.json"))]


@pytest.mark.multiprocess
def test_two_processes_make_one_run_configured_from_the_environment(tmp_path, read_runs):
    """Under torchrun only the world main process opens a run, set up by WANDB_MODE and WANDB_DIR alone."""
    env_dir = tmp_path / "env-dir"
    env_dir.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ranks = _run_script(torchrun, tmp_path, {"WANDB_MODE": "offline", "WANDB_DIR": str(env_dir)})

    assert [r["opened_run"] for r in ranks] == [True, False]
    assert [r["wandb_run_after"] for r in ranks] == [False, False]
    (run,) = read_runs(env_dir)
    assert run.project == "pa-two-process" and run.exit_code == 0
    assert run.config["num_processes"] == 2 and run.config["is_distributed"] is True
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert run.values(name) == pytest.approx(ranks[0]["metrics"][name])


def test_wandb_mode_disabled_from_the_environment_writes_nothing(tmp_path):
    env_dir = tmp_path / "env-dir"
    env_dir.mkdir()
    (rank0,) = _run_script([sys.executable], tmp_path, {"WANDB_MODE": "disabled", "WANDB_DIR": str(env_dir)})
    assert rank0["opened_run"] is True  # a run object, which W&B keeps entirely in memory
    assert rank0["metrics"]["train_loss_epoch"]
    assert list(env_dir.iterdir()) == []
