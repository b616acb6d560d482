import pytest
import torch

from pa_core import Trainer
from pa_core.testing import make_classification_dataset, tiny_classifier

# Tiny models gain nothing from intra-op threads, and a process forked (by the two-process
# tests) after OpenMP has started its thread pool can hang in its first parallel region.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_autoloaded_plugins(monkeypatch):
    """Third-party plugins installed in the environment must not change these tests."""
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def make_trainer():
    """Build a Trainer over a fresh tiny classifier with SGD; extra kwargs go to Trainer."""

    def make(callbacks=(), lr=0.1, trainer_class=Trainer, model=None, **kwargs):
        model = model if model is not None else tiny_classifier()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        return trainer_class(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=list(callbacks), **kwargs)

    return make


@pytest.fixture
def train_data():
    return make_classification_dataset(num_samples=40, seed=0)


@pytest.fixture
def eval_data():
    return make_classification_dataset(num_samples=20, seed=1)
