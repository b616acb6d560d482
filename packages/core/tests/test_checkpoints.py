"""Checkpoints and training states: round trips, safe loading, exact resume."""

import functools
import os
import pickle

import pytest
import torch

from pa_core import Trainer, hookimpl
from pa_core._serialization import UnsafeCheckpointError
from pa_core.testing import RecordingCallback, make_classification_dataset, tiny_classifier


class StepLR(torch.optim.lr_scheduler.StepLR):
    pass


def flat(model):
    return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])


def test_checkpoint_round_trips_weights_optimizer_scheduler_and_kwargs(make_trainer, train_data, tmp_path):
    trainer = make_trainer()
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=0.01)
    trainer.train(train_data, num_epochs=2, create_scheduler_fn=functools.partial(StepLR, step_size=3, gamma=0.5))
    path = tmp_path / "checkpoint.pt"
    trainer.save_checkpoint(path, checkpoint_kwargs={"epoch": 2, "note": "best"})

    fresh = make_trainer()
    fresh.optimizer = torch.optim.Adam(fresh.model.parameters(), lr=0.01)
    fresh.train(train_data, num_epochs=1, create_scheduler_fn=functools.partial(StepLR, step_size=3, gamma=0.5))
    assert not torch.equal(flat(fresh.model), flat(trainer.model))
    loaded = fresh.load_checkpoint(path)

    torch.testing.assert_close(flat(fresh.model), flat(trainer.model), rtol=0, atol=0)
    assert loaded["epoch"] == 2 and loaded["note"] == "best"
    saved_state, restored_state = trainer.optimizer.state_dict(), fresh.optimizer.state_dict()
    for key in saved_state["state"]:
        torch.testing.assert_close(restored_state["state"][key]["exp_avg"], saved_state["state"][key]["exp_avg"])
    assert fresh.scheduler.state_dict()["last_epoch"] == trainer.scheduler.state_dict()["last_epoch"] == 10


def test_checkpoint_without_optimizer_or_scheduler(make_trainer, train_data, tmp_path):
    trainer = make_trainer()
    trainer.train(train_data, num_epochs=1)
    trainer.save_checkpoint(tmp_path / "weights.pt", save_optimizer=False)
    content = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert set(content) == {"model_state_dict"}


def test_loading_optimizer_state_without_an_optimizer_is_an_error(make_trainer, train_data, tmp_path):
    trainer = make_trainer()
    trainer.train(train_data, num_epochs=1)
    trainer.save_checkpoint(tmp_path / "c.pt")
    model = tiny_classifier()
    evaluator = Trainer(model, torch.nn.CrossEntropyLoss(), optimizer=None, callbacks=[])
    with pytest.raises(ValueError, match="load_optimizer=False"):
        evaluator.load_checkpoint(tmp_path / "c.pt")
    evaluator.load_checkpoint(tmp_path / "c.pt", load_optimizer=False)
    torch.testing.assert_close(flat(evaluator.model), flat(trainer.model))


def test_torch_compile_prefixes_are_stripped(train_data, tmp_path):
    model = tiny_classifier()
    trainer = Trainer(
        torch.compile(model, backend="eager"),
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[],
    )
    trainer.train(train_data, num_epochs=1)
    trainer.save_checkpoint(tmp_path / "compiled.pt")
    keys = torch.load(tmp_path / "compiled.pt", weights_only=True)["model_state_dict"].keys()
    assert keys == tiny_classifier().state_dict().keys()
    plain = tiny_classifier(seed=5)
    plain.load_state_dict(torch.load(tmp_path / "compiled.pt", weights_only=True)["model_state_dict"])
    torch.testing.assert_close(flat(plain), flat(model))


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_pickled_objects_is_refused_without_running_them(make_trainer, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model_state_dict": {}, "payload": _Payload(str(marker))}, handle)
    torch.save({"model_state_dict": {}, "payload": _Payload(str(marker))}, tmp_path / "evil_torch.pt")
    trainer = make_trainer()
    for candidate in (path, tmp_path / "evil_torch.pt"):
        with pytest.raises(UnsafeCheckpointError, match="weights_only=False"):
            trainer.load_checkpoint(candidate)
    assert not marker.exists()


def test_unsafe_trainer_state_file_is_refused(make_trainer, train_data, tmp_path):
    trainer = make_trainer()
    trainer.train(train_data, num_epochs=1)
    state_dir = tmp_path / "state"
    trainer.save_training_state(state_dir)
    marker = tmp_path / "code-ran"
    torch.save({"payload": _Payload(str(marker))}, state_dir / "pa_trainer_state.pt")
    with pytest.raises(UnsafeCheckpointError):
        make_trainer().train(train_data, num_epochs=2, resume_from=state_dir)
    assert not marker.exists()


class Interrupt(Exception):
    pass


class SaveAndInterrupt:
    """Saves a training state after update ``at_update`` and then stops the run abruptly."""

    def __init__(self, state_dir, at_update):
        self.state_dir, self.at_update = state_dir, at_update

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates == self.at_update:
            trainer.save_training_state(self.state_dir)
            raise Interrupt()


class SaveAtEpochEndAndInterrupt:
    def __init__(self, state_dir, at_epoch):
        self.state_dir, self.at_epoch = state_dir, at_epoch

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if trainer.run_history.current_epoch == self.at_epoch:
            trainer.save_training_state(self.state_dir)
            raise Interrupt()


def _resumable_trainer(callbacks=()):
    # Dropout puts randomness inside every step: resuming must restore the RNG exactly.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    return Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=list(callbacks))


TRAIN_KWARGS = dict(
    num_epochs=3,
    per_device_batch_size=4,
    gradient_accumulation_steps=2,
    create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=4, gamma=0.7),
)


@pytest.mark.parametrize(
    "interrupter",
    [
        pytest.param(lambda d: SaveAndInterrupt(d, at_update=7), id="mid-epoch"),
        pytest.param(lambda d: SaveAtEpochEndAndInterrupt(d, at_epoch=1), id="epoch-boundary"),
    ],
)
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(interrupter, tmp_path):
    train_data = make_classification_dataset(num_samples=40, seed=0)
    eval_data = make_classification_dataset(num_samples=12, seed=1)
    uninterrupted_order = RecordingCallback(events=("on_train_step_end",))
    reference = _resumable_trainer([uninterrupted_order])
    reference.train(train_data, eval_dataset=eval_data, **TRAIN_KWARGS)

    state_dir = tmp_path / "state"
    interrupted = _resumable_trainer([interrupter(state_dir)])
    with pytest.raises(Interrupt):
        interrupted.train(train_data, eval_dataset=eval_data, **TRAIN_KWARGS)
    assert (state_dir / "pa_trainer_state.pt").is_file()

    resumed_order = RecordingCallback(events=("on_train_step_end",))
    resumed = _resumable_trainer([resumed_order])  # fresh weights: everything comes from the state
    resumed.train(train_data, eval_dataset=eval_data, resume_from=state_dir, **TRAIN_KWARGS)

    torch.testing.assert_close(flat(resumed.model), flat(reference.model), rtol=0, atol=0)
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert resumed.run_history.get_metric_values(name) == pytest.approx(
            reference.run_history.get_metric_values(name), rel=1e-6
        )
    # The resumed run saw exactly the batches the uninterrupted run saw after the interruption.
    seen_after = [e["batch"][1].tolist() for e in resumed_order.of("on_train_step_end")]
    all_batches = [e["batch"][1].tolist() for e in uninterrupted_order.of("on_train_step_end")]
    assert seen_after == all_batches[len(all_batches) - len(seen_after) :]
    assert resumed.run_history.current_epoch == reference.run_history.current_epoch == 4


def test_resuming_a_second_run_that_kept_the_history_ends_where_it_would_have(tmp_path):
    train_data = make_classification_dataset(num_samples=40, seed=0)
    kwargs = dict(num_epochs=2, per_device_batch_size=8)

    reference = _resumable_trainer()
    reference.train(train_data, **kwargs)
    reference.train(train_data, reset_run_history=False, **kwargs)  # epochs 3 and 4

    state_dir = tmp_path / "state"
    interrupted = _resumable_trainer()
    interrupted.train(train_data, **kwargs)
    interrupted.callback_handler.add_callback(SaveAtEpochEndAndInterrupt(state_dir, at_epoch=3))
    with pytest.raises(Interrupt):
        interrupted.train(train_data, reset_run_history=False, **kwargs)

    resumed = _resumable_trainer()
    resumed.train(train_data, resume_from=state_dir, **kwargs)
    assert resumed.last_epoch == 4
    assert resumed.run_history.current_epoch == 5
    assert resumed.run_history.get_metric_values("train_loss_epoch") == pytest.approx(
        reference.run_history.get_metric_values("train_loss_epoch"), rel=1e-6
    )
    torch.testing.assert_close(flat(resumed.model), flat(reference.model), rtol=0, atol=0)


def test_training_state_folder_is_replaced_atomically(make_trainer, train_data, tmp_path):
    trainer = make_trainer()
    trainer.train(train_data, num_epochs=1)
    state_dir = tmp_path / "state"
    trainer.save_training_state(state_dir)
    trainer.save_training_state(state_dir)
    assert sorted(os.listdir(tmp_path)) == ["state"]
    assert "pa_trainer_state.pt" in os.listdir(state_dir)


def test_resume_from_a_folder_that_is_not_a_state_says_so(make_trainer, train_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="resume_from=.*not a training state"):
        make_trainer().train(train_data, num_epochs=1, resume_from=tmp_path)
