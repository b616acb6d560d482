import pytest
import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import CountHostSyncs, make_classification_dataset, tiny_classifier

# Tiny models gain nothing from intra-op threads, and a process forked by the two-process tests
# after OpenMP started its thread pool can hang in its first parallel region.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No third-party plugins, and files a callback writes by default land in a fresh folder."""
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_trainer():
    """Build a Trainer over a fresh tiny classifier with SGD; extra kwargs go to Trainer."""

    def make(callbacks=(), lr=0.1, model=None, trainer_class=Trainer, **kwargs):
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


class FakeClock:
    """A clock that advances by ``seconds_per_step`` at the start of each training step."""

    def __init__(self, seconds_per_step):
        self.now = 0.0
        self.seconds_per_step = seconds_per_step

    def __call__(self):
        return self.now

    @hookimpl
    def on_train_step_start(self):
        self.now += self.seconds_per_step


@pytest.fixture
def host_syncs_per_epoch():
    """``count(callbacks_factory, num_batches)``: host reads during one epoch of ``num_batches``
    training batches (and as many eval batches) with the callbacks the factory returns."""

    def count(callbacks_factory, num_batches):
        model = tiny_classifier()
        trainer = Trainer(
            model,
            torch.nn.CrossEntropyLoss(),
            torch.optim.SGD(model.parameters(), lr=0.1),
            callbacks=list(callbacks_factory()),
        )
        data = make_classification_dataset(num_samples=4 * num_batches)
        with CountHostSyncs() as counter:
            trainer.train(data, num_epochs=1, eval_dataset=data, per_device_batch_size=4)
        return counter.count

    return count


@pytest.fixture
def fake_clock():
    return FakeClock
