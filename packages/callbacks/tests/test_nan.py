"""TerminateOnNaNCallback: stops on a non-finite loss and makes the run end with an error."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pa_callbacks import NonFiniteLossError, TerminateOnNaNCallback
from pa_core import Trainer
from pa_core.testing import RecordingCallback, make_classification_dataset, tiny_classifier


def nan_from_batch(first_bad_batch):
    """A cross-entropy loss that becomes NaN from the given training batch on (counting from 1)."""
    calls = [0]

    def loss(outputs, targets):
        value = torch.nn.functional.cross_entropy(outputs, targets)
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] >= first_bad_batch:
                return value * float("nan")
        return value

    return loss


def trainer_with(loss_func, callbacks):
    model = tiny_classifier()
    return Trainer(model, loss_func, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=callbacks)


def test_a_nan_training_loss_stops_at_the_epoch_end_and_train_raises(train_data, eval_data):
    recorder = RecordingCallback()
    trainer = trainer_with(nan_from_batch(7), [TerminateOnNaNCallback(), recorder])  # 5 batches per epoch
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match=r"train_loss_epoch is nan in epoch 2"):
        trainer.train(train_data, num_epochs=5, eval_dataset=eval_data, per_device_batch_size=8)
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 2
    assert recorder.count("on_train_epoch_end") == 1  # epoch 2's was stopped before the recorder's turn
    assert recorder.count("on_eval_epoch_start") == 1  # and before epoch 2's evaluation
    assert recorder.count("on_stop_training_error") == 1
    # The error is raised from its on_training_run_end, which runs last (trylast): the callbacks
    # listed after it still end the run, then everyone sees on_exception.
    assert recorder.names()[-3:] == ["on_stop_training_error", "on_training_run_end", "on_exception"]
    assert isinstance(recorder.of("on_exception")[0]["exception"], NonFiniteLossError)


def test_it_raises_instead_of_exiting(train_data):
    trainer = trainer_with(nan_from_batch(1), [TerminateOnNaNCallback()])
    with pytest.warns(RuntimeWarning):
        try:
            trainer.train(train_data, num_epochs=1)
        except NonFiniteLossError as error:
            assert not isinstance(error, SystemExit)
        else:
            pytest.fail("train() returned normally after a NaN loss")


def test_checking_every_n_steps_stops_before_the_bad_batch_is_applied(train_data):
    recorder = RecordingCallback()
    trainer = trainer_with(nan_from_batch(3), [recorder, TerminateOnNaNCallback(check_every_n_steps=2)])
    with pytest.raises(NonFiniteLossError, match="batch 4 of epoch 1"):
        trainer.train(train_data, num_epochs=2, per_device_batch_size=8)
    # Batch 3 was NaN; the check after batch 4 stopped before its backward pass: 3 updates, all but one finite.
    assert recorder.count("on_train_step_end") == 4
    assert recorder.count("on_train_update_end") == 3
    assert recorder.count("on_train_epoch_end") == 0


def test_a_nan_evaluation_loss_stops_training(train_data, eval_data):
    def nan_in_eval(outputs, targets):
        loss = torch.nn.functional.cross_entropy(outputs, targets)
        return loss if torch.is_grad_enabled() else loss * float("nan")

    recorder = RecordingCallback()
    trainer = trainer_with(nan_in_eval, [TerminateOnNaNCallback(), recorder])
    with pytest.raises(NonFiniteLossError, match="eval_loss_epoch is nan in epoch 1"):
        trainer.train(train_data, num_epochs=3, eval_dataset=eval_data)
    assert recorder.count("on_train_epoch_end") == 1
    with pytest.raises(NonFiniteLossError, match="evaluation_loss is nan"):
        trainer.evaluate(eval_data)


def test_finite_losses_train_to_the_end(train_data, eval_data):
    recorder = RecordingCallback()
    trainer = trainer_with(torch.nn.CrossEntropyLoss(), [TerminateOnNaNCallback(check_every_n_steps=1), recorder])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data)
    assert recorder.count("on_train_epoch_end") == 2
    assert recorder.count("on_training_run_end") == 1


def test_a_script_that_meets_a_nan_loss_exits_with_an_error(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from pa_core import Trainer
            from pa_core.testing import make_classification_dataset, tiny_classifier

            model = tiny_classifier()
            trainer = Trainer(model, lambda out, y: torch.nn.functional.cross_entropy(out, y) * float("nan"),
                              torch.optim.SGD(model.parameters(), lr=0.1))  # the default callbacks
            trainer.train(make_classification_dataset(), num_epochs=3)
            print("still running after training")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PA_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1
    assert "NonFiniteLossError" in result.stderr
    assert "Stopping training due to a non-finite loss" in result.stdout
    assert "still running" not in result.stdout
    assert "Starting epoch 2" not in result.stdout


def test_the_loss_check_of_upstream_is_kept():
    callback = TerminateOnNaNCallback()
    callback.check_for_nan_after_batch({"loss": torch.tensor(1.0)}, step="training")
    with pytest.raises(Exception, match="training loss is inf"):
        callback.check_for_nan_after_batch({"loss": torch.tensor(float("inf"))}, step="training")
    assert callback.triggered


def test_check_every_n_steps_must_be_positive():
    with pytest.raises(ValueError, match=r"check_every_n_steps=0"):
        TerminateOnNaNCallback(check_every_n_steps=0)


@pytest.fixture
def train_data():
    return make_classification_dataset(num_samples=40)


def test_callbacks_listed_after_it_still_end_the_run(tmp_path):
    from pa_callbacks import SaveBestModelCallback

    save_best = SaveBestModelCallback(save_path=tmp_path / "best.pt")
    trainer = trainer_with(nan_from_batch(7), [TerminateOnNaNCallback(), save_best])  # NaN from epoch 2
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError):
        trainer.train(train_data_for(40), num_epochs=3, eval_dataset=train_data_for(20), per_device_batch_size=8)
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model_state_dict"]
    assert all(torch.equal(best[k], v) for k, v in trainer.model.state_dict().items())  # epoch 1's weights loaded


def train_data_for(num_samples):
    return make_classification_dataset(num_samples=num_samples)
