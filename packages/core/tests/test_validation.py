"""Bad input is reported before any training step, naming the argument and the value."""

import pytest
import torch

from pa_core import hookimpl
from pa_core.testing import make_classification_dataset


class FailIfAnyStep:
    @hookimpl
    def on_train_step_start(self):
        raise AssertionError("a training step ran before the bad input was reported")


GOOD = dict(num_epochs=1, per_device_batch_size=4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"train_dataset": torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0))},
            r"train_dataset is empty",
        ),
        ({"train_dataset": None}, r"train_dataset is None"),
        ({"eval_dataset": []}, r"eval_dataset is empty"),
        ({"num_epochs": 0}, r"num_epochs must be a positive integer .* got 0"),
        ({"num_epochs": 2.5}, r"num_epochs must be a positive integer .* got 2.5"),
        ({"per_device_batch_size": 0}, r"per_device_batch_size must be a positive integer .* got 0"),
        ({"per_device_batch_size": -3}, r"per_device_batch_size .* got -3"),
        ({"gradient_accumulation_steps": 0}, r"gradient_accumulation_steps must be a positive integer .* got 0"),
        ({"max_num_train_steps": 0}, r"max_num_train_steps must be a positive integer .* got 0"),
        ({"gradient_clip_value": -1.0}, r"gradient_clip_value must be a positive number or None, got -1.0"),
        ({"create_scheduler_fn": "cosine"}, r"create_scheduler_fn must be callable"),
        ({"per_device_batch_size": True}, r"per_device_batch_size must be a positive integer .* got True"),
        ({"train_dataloader_kwargs": [("shuffle", False)]}, r"train_dataloader_kwargs must be a dict .* got \[\("),
        ({"eval_dataloader_kwargs": "fast"}, r"eval_dataloader_kwargs must be a dict .* got 'fast'"),
        ({"collate_fn": 3}, r"collate_fn must be callable or None, got 3"),
        ({"reset_run_history": "no"}, r"reset_run_history must be True or False, got 'no'"),
        ({"resume_from": "/nonexistent/state"}, r"resume_from='/nonexistent/state' is not a training state"),
    ],
)
def test_bad_train_arguments(make_trainer, train_data, overrides, message):
    trainer = make_trainer(callbacks=[FailIfAnyStep()])
    kwargs = {"train_dataset": train_data, **GOOD, **overrides}
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=message):
        trainer.train(**kwargs)


def test_unknown_callback_name_says_what_to_install(make_trainer):
    from pa_core import plugins

    with pytest.raises(plugins.PluginError, match="No callback named 'no-such-callback' is installed"):
        make_trainer(callbacks=["no-such-callback"])
    installed = plugins.entries(plugins.CALLBACKS_GROUP)
    missing = [name for name in plugins.FIRST_PARTY_PROVIDERS if name not in installed]
    if not missing:
        pytest.skip("every first-party distribution is installed here")
    provider = plugins.FIRST_PARTY_PROVIDERS[missing[0]]
    with pytest.raises(plugins.PluginError, match=f"provided by {provider}: pip install {provider}"):
        make_trainer(callbacks=[missing[0]])


def test_training_without_an_optimizer_is_explained(train_data):
    from pa_core import Trainer
    from pa_core.testing import tiny_classifier

    trainer = Trainer(tiny_classifier(), torch.nn.CrossEntropyLoss(), None, callbacks=[])
    with pytest.raises(ValueError, match="optimizer=None"):
        trainer.train(train_data, num_epochs=1)


def test_evaluate_without_a_dataset_is_explained(make_trainer):
    with pytest.raises(ValueError, match="evaluate\\(\\) needs a dataset"):
        make_trainer().evaluate()


def test_eval_batch_size_checks_apply_only_when_distributed(make_trainer):
    # On one process a batch larger than the dataset is fine.
    trainer = make_trainer()
    trainer.evaluate(make_classification_dataset(num_samples=5), per_device_batch_size=64)
    assert trainer.run_history.get_latest_metric("evaluation_loss") > 0


def test_accumulation_configured_in_accelerate_must_match_train(train_data):
    from accelerate import Accelerator

    from pa_core import Trainer
    from pa_core.testing import tiny_classifier

    class AccumulatingAccelerate(Trainer):
        def _create_accelerator(self):
            return Accelerator(**self._accelerator_kwargs(), gradient_accumulation_steps=3)

    model = tiny_classifier()
    trainer = AccumulatingAccelerate(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[FailIfAnyStep()]
    )
    with pytest.raises(ValueError, match="configured for 3 gradient-accumulation steps.*gradient_accumulation_steps=2"):
        trainer.train(train_data, num_epochs=1, gradient_accumulation_steps=2)
    trainer.callback_handler.remove_callback(FailIfAnyStep)
    trainer.train(train_data, num_epochs=1, gradient_accumulation_steps=3)  # pa divides by 3 once, not twice
    assert trainer._accelerator.gradient_accumulation_steps == 1
