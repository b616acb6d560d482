"""ModelEmaCallback: the average matches one computed by hand, is evaluated and saved."""

import copy

import pytest
import torch

from pa_callbacks import ModelEmaCallback
from pa_core import hookimpl
from pa_core.testing import RecordingCallback


class Snapshots:
    """Copies of the model's weights at the start of the run, after each update and each epoch."""

    def __init__(self):
        self.start, self.updates, self.epochs = None, [], []

    @staticmethod
    def _copy(trainer):
        return {k: v.detach().clone() for k, v in trainer.get_model().state_dict().items()}

    @hookimpl
    def on_training_run_start(self, trainer):
        self.start = self._copy(trainer)

    @hookimpl
    def on_train_update_end(self, trainer):
        self.updates.append(self._copy(trainer))

    @hookimpl
    def on_train_epoch_end(self, trainer):
        self.epochs.append(self._copy(trainer))


def ema_by_hand(start, snapshots, decay):
    ema = {k: v.clone() for k, v in start.items()}
    for weights in snapshots:
        ema = {k: decay * ema[k] + (1 - decay) * weights[k] for k in ema}
    return ema


def assert_weights_close(actual, expected):
    assert actual.keys() == expected.keys()
    for key in actual:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-6, atol=1e-7)


def eval_loss(model, weights, dataset):
    model = copy.deepcopy(model)
    model.load_state_dict(weights)
    x, y = dataset.tensors
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y).item()


def test_the_average_is_updated_each_epoch_evaluated_and_the_best_saved(make_trainer, train_data, eval_data, tmp_path):
    snapshots = Snapshots()
    ema = ModelEmaCallback(decay=0.7, save_path=tmp_path / "ema.pt")
    trainer = make_trainer(callbacks=[snapshots, ema])
    trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)

    averages = [ema_by_hand(snapshots.start, snapshots.epochs[:n], 0.7) for n in (1, 2, 3)]
    assert_weights_close(ema.ema_model.module.state_dict(), averages[-1])
    # Each epoch's ema_model_eval_loss_epoch is the loss of that epoch's average on the eval set.
    recorded = trainer.run_history.get_metric_values("ema_model_eval_loss_epoch")
    assert recorded == pytest.approx([eval_loss(trainer.model, avg, eval_data) for avg in averages], rel=1e-5)
    # The file holds the best average; the trainer keeps its own trained weights.
    best = min(range(3), key=lambda i: recorded[i])
    saved = torch.load(tmp_path / "ema.pt", weights_only=True)
    assert saved["epoch"] == best + 1
    assert "optimizer_state_dict" not in saved
    assert_weights_close(saved["model_state_dict"], averages[best])
    assert_weights_close(trainer.model.state_dict(), snapshots.epochs[-1])
    assert trainer.run_history.get_metric_values("eval_loss_epoch") != recorded


def test_the_average_can_be_updated_every_n_optimizer_steps(make_trainer, train_data, tmp_path):
    snapshots = Snapshots()
    # With decay 0 the average is the model as it was at the last update it saw.
    ema = ModelEmaCallback(
        decay=0.0, evaluate_during_training=False, update_every_n_steps=2, save_path=tmp_path / "e.pt"
    )
    trainer = make_trainer(callbacks=[snapshots, ema])
    trainer.train(train_data, num_epochs=1, per_device_batch_size=8)  # 5 updates

    assert len(snapshots.updates) == 5
    assert_weights_close(ema.ema_model.module.state_dict(), snapshots.updates[3])
    with pytest.raises(AssertionError):
        assert_weights_close(ema.ema_model.module.state_dict(), snapshots.updates[4])


def test_without_evaluation_the_average_is_saved_every_epoch(make_trainer, train_data, tmp_path):
    snapshots = Snapshots()
    ema = ModelEmaCallback(decay=0.5, evaluate_during_training=False, save_path=tmp_path / "ema.pt")
    trainer = make_trainer(callbacks=[snapshots, ema])
    trainer.train(train_data, num_epochs=2, per_device_batch_size=8)
    saved = torch.load(tmp_path / "ema.pt", weights_only=True)["model_state_dict"]
    assert_weights_close(saved, ema_by_hand(snapshots.start, snapshots.epochs, 0.5))
    assert "ema_model_eval_loss_epoch" not in trainer.run_history.get_metric_names()


def test_only_its_own_callbacks_see_the_averages_evaluation(make_trainer, train_data, eval_data, tmp_path):
    inner, outer = RecordingCallback(), RecordingCallback()
    ema = ModelEmaCallback(save_path=tmp_path / "ema.pt", callbacks=[inner])
    trainer = make_trainer(callbacks=[ema, outer])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=8)
    assert inner.count("on_eval_epoch_end") == 2
    assert inner.count("on_eval_step_end") == 2 * 3
    assert outer.count("on_eval_epoch_end") == 2
    assert trainer.run_history.metric_name_prefix == ""


def test_evaluating_the_average_needs_an_eval_set(make_trainer, train_data):
    trainer = make_trainer(callbacks=[ModelEmaCallback()])
    with pytest.raises(ValueError, match="got no eval_dataset"):
        trainer.train(train_data, num_epochs=1)


def test_decay_must_be_in_range():
    with pytest.raises(ValueError, match=r"decay=1.5"):
        ModelEmaCallback(decay=1.5)
