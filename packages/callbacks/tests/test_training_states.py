"""SaveTrainingStateCallback and WSDCheckpointCallback: which folders and files they leave."""

import pytest
import torch

from pa_callbacks import SaveTrainingStateCallback, WSDCheckpointCallback
from pa_core import hookimpl
from pa_core.schedulers import CosineLrScheduler, WSDLrScheduler
from pa_core.training_state import TRAINER_STATE_FILE


def state_metadata(folder):
    return torch.load(folder / TRAINER_STATE_FILE, weights_only=True)


class Crash(Exception):
    pass


class CrashAfterEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if trainer.run_history.current_epoch == self.epoch:
            raise Crash


class Weights:
    """The model's weights at the start of the run and after each optimizer update, and the
    learning rate the first update will use."""

    def __init__(self):
        self.start, self.start_lr, self.updates = None, None, []

    @hookimpl
    def on_training_run_start(self, trainer):
        self.start = {k: v.clone() for k, v in trainer.get_model().state_dict().items()}
        self.start_lr = trainer.optimizer.param_groups[0]["lr"]

    @hookimpl
    def on_train_update_end(self, trainer):
        self.updates.append({k: v.clone() for k, v in trainer.get_model().state_dict().items()})


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- SaveTrainingStateCallback ---------------------------------------------------------------------


def saver(folder):
    return SaveTrainingStateCallback(save_dir=folder, save_every_n_epochs=1, save_every_n_steps=4, max_checkpoints=3)


def test_only_the_most_recent_states_are_kept(make_trainer, train_data, tmp_path):
    # 5 updates per epoch: step_4, epoch_1, step_8, epoch_2, step_12, epoch_3, step_16, step_20, epoch_4, final.
    trainer = make_trainer(callbacks=[saver(tmp_path / "states")])
    trainer.train(train_data, num_epochs=4, per_device_batch_size=8)
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == ["epoch_4", "final", "step_20"]
    for name, step in (("step_20", 20), ("epoch_4", 20), ("final", 20)):
        metadata = state_metadata(tmp_path / "states" / name)
        assert metadata["checkpoint_kwargs"] == {"global_step": step}
    assert state_metadata(tmp_path / "states" / "epoch_4")["epoch"] == 4


def test_a_resumed_run_keeps_pruning_the_states_of_the_interrupted_one(make_trainer, train_data, tmp_path):
    crashed = make_trainer(callbacks=[saver(tmp_path / "states"), CrashAfterEpoch(2)])
    with pytest.raises(Crash):
        crashed.train(train_data, num_epochs=4, per_device_batch_size=8)
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == ["epoch_1", "epoch_2", "step_8"]

    resumed = make_trainer(callbacks=[saver(tmp_path / "states")])
    resumed.train(train_data, num_epochs=4, per_device_batch_size=8, resume_from=tmp_path / "states" / "epoch_2")
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == ["epoch_4", "final", "step_20"]


def test_by_default_only_the_final_state_is_saved(make_trainer, train_data, tmp_path):
    make_trainer(callbacks=[SaveTrainingStateCallback()]).train(train_data, num_epochs=2, per_device_batch_size=8)
    assert [p.name for p in (tmp_path / "training_states").iterdir()] == ["final"]


def test_intervals_must_be_positive():
    with pytest.raises(ValueError, match="save_every_n_steps=0"):
        SaveTrainingStateCallback(save_every_n_steps=0)
    with pytest.raises(ValueError, match="max_checkpoints=-1"):
        SaveTrainingStateCallback(max_checkpoints=-1)


# --- WSDCheckpointCallback -------------------------------------------------------------------------


def wsd(num_checkpoints=1, continuation=False):
    return WSDLrScheduler.create_scheduler_fn(
        num_warmup_epochs=1,
        decay_phase_ratio=0.2,
        num_checkpoints=num_checkpoints,
        is_continuation_from_checkpoint=continuation,
    )


def test_wsd_checkpoints_are_the_state_before_the_decay_and_the_weights_after_it(make_trainer, train_data, tmp_path):
    weights = Weights()
    trainer = make_trainer(callbacks=[weights, WSDCheckpointCallback(save_dir=tmp_path / "ckpt")])
    # 4 epochs of 5 updates: 20 updates; the decay takes the last 4, from update 16.
    trainer.train(train_data, num_epochs=4, per_device_batch_size=8, create_scheduler_fn=wsd())

    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "checkpoint_16_wsd_pre_decay",
        "checkpoint_20_wsd_post_decay.pt",
    ]
    pre = state_metadata(tmp_path / "ckpt" / "checkpoint_16_wsd_pre_decay")
    assert pre["position"]["num_updates"] == 16
    assert pre["scheduler"]["num_updates"] == 15  # the scheduler's last update index: 16 done
    assert {k: pre["checkpoint_kwargs"][k] for k in ("step", "checkpoint_type", "total_steps")} == {
        "step": 16,
        "checkpoint_type": "wsd_pre_decay",
        "total_steps": 20,
    }
    post = torch.load(tmp_path / "ckpt" / "checkpoint_20_wsd_post_decay.pt", weights_only=True)
    assert (post["step"], post["checkpoint_type"]) == (20, "wsd_post_decay")
    assert {"optimizer_state_dict", "scheduler_state_dict"} <= post.keys()
    assert same_weights(post["model_state_dict"], weights.updates[-1])

    # A new run can start from either: the pre-decay state (at the peak rate, no warmup) ...
    from_pre = Weights()
    continued = make_trainer(
        callbacks=[
            WSDCheckpointCallback(
                save_dir=tmp_path / "next", initial_checkpoint=tmp_path / "ckpt" / "checkpoint_16_wsd_pre_decay"
            ),
            from_pre,
        ]
    )
    continued.train(train_data, num_epochs=1, per_device_batch_size=8, create_scheduler_fn=wsd(continuation=True))
    assert same_weights(from_pre.start, weights.updates[15])
    assert from_pre.start_lr == pytest.approx(0.1)
    assert len(continued.run_history.get_metric_values("train_loss_epoch")) == 1  # a fresh run: epoch 1 only
    # ... or the post-decay weights.
    from_post = Weights()
    make_trainer(
        callbacks=[
            WSDCheckpointCallback(
                save_dir=tmp_path / "next2", initial_checkpoint=tmp_path / "ckpt" / "checkpoint_20_wsd_post_decay.pt"
            ),
            from_post,
        ]
    ).train(train_data, num_epochs=1, per_device_batch_size=8, create_scheduler_fn=wsd(continuation=True))
    assert same_weights(from_post.start, weights.updates[-1])


def test_each_of_several_decays_gets_its_checkpoints(make_trainer, train_data, tmp_path):
    trainer = make_trainer(callbacks=[WSDCheckpointCallback(save_dir=tmp_path)])
    trainer.train(train_data, num_epochs=4, per_device_batch_size=8, create_scheduler_fn=wsd(num_checkpoints=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_10_wsd_post_decay.pt",
        "checkpoint_18_wsd_pre_decay",
        "checkpoint_20_wsd_post_decay.pt",
        "checkpoint_8_wsd_pre_decay",
    ]


def test_wsd_checkpoints_need_a_wsd_scheduler(make_trainer, train_data):
    trainer = make_trainer(callbacks=[WSDCheckpointCallback()])
    with pytest.raises(ValueError, match=r"scheduler is CosineLrScheduler.*WSDLrScheduler.create_scheduler_fn"):
        trainer.train(train_data, num_epochs=1, create_scheduler_fn=CosineLrScheduler.create_scheduler_fn())
    with pytest.raises(ValueError, match="no such file or folder"):
        make_trainer(callbacks=[WSDCheckpointCallback(initial_checkpoint="missing")]).train(
            train_data, num_epochs=3, create_scheduler_fn=wsd()
        )
