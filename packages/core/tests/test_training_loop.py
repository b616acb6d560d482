"""The loop's contract: event order and arguments, step counts, losses, run config."""

import functools

import pytest
import torch

from pa_core import StopTrainingError, Trainer, TrainerCallback, TrainerPlaceholderValues, hookimpl
from pa_core.testing import RecordingCallback, tiny_classifier


class CountingScheduler:
    """A minimal scheduler recording how often it steps and the arguments it was built with."""

    def __init__(self, optimizer, **kwargs):
        self.optimizer, self.kwargs, self.steps = optimizer, kwargs, 0

    def step(self):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_event_order_and_arguments_with_accumulation_and_eval(make_trainer, train_data, eval_data):
    recorder = RecordingCallback()
    trainer = make_trainer(callbacks=[recorder])
    # 40 samples / batch 8 = 5 batches; GA 2 -> updates after batches 2, 4 and the last one.
    trainer.train(
        train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=8, gradient_accumulation_steps=2
    )

    names = recorder.names()
    assert names[0] == "on_init_end"
    assert names[1] == "on_training_run_start"
    assert names[-1] == "on_training_run_end"
    epoch = (
        ["on_train_epoch_start"]
        + ["on_train_step_start", "on_train_step_end"] * 2
        + ["on_train_update_end"]
        + ["on_train_step_start", "on_train_step_end"] * 2
        + ["on_train_update_end"]
        + ["on_train_step_start", "on_train_step_end", "on_train_update_end"]
        + ["on_train_epoch_end", "on_eval_epoch_start"]
        + ["on_eval_step_start", "on_eval_step_end"] * 3
        + ["on_eval_epoch_end", "on_training_run_epoch_end"]
    )
    assert names[2:-1] == epoch * 2

    step_ends = recorder.of("on_train_step_end")
    assert [e["step"] for e in step_ends] == [0, 1, 2, 3, 4] * 2
    assert set(step_ends[0]) == {"batch", "batch_output", "step"}
    assert set(step_ends[0]["batch_output"]) >= {"loss", "model_outputs", "batch_size"}
    assert step_ends[0]["batch_output"]["loss"].ndim == 0
    assert [e["num_updates"] for e in recorder.of("on_train_update_end")] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in recorder.of("on_train_update_end")] == [1, 3, 4] * 2
    assert all(e == {"is_intermediate": False} for e in recorder.of("on_eval_epoch_start"))


def test_optimizer_and_scheduler_steps_with_accumulation(make_trainer, train_data):
    trainer = make_trainer()
    optimizer_steps = []
    original_step = trainer.optimizer.step

    def counting_step(*args, **kwargs):
        optimizer_steps.append(1)
        return original_step(*args, **kwargs)

    trainer.optimizer.step = counting_step
    # 40 samples / 4 = 10 batches; GA 3 -> updates after batches 3, 6, 9, 10 = 4 per epoch.
    trainer.train(
        train_data,
        num_epochs=3,
        per_device_batch_size=4,
        gradient_accumulation_steps=3,
        create_scheduler_fn=CountingScheduler,
    )
    assert len(optimizer_steps) == 12
    assert trainer.scheduler.steps == 12
    assert trainer.run_config.num_update_steps_per_epoch == 4


def test_max_num_train_steps_counts_optimizer_updates(make_trainer, train_data):
    recorder = RecordingCallback()
    trainer = make_trainer(callbacks=[recorder])
    # 10 batches of 4, GA 2 -> 5 updates per epoch; 7 updates need 2 epochs.
    trainer.train(
        train_data,
        num_epochs=100,
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        max_num_train_steps=7,
        create_scheduler_fn=CountingScheduler,
    )
    assert trainer.run_config.num_epochs == 2
    assert recorder.count("on_train_update_end") == 7
    assert trainer.scheduler.steps == 7
    assert recorder.count("on_train_epoch_end") == 2
    assert recorder.count("on_train_step_end") == 10 + 4
    assert trainer.run_history.current_epoch == 3


def test_train_loss_epoch_is_the_true_mean_loss_under_accumulation(train_data):
    """SPEC 9.1: with GA the recorded loss is the real loss, not loss / GA."""
    batch_losses = []

    class RecordLoss:
        @hookimpl
        def on_train_step_end(self, batch_output):
            batch_losses.append((batch_output["loss"].item(), batch_output["batch_size"]))

    model = tiny_classifier()
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.0), callbacks=[RecordLoss()]
    )
    # lr 0 keeps the weights fixed, so every batch's loss is the loss of the same model.
    # 40 samples in batches of 6: uneven last batch (4), so the mean must be sample-weighted.
    trainer.train(train_data, num_epochs=1, per_device_batch_size=6, gradient_accumulation_steps=4)
    expected = sum(loss * n for loss, n in batch_losses) / sum(n for _, n in batch_losses)
    with torch.no_grad():
        x, y = train_data.tensors
        full_loss = torch.nn.functional.cross_entropy(model.cpu()(x), y).item()
    recorded = trainer.run_history.get_latest_metric("train_loss_epoch")
    assert recorded == pytest.approx(expected, rel=1e-5)
    assert recorded == pytest.approx(full_loss, rel=1e-5)


def test_accumulated_gradients_equal_one_large_batch(train_data):
    """GA 4 over batches of 5 updates like one batch of 20 (plain SGD, no shuffling)."""

    def train(batch_size, ga):
        model = tiny_classifier()
        trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.5), callbacks=[])
        trainer.train(
            train_data,
            num_epochs=2,
            per_device_batch_size=batch_size,
            gradient_accumulation_steps=ga,
            train_dataloader_kwargs={"shuffle": False},
        )
        return torch.cat([p.detach().flatten().cpu() for p in trainer.model.parameters()])

    torch.testing.assert_close(train(5, 4), train(20, 1))


def test_second_run_keeping_history_trains_num_epochs_more(make_trainer, train_data):
    recorder = RecordingCallback(events=("on_train_epoch_end",))
    trainer = make_trainer(callbacks=[recorder])
    trainer.train(train_data, num_epochs=2, per_device_batch_size=8)
    assert trainer.last_epoch == 2
    trainer.train(train_data, num_epochs=3, per_device_batch_size=8, reset_run_history=False)

    assert recorder.count("on_train_epoch_end") == 2 + 3
    assert trainer.last_epoch == 5
    assert trainer.run_history.current_epoch == 6
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 5

    trainer.train(train_data, num_epochs=1, per_device_batch_size=8)  # a fresh history starts again at epoch 1
    assert trainer.last_epoch == 1
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 1


def test_placeholders_with_arithmetic_in_a_real_run(make_trainer, train_data, eval_data):
    P = TrainerPlaceholderValues
    scheduler_fn = functools.partial(
        CountingScheduler,
        epochs=P.NUM_EPOCHS,
        total=(P.NUM_EPOCHS + 1) * 2 + -1,
        steps=P.NUM_UPDATE_STEPS_PER_EPOCH,
        per_process=P.PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH + 10,
        train_len=3 * P.TRAIN_DATALOADER_LEN,
        eval_len=P.EVAL_DATALOADER_LEN,
    )
    trainer = make_trainer()
    trainer.train(
        train_data,
        num_epochs=3,
        eval_dataset=eval_data,
        per_device_batch_size=8,
        gradient_accumulation_steps=2,
        create_scheduler_fn=scheduler_fn,
    )
    assert trainer.scheduler.kwargs == {
        "epochs": 3,
        "total": 7,
        "steps": 3,
        "per_process": 13,
        "train_len": 15,
        "eval_len": 3,
    }


def test_placeholder_subtraction_asks_for_addition():
    with pytest.raises(NotImplementedError, match="add a negative number"):
        TrainerPlaceholderValues.NUM_EPOCHS - 1
    assert TrainerPlaceholderValues.placeholder_set() == {
        "NUM_EPOCHS",
        "NUM_UPDATE_STEPS_PER_EPOCH",
        "PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH",
        "TRAIN_DATALOADER_LEN",
        "EVAL_DATALOADER_LEN",
    }


def test_run_config_fields(make_trainer, train_data, eval_data):
    trainer = make_trainer()
    trainer.train(
        train_data,
        num_epochs=2,
        eval_dataset=eval_data,
        per_device_batch_size=4,
        gradient_accumulation_steps=3,
        gradient_clip_value=0.5,
        eval_dataloader_kwargs={"batch_size": 5},
    )
    config = trainer.run_config
    assert config.num_epochs == 2
    assert config.train_per_device_batch_size == 4
    assert config.eval_per_device_batch_size == 5
    assert config.gradient_accumulation_steps == 3
    assert config.gradient_clip_value == 0.5
    assert config.train_total_batch_size == 12
    assert config.eval_total_batch_size == 5
    assert config.num_update_steps_per_epoch == 4  # ceil(10 batches / 3)
    assert config.num_local_update_steps_per_epoch == 4
    assert config.max_num_train_steps is None
    assert config.is_local_process_zero and config.is_world_process_zero
    assert not config.is_distributed
    assert config.mixed_precision == "no"
    assert config.num_processes == 1
    as_dict = config.to_dict()
    assert as_dict["train_dl_kwargs"]["shuffle"] is True
    assert as_dict["eval_dl_kwargs"]["batch_size"] == 5


def test_run_config_to_dict_drops_samplers(make_trainer, train_data):
    import pickle

    trainer = make_trainer()
    sampler = torch.utils.data.SequentialSampler(train_data)
    trainer.train(train_data, num_epochs=1, train_dataloader_kwargs={"sampler": sampler})
    assert "shuffle" not in trainer.run_config.train_dl_kwargs  # a sampler replaces shuffling
    as_dict = trainer.run_config.to_dict()
    assert "sampler" not in as_dict["train_dl_kwargs"]
    pickle.dumps(as_dict)


def test_stop_training_error_ends_cleanly_and_run_end_fires(make_trainer, train_data, capsys):
    class StopAfterTwoEpochs:
        @hookimpl
        def on_training_run_epoch_end(self, trainer):
            if trainer.run_history.current_epoch == 2:
                raise StopTrainingError("enough training")

    recorder = RecordingCallback()
    trainer = make_trainer(callbacks=[StopAfterTwoEpochs(), recorder])
    trainer.train(train_data, num_epochs=10)
    assert recorder.count("on_train_epoch_end") == 2
    assert recorder.count("on_stop_training_error") == 1
    assert isinstance(recorder.of("on_stop_training_error")[0]["error"], StopTrainingError)
    assert recorder.names()[-1] == "on_training_run_end"
    assert "enough training" in capsys.readouterr().out


def test_exception_hook_fires_and_the_error_propagates(make_trainer, train_data):
    class Boom:
        @hookimpl
        def on_train_epoch_end(self, trainer):
            raise RuntimeError("boom")

    recorder = RecordingCallback()
    trainer = make_trainer(callbacks=[Boom(), recorder])
    with pytest.raises(RuntimeError, match="boom") as info:
        trainer.train(train_data, num_epochs=2)
    assert recorder.count("on_exception") == 1
    assert recorder.of("on_exception")[0]["exception"] is info.value
    assert any("Boom" in note and "on_train_epoch_end" in note for note in getattr(info.value, "__notes__", []))


def test_tryfirst_trylast_and_wrappers_are_honoured(make_trainer, train_data):
    calls = []

    class Last:
        @hookimpl(trylast=True)
        def on_train_epoch_start(self, trainer):
            calls.append("last")

    class Plain:
        @hookimpl
        def on_train_epoch_start(self, trainer):
            calls.append("plain")

    class First(TrainerCallback):
        @hookimpl(tryfirst=True)
        def on_train_epoch_start(self, trainer, **kwargs):
            calls.append("first")

    class Wrapper:
        @hookimpl(wrapper=True)
        def on_train_epoch_end(self, trainer):
            calls.append("before")
            yield
            calls.append("after")

    class Inner:
        @hookimpl
        def on_train_epoch_end(self, trainer):
            calls.append("inner")

    make_trainer(callbacks=[Last(), Plain(), First(), Wrapper(), Inner()]).train(train_data, num_epochs=1)
    assert calls == ["first", "plain", "last", "before", "inner", "after"]


def test_callbacks_run_in_the_order_given_in_both_styles(make_trainer, train_data):
    calls = []

    class NewStyle:
        def __init__(self, name):
            self.name = name

        @hookimpl
        def on_train_epoch_start(self):
            calls.append(self.name)

    class A(NewStyle):
        pass

    class B(NewStyle):
        pass

    class Upstream(TrainerCallback):
        def on_train_epoch_start(self, trainer, **kwargs):
            calls.append("upstream")

    trainer = make_trainer(callbacks=[A("a"), Upstream(), B("b")])
    trainer.train(train_data, num_epochs=1)
    assert calls == ["a", "upstream", "b"]
    trainer.callback_handler.add_callback(NewStyle("late"))
    calls.clear()
    trainer.train(train_data, num_epochs=1)
    assert calls == ["a", "upstream", "b", "late"]


def test_upstream_style_callback_works_unchanged(make_trainer, train_data, eval_data):
    class UpstreamCallback(TrainerCallback):
        """Written the way pytorch-accelerated users write callbacks."""

        def __init__(self):
            self.seen = []

        def on_train_step_end(self, trainer, **kwargs):
            self.seen.append(("step", kwargs["step"], kwargs["batch_output"]["batch_size"]))

        def on_eval_epoch_end(self, trainer, **kwargs):
            self.seen.append(("eval", trainer.run_history.get_latest_metric("eval_loss_epoch") > 0))

        def on_training_run_end(self, trainer, **kwargs):
            self.seen.append(("end", trainer.run_history.current_epoch))

    callback = UpstreamCallback()
    trainer = make_trainer(callbacks=[callback])
    trainer.train(train_data, num_epochs=1, eval_dataset=eval_data, per_device_batch_size=20)
    assert callback.seen == [("step", 0, 20), ("step", 1, 20), ("eval", True), ("end", 2)]


def test_custom_events_reach_only_callbacks_that_define_them(make_trainer):
    received = []

    class Listener:
        @hookimpl(optionalhook=True)
        def on_my_event(self, trainer, value):
            received.append(("new", value))

    class UpstreamListener(TrainerCallback):
        def on_my_event(self, trainer, **kwargs):
            received.append(("upstream", kwargs["value"]))

    class Bystander:
        @hookimpl
        def on_train_epoch_end(self):
            pass

    trainer = make_trainer(callbacks=[UpstreamListener(), Bystander(), Listener()])
    trainer.callback_handler.call_event("on_my_event", trainer=trainer, value=3)
    assert received == [("upstream", 3), ("new", 3)]


def test_same_callback_class_twice_is_an_error(make_trainer):
    with pytest.raises(ValueError, match="RecordingCallback"):
        make_trainer(callbacks=[RecordingCallback(), RecordingCallback()])


def test_misspelled_hook_is_caught_at_start(make_trainer):
    class Typo:
        @hookimpl
        def on_train_epoch_ned(self, trainer):
            pass

    with pytest.raises(ValueError, match="did you mean 'on_train_epoch_end'"):
        make_trainer(callbacks=[Typo()])


def test_hook_with_unknown_argument_is_rejected(make_trainer):
    class WrongArgs:
        @hookimpl
        def on_train_epoch_end(self, trainer, loss):
            pass

    with pytest.raises(TypeError, match="WrongArgs"):
        make_trainer(callbacks=[WrongArgs()])


def test_callback_classes_are_instantiated(make_trainer, train_data):
    trainer = make_trainer(callbacks=[RecordingCallback])
    trainer.train(train_data, num_epochs=1)
    (recorder,) = trainer.callback_handler.callbacks
    assert recorder.count("on_train_epoch_end") == 1


def test_evaluate_records_evaluation_loss_and_fires_events(make_trainer, eval_data):
    recorder = RecordingCallback()
    trainer = make_trainer(callbacks=[recorder])
    trainer.evaluate(eval_data, per_device_batch_size=7)
    x, y = eval_data.tensors
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(trainer.model.cpu()(x), y).item()
    assert trainer.run_history.get_latest_metric("evaluation_loss") == pytest.approx(expected, rel=1e-5)
    assert recorder.names()[1:] == (
        ["on_evaluation_run_start", "on_eval_epoch_start"]
        + ["on_eval_step_start", "on_eval_step_end"] * 3
        + ["on_eval_epoch_end", "on_evaluation_run_end"]
    )


def test_training_reduces_the_loss_and_model_is_unwrapped(make_trainer, train_data, eval_data):
    trainer = make_trainer()
    trainer.train(train_data, num_epochs=5, eval_dataset=eval_data)
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert losses[-1] < losses[0] * 0.5
    assert len(trainer.run_history.get_metric_values("eval_loss_epoch")) == 5
    assert type(trainer.model) is torch.nn.Sequential


def test_train_without_pa_callbacks_hints_once_at_default(train_data, monkeypatch):
    from pa_core import plugins
    from pa_core.trainer import DEFAULT_CALLBACKS

    installed = plugins.entries(plugins.CALLBACKS_GROUP)
    if all(name in installed for name in DEFAULT_CALLBACKS):
        pytest.skip("pa-callbacks is installed here; this checks pa-core on its own")
    model = tiny_classifier()
    with pytest.warns(UserWarning, match="pip install pa-callbacks"):
        trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(train_data, num_epochs=1)
    assert trainer.run_history.get_metric_names() == {"train_loss_epoch"}


def test_seeding_makes_runs_repeatable(train_data):
    def run():
        model = tiny_classifier()
        trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[])
        trainer.train(train_data, num_epochs=2, per_device_batch_size=4)
        return torch.cat([p.detach().flatten().cpu() for p in trainer.model.parameters()])

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_importing_pa_core_seeds_nothing():
    import subprocess
    import sys

    code = (
        "import torch; torch.manual_seed(123); before = torch.rand(1); torch.manual_seed(123); "
        "import pa_core; assert torch.rand(1).item() == before.item(), 'import pa_core changed the RNG'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_batch_output_points_at_the_method(make_trainer, train_data):
    class NoLoss(Trainer):
        def calculate_train_batch_loss(self, batch):
            return {"model_outputs": self.model(batch[0]), "batch_size": 8}

    model = tiny_classifier()
    trainer = NoLoss(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[])
    with pytest.raises(ValueError, match="calculate_train_batch_loss must return a dict with 'loss'"):
        trainer.train(train_data, num_epochs=1)


def test_non_scalar_loss_is_reported(train_data):
    model = tiny_classifier()
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(reduction="none"), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[]
    )
    with pytest.raises(ValueError, match=r"must be a scalar tensor, got \(8,\)"):
        trainer.train(train_data, num_epochs=1)


def test_dict_batches_and_model_computed_loss_by_overriding(train_data):
    """loss_func=None and dict batches: the documented override path."""

    class DictDataset(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return {"inputs": x, "labels": y}

    class ModelWithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_classifier()

        def forward(self, inputs, labels):
            logits = self.net(inputs)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    class DictTrainer(Trainer):
        def calculate_train_batch_loss(self, batch):
            out = self.model(**batch)
            return {"loss": out["loss"], "model_outputs": out["logits"], "batch_size": batch["labels"].size(0)}

    model = ModelWithLoss()
    trainer = DictTrainer(model, None, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[])
    trainer.train(DictDataset(train_data), num_epochs=3, train_dataloader_kwargs={"num_workers": 0})
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert losses[-1] < losses[0]


def test_trainer_with_timm_scheduler_steps_per_update_and_per_epoch(train_data):
    from pa_core import TrainerWithTimmScheduler

    class TimmLikeScheduler:
        def __init__(self, optimizer):
            self.updates, self.epochs = [], []

        def step_update(self, num_updates):
            self.updates.append(num_updates)

        def step(self, epoch):
            self.epochs.append(epoch)

        def state_dict(self):
            return {}

    model = tiny_classifier()
    trainer = TrainerWithTimmScheduler(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[]
    )
    trainer.train(
        train_data,
        num_epochs=2,
        per_device_batch_size=8,
        gradient_accumulation_steps=2,
        create_scheduler_fn=TimmLikeScheduler,
    )
    assert trainer.scheduler.updates == [1, 2, 3, 4, 5, 6]
    assert trainer.scheduler.epochs == [1, 2]
