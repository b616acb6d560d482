"""Edges of the public API that a new user hit: what a plugin may call, and bad settings named early."""

import signal

import pytest
import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, tiny_classifier


def _trainer(callbacks=(), loss_func=None):
    model = tiny_classifier()
    return Trainer(
        model,
        loss_func or torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=callbacks,
    )


def test_a_loss_class_instead_of_an_instance_is_refused_at_construction():
    with pytest.raises(TypeError, match=r"got the class torch\.nn\.MSELoss itself.*loss_func=torch\.nn\.MSELoss\(\)"):
        _trainer(loss_func=torch.nn.MSELoss)


@pytest.mark.parametrize("signals", ["SIGUSR1", signal.SIGUSR1, ("SIGUSR1", signal.SIGTERM)])
def test_preemption_signals_may_be_one_signal_or_names(signals):
    trainer = _trainer()
    trainer.preemption_signals = signals
    trainer.train(make_classification_dataset(num_samples=16), num_epochs=1)
    assert signal.SIGUSR1 in trainer.run_state.preemption_signals


def test_an_unknown_preemption_signal_is_named_before_any_step():
    trainer = _trainer()
    trainer.preemption_signals = ("SIGNOPE",)
    with pytest.raises(ValueError, match="preemption_signals holds 'SIGNOPE', which is not a signal"):
        trainer.train(make_classification_dataset(num_samples=16), num_epochs=1)


def test_a_nested_evaluation_with_the_trainers_own_callbacks_is_refused_not_endless():
    class EvaluatesAgain:
        @hookimpl
        def on_eval_epoch_end(self, trainer, is_intermediate):
            trainer.run_eval_epoch(metric_prefix="again_")

    trainer = _trainer(callbacks=[EvaluatesAgain()])
    data = make_classification_dataset(num_samples=16)
    with pytest.raises(RuntimeError, match=r"would fire that hook again.*callbacks=\(\)"):
        trainer.train(data, num_epochs=1, eval_dataset=data)


def test_a_plugin_evaluates_its_own_loader_prepared_by_the_trainer():
    class SecondValidation:
        def __init__(self, dataset):
            self.dataset, self.losses = dataset, []

        @hookimpl
        def on_training_run_epoch_end(self, trainer):
            loader = trainer.prepare_dataloader(torch.utils.data.DataLoader(self.dataset, batch_size=5))
            self.losses.append(trainer.run_eval_epoch(loader, callbacks=(), metric_prefix="second_"))

    extra = make_classification_dataset(num_samples=11, seed=3)
    plugin = SecondValidation(extra)
    trainer = _trainer(callbacks=[plugin])
    trainer.train(make_classification_dataset(num_samples=16), num_epochs=2)
    assert trainer.run_history.get_metric_values("second_eval_loss_epoch") == plugin.losses
    x, y = extra.tensors
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(trainer.model(x), y).item()
    assert plugin.losses[-1] == pytest.approx(expected, rel=1e-5)
