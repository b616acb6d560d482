"""Step-based evaluation, limiting evaluation steps and limiting batches."""

import pytest

from pa_callbacks import LimitBatchesCallback, LimitEvalStepsCallback, StepBasedEvaluationCallback
from pa_callbacks.limits import _AdjustableLimit
from pa_core import hookimpl
from pa_core.testing import make_classification_dataset


class EvalLog:
    """For each evaluation: epoch, training batches done in the epoch, intermediate or not, eval
    batches run, the eval loader's length, and what the run history held at its end."""

    def __init__(self):
        self.evals = []
        self.train_mode_after_eval = []
        self._batches = 0

    @hookimpl
    def on_train_epoch_start(self):
        self._batches = 0

    @hookimpl
    def on_train_step_start(self, trainer):
        if self.evals:
            self.train_mode_after_eval.append(trainer.model.training)

    @hookimpl
    def on_train_step_end(self):
        self._batches += 1

    @hookimpl
    def on_eval_epoch_start(self, trainer, is_intermediate):
        self.evals.append(
            {
                "epoch": trainer.run_history.current_epoch,
                "after_batches": self._batches,
                "intermediate": is_intermediate,
                "steps": 0,
                "length": len(trainer.eval_dataloader),
            }
        )

    @hookimpl
    def on_eval_step_end(self):
        self.evals[-1]["steps"] += 1

    @hookimpl
    def on_eval_epoch_end(self, trainer):
        self.evals[-1]["metrics"] = set(trainer.run_history.get_metric_names())

    def intermediate(self):
        return [(e["epoch"], e["after_batches"]) for e in self.evals if e["intermediate"]]


@pytest.fixture
def train_data():
    return make_classification_dataset(num_samples=40, seed=0)  # 10 batches of 4


def test_step_based_evaluation_runs_every_n_steps_of_each_epoch(make_trainer, train_data, eval_data):
    log = EvalLog()
    trainer = make_trainer(callbacks=[StepBasedEvaluationCallback(eval_every_n_steps=3), log])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=4)

    # After 3, 6 and 9 batches; not after the 10th, where the epoch's own evaluation runs.
    assert log.intermediate() == [(1, 3), (1, 6), (1, 9), (2, 3), (2, 6), (2, 9)]
    assert [(e["epoch"], e["after_batches"]) for e in log.evals if not e["intermediate"]] == [(1, 10), (2, 10)]
    assert all(e["steps"] == 5 for e in log.evals)
    assert all("intermediate_eval_loss" in e["metrics"] for e in log.evals if e["intermediate"])
    assert "intermediate_eval_loss" not in trainer.run_history.get_metric_names()
    assert all(log.train_mode_after_eval)


def test_step_based_evaluation_leaves_the_training_loss_untouched(make_trainer, train_data, eval_data):
    def run(callbacks):
        trainer = make_trainer(callbacks=callbacks)
        trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=4)
        return trainer.run_history

    plain, with_evals = run([]), run([StepBasedEvaluationCallback(eval_every_n_steps=2)])
    for metric in ("train_loss_epoch", "eval_loss_epoch"):
        assert with_evals.get_metric_values(metric) == plain.get_metric_values(metric)


def test_step_based_evaluation_counts_optimizer_updates(make_trainer, train_data, eval_data):
    log = EvalLog()
    trainer = make_trainer(callbacks=[StepBasedEvaluationCallback(eval_every_n_steps=2), log])
    trainer.train(
        train_data, num_epochs=1, eval_dataset=eval_data, per_device_batch_size=4, gradient_accumulation_steps=2
    )
    assert log.intermediate() == [(1, 4), (1, 8)]  # after updates 2 and 4 of 5


def test_step_based_evaluation_needs_an_eval_set(make_trainer, train_data):
    with pytest.raises(ValueError, match="got no eval_dataset"):
        make_trainer(callbacks=[StepBasedEvaluationCallback(2)]).train(train_data, num_epochs=1)


def test_limit_eval_steps_limits_intermediate_evaluations_only(make_trainer, train_data, eval_data, capsys):
    log = EvalLog()
    callbacks = [LimitEvalStepsCallback(num_eval_steps=2), StepBasedEvaluationCallback(eval_every_n_steps=5), log]
    trainer = make_trainer(callbacks=callbacks)
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=4)

    assert [(e["intermediate"], e["steps"], e["length"]) for e in log.evals] == [(True, 2, 2), (False, 5, 5)] * 2
    assert "Limiting evaluation to 2 steps per process" in capsys.readouterr().out
    assert not isinstance(trainer.eval_dataloader, _AdjustableLimit)  # unwrapped after the run
    assert trainer.run_history.get_metric_values("eval_loss_epoch")  # each epoch's evaluation saw all samples


def test_limit_eval_steps_can_limit_every_evaluation(make_trainer, train_data, eval_data):
    log = EvalLog()
    trainer = make_trainer(callbacks=[LimitEvalStepsCallback(num_eval_steps=3, limit_intermediate_only=False), log])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=4)
    trainer.evaluate(eval_data, per_device_batch_size=4)
    assert [e["steps"] for e in log.evals] == [3, 3, 3]


def test_limit_batches_limits_training_and_evaluation(make_trainer, train_data, eval_data):
    log = EvalLog()
    trainer = make_trainer(callbacks=[LimitBatchesCallback(num_batches=3), log])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=4)
    assert [(e["after_batches"], e["steps"]) for e in log.evals] == [(3, 3), (3, 3)]
    trainer.evaluate(eval_data, per_device_batch_size=4)
    assert log.evals[-1]["steps"] == 3


def test_limits_must_be_positive():
    for make in (LimitBatchesCallback, LimitEvalStepsCallback, StepBasedEvaluationCallback):
        with pytest.raises(ValueError, match=r"=0\) is not accepted"):
            make(0)
