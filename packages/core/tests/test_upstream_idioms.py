"""pytorch-accelerated idioms that keep working after `pa migrate`, and small corrections of round three."""

import pytest
import torch
from torch.utils.data import IterableDataset

from pa_core import Trainer
from pa_core.testing import RecordingCallback, make_classification_dataset, tiny_classifier
from pa_core.utils import LimitBatches, LimitBatchesCallback


class UpstreamTimmStyleTrainer(Trainer):
    """As upstream's timm mixup example writes it: the subclass keeps its own update count."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_updates = None

    def training_run_start(self):
        self.num_updates = (self.run_history.current_epoch - 1) * len(self._train_dataloader)

    def scheduler_step(self):
        self.num_updates += 1


def _sgd_trainer(trainer_class=Trainer, callbacks=()):
    model = tiny_classifier()
    return trainer_class(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=list(callbacks)
    )


def test_a_subclass_may_assign_num_updates_and_keep_its_own_count():
    trainer = _sgd_trainer(UpstreamTimmStyleTrainer)
    assert trainer.num_updates is None
    trainer.train(
        make_classification_dataset(num_samples=32),
        num_epochs=2,
        per_device_batch_size=8,
        create_scheduler_fn=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=1),
        max_num_train_steps=6,
    )
    assert trainer.num_updates == 6  # the subclass's own count, stepped with the scheduler
    assert trainer.run_state.num_updates == 6  # pa's count, which max_num_train_steps used


def test_a_trainer_created_inside_limit_batches_gets_the_limiting_callback_first():
    recorder = RecordingCallback(events=("on_train_step_start", "on_eval_step_start"))
    with LimitBatches(2):
        trainer = _sgd_trainer(callbacks=[recorder])
    assert isinstance(trainer.callback_handler.callbacks[0], LimitBatchesCallback)
    assert trainer.callback_handler.callbacks[0].num_batches == 2
    data = make_classification_dataset(num_samples=64)
    trainer.train(data, num_epochs=2, eval_dataset=data, per_device_batch_size=8)
    assert recorder.count("on_train_step_start") == 4 and recorder.count("on_eval_step_start") == 4


def test_run_config_batch_sizes_honour_the_data_loader_kwargs():
    trainer = _sgd_trainer()
    trainer.train(
        make_classification_dataset(num_samples=32),
        num_epochs=1,
        eval_dataset=make_classification_dataset(num_samples=16),
        per_device_batch_size=8,
        gradient_accumulation_steps=2,
        train_dataloader_kwargs={"batch_size": 4},
        eval_dataloader_kwargs={"batch_size": 16},
    )
    config = trainer.run_config
    assert (config.train_per_device_batch_size, config.train_total_batch_size) == (4, 8)
    assert (config.eval_per_device_batch_size, config.eval_total_batch_size) == (16, 16)
    assert config.num_update_steps_per_epoch == 4  # 8 batches of 4, 2 per update


class OneShotStream(IterableDataset):
    """A common mistake: the iterator is made once, so the second epoch has no data."""

    def __init__(self):
        self.iterator = iter(make_classification_dataset(num_samples=16))

    def __iter__(self):
        return self.iterator


def test_an_epoch_without_samples_records_no_nan_loss_and_says_why():
    trainer = _sgd_trainer()
    with pytest.warns(RuntimeWarning, match=r"train_loss_epoch is not recorded for epoch 2: the epoch had no samples"):
        trainer.train(OneShotStream(), num_epochs=2, per_device_batch_size=8)
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert len(losses) == 1 and losses[0] == losses[0]  # epoch 1's loss only, and not NaN
