"""Early stopping and saving the best model, alone and across a resumed run."""

import pytest
import torch

from pa_callbacks import (
    EarlyStoppingCallback,
    ModelEmaCallback,
    SaveBestModelCallback,
    SaveTrainingStateCallback,
)
from pa_core import hookimpl
from pa_core.testing import RecordingCallback, make_classification_dataset


class ScriptedMetric:
    """Records ``values[epoch - 1]`` as ``scripted`` at the end of each epoch's evaluation."""

    def __init__(self, values):
        self.values = values

    @hookimpl
    def on_eval_epoch_end(self, trainer, is_intermediate):
        trainer.run_history.update_metric("scripted", self.values[trainer.run_history.current_epoch - 1])


class WeightsPerEpoch:
    """Keeps a copy of the model's weights at the end of each epoch."""

    def __init__(self):
        self.weights = []

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        self.weights.append({k: v.clone() for k, v in trainer.get_model().state_dict().items()})


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- early stopping ------------------------------------------------------------------------------


def test_early_stopping_stops_after_the_patience_and_the_run_still_ends(make_trainer, train_data, eval_data, capsys):
    recorder = RecordingCallback()
    early_stopping = EarlyStoppingCallback(
        early_stopping_patience=2, early_stopping_threshold=0.01, watch_metric="scripted"
    )
    # 0.9 improves on 1.0; 0.895 and 0.892 are within the threshold of 0.9, so the second stops training.
    trainer = make_trainer(callbacks=[ScriptedMetric([1.0, 0.9, 0.895, 0.892, 0.5, 0.4]), early_stopping, recorder])
    trainer.train(train_data, num_epochs=6, eval_dataset=eval_data, per_device_batch_size=8)

    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 4
    assert recorder.count("on_stop_training_error") == 1
    assert recorder.count("on_training_run_end") == 1
    assert early_stopping.best_metric == 0.9
    assert early_stopping.early_stopping_patience_counter == 2
    out = capsys.readouterr().out
    assert "Improvement of 0.1 in scripted observed, resetting counter." in out
    assert "Early stopping counter: 1/2" in out
    assert "Stopping training due to no improvement in scripted after 2 epochs" in out


def test_greater_is_better_watches_for_increases(make_trainer, train_data, eval_data):
    early_stopping = EarlyStoppingCallback(early_stopping_patience=1, watch_metric="scripted", greater_is_better=True)
    trainer = make_trainer(callbacks=[ScriptedMetric([0.5, 0.6, 0.7, 0.65, 0.9]), early_stopping])
    trainer.train(train_data, num_epochs=5, eval_dataset=eval_data, per_device_batch_size=8)
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 4
    assert early_stopping.best_metric == 0.7


def test_a_new_train_call_starts_afresh_unless_told_otherwise(make_trainer, train_data, eval_data):
    early_stopping = EarlyStoppingCallback(early_stopping_patience=1, watch_metric="scripted")
    trainer = make_trainer(callbacks=[ScriptedMetric([1.0, 2.0, 0.5]), early_stopping])
    trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 2
    trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 2  # not stopped after epoch 1


def test_a_missing_watched_metric_says_how_to_record_it(make_trainer, train_data):
    trainer = make_trainer(callbacks=[EarlyStoppingCallback()])
    with pytest.raises(ValueError, match=r"watches 'eval_loss_epoch'.*pass one"):
        trainer.train(train_data, num_epochs=2)


def test_invalid_arguments_name_the_argument():
    with pytest.raises(ValueError, match="early_stopping_patience=0"):
        EarlyStoppingCallback(early_stopping_patience=0)
    with pytest.raises(ValueError, match="early_stopping_threshold=-1"):
        EarlyStoppingCallback(early_stopping_threshold=-1)


# --- save best ------------------------------------------------------------------------------------


def test_save_best_writes_the_best_epochs_weights_and_loads_them_at_the_end(
    make_trainer, train_data, eval_data, tmp_path, capsys
):
    weights = WeightsPerEpoch()
    save_best = SaveBestModelCallback(save_path=tmp_path / "best.pt", watch_metric="scripted")
    trainer = make_trainer(callbacks=[ScriptedMetric([0.5, 0.3, 0.4, 0.2, 0.25]), weights, save_best])
    trainer.train(train_data, num_epochs=5, eval_dataset=eval_data, per_device_batch_size=8)

    checkpoint = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["scripted"]) == (4, 0.2)
    assert same_weights(checkpoint["model_state_dict"], weights.weights[3])
    assert "optimizer_state_dict" in checkpoint
    assert same_weights(trainer.model.state_dict(), weights.weights[3])  # loaded back, not epoch 5's
    assert not same_weights(weights.weights[4], weights.weights[3])
    assert "Loading checkpoint with scripted: 0.2 from epoch 4" in capsys.readouterr().out


def test_save_best_can_leave_the_final_weights(make_trainer, train_data, eval_data, tmp_path):
    weights = WeightsPerEpoch()
    save_best = SaveBestModelCallback(
        save_path=tmp_path / "best.pt",
        watch_metric="scripted",
        greater_is_better=True,
        load_saved_checkpoint=False,
        save_optimizer=False,
    )
    trainer = make_trainer(callbacks=[ScriptedMetric([0.5, 0.9, 0.4]), weights, save_best])
    trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)
    checkpoint = torch.load(tmp_path / "best.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert "optimizer_state_dict" not in checkpoint
    assert same_weights(trainer.model.state_dict(), weights.weights[2])


def test_a_nan_metric_is_never_the_best(make_trainer, train_data, eval_data, tmp_path):
    save_best = SaveBestModelCallback(save_path=tmp_path / "best.pt", watch_metric="scripted")
    trainer = make_trainer(callbacks=[ScriptedMetric([float("nan"), 0.7, float("nan"), 0.9]), save_best])
    trainer.train(train_data, num_epochs=4, eval_dataset=eval_data, per_device_batch_size=8)
    assert (save_best.best_metric, save_best.best_metric_epoch) == (0.7, 2)


# --- resuming -------------------------------------------------------------------------------------


class Crash(Exception):
    pass


class CrashAfterEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if trainer.run_history.current_epoch == self.epoch:
            raise Crash(f"simulated crash after epoch {self.epoch}")


SCRIPT = [1.0, 0.8, 0.7, 0.65, 0.6, 0.62, 0.64, 0.66, 0.1, 0.1]  # stops after epoch 7; best: epoch 5


def stateful_callbacks(folder, *extra):
    return [
        ScriptedMetric(SCRIPT),
        EarlyStoppingCallback(early_stopping_patience=2, watch_metric="scripted"),
        SaveBestModelCallback(save_path=folder / "best.pt", watch_metric="scripted"),
        ModelEmaCallback(decay=0.5, save_path=folder / "ema.pt"),
        SaveTrainingStateCallback(save_dir=folder / "states", save_every_n_epochs=1, save_at_end=False),
        *extra,
    ]


@pytest.mark.parametrize("crash_epoch", [3, 6])
def test_a_resumed_run_stops_and_keeps_the_best_like_an_uninterrupted_one(
    crash_epoch, make_trainer, train_data, eval_data, tmp_path
):
    def train(trainer, **kwargs):
        trainer.train(train_data, num_epochs=len(SCRIPT), eval_dataset=eval_data, per_device_batch_size=8, **kwargs)

    uninterrupted = make_trainer(callbacks=stateful_callbacks(tmp_path / "a"))
    train(uninterrupted)

    crashed = make_trainer(callbacks=stateful_callbacks(tmp_path / "b", CrashAfterEpoch(crash_epoch)))
    with pytest.raises(Crash):
        train(crashed)
    resumed = make_trainer(callbacks=stateful_callbacks(tmp_path / "b"))
    train(resumed, resume_from=tmp_path / "b" / "states" / f"epoch_{crash_epoch}")

    for trainer in (uninterrupted, resumed):
        assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 7
    a_best, b_best = (torch.load(tmp_path / run / "best.pt", weights_only=True) for run in "ab")
    assert a_best["epoch"] == b_best["epoch"] == 5
    assert same_weights(a_best["model_state_dict"], b_best["model_state_dict"])
    assert same_weights(uninterrupted.model.state_dict(), resumed.model.state_dict())  # both loaded epoch 5
    a_ema, b_ema = (trainer.callback_handler.callbacks[3] for trainer in (uninterrupted, resumed))
    assert (a_ema.best_metric, a_ema.best_metric_epoch) == (b_ema.best_metric, b_ema.best_metric_epoch)
    assert same_weights(a_ema.ema_model.module.state_dict(), b_ema.ema_model.module.state_dict())
    assert same_weights(
        torch.load(tmp_path / "a" / "ema.pt", weights_only=True)["model_state_dict"],
        torch.load(tmp_path / "b" / "ema.pt", weights_only=True)["model_state_dict"],
    )


def test_saving_states_before_a_stateful_callback_warns(make_trainer, train_data):
    trainer = make_trainer(callbacks=[SaveTrainingStateCallback(save_at_end=False), EarlyStoppingCallback()])
    with pytest.warns(UserWarning, match="listed before EarlyStoppingCallback"), pytest.raises(ValueError):
        trainer.train(train_data, num_epochs=1)  # (no eval set: early stopping then fails)


@pytest.fixture
def train_data():
    return make_classification_dataset(num_samples=40, seed=0)
