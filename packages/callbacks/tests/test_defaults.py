"""The default callbacks: the upstream quick start, console output, the catalogue, and no
per-step host reads."""

import math
import re

import pytest
from torch import nn, optim
from torch.utils.data import random_split

import pa_callbacks
import pa_core
from pa_callbacks import (
    EarlyStoppingCallback,
    LogMetricsCallback,
    MoveModulesToDeviceCallback,
    PrintProgressCallback,
    ProgressBarCallback,
    SaveBestModelCallback,
    TerminateOnNaNCallback,
    get_default_callbacks,
)
from pa_core import Trainer, hookimpl
from pa_core.schedulers import WSDLrScheduler
from pa_core.testing import make_classification_dataset

# --- the upstream quick start, with only its imports changed -------------------------------------


class MNISTModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(in_features=784, out_features=128),
            nn.ReLU(),
            nn.Linear(in_features=128, out_features=64),
            nn.ReLU(),
            nn.Linear(in_features=64, out_features=10),
        )

    def forward(self, input):
        return self.main(input.view(input.shape[0], -1))


def test_the_upstream_quick_start_runs_and_reports_progress_and_metrics(capsys):
    # Synthetic 28x28 "images" stand in for MNIST, which the tests cannot download.
    dataset = make_classification_dataset(num_samples=300, num_features=784, num_classes=10)
    train_dataset, validation_dataset, test_dataset = random_split(dataset, [200, 50, 50])
    model = MNISTModel()
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loss_func = nn.CrossEntropyLoss()

    trainer = Trainer(
        model,
        loss_func=loss_func,
        optimizer=optimizer,
    )

    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        num_epochs=2,
        per_device_batch_size=32,
    )

    trainer.evaluate(
        dataset=test_dataset,
        per_device_batch_size=64,
    )

    assert [type(cb) for cb in trainer.callback_handler.callbacks] == [
        MoveModulesToDeviceCallback,
        TerminateOnNaNCallback,
        PrintProgressCallback,
        ProgressBarCallback,
        LogMetricsCallback,
    ]
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    number, seconds = r"[0-9.e+-]+", r"[0-9.]+s"
    epoch_line = (
        rf"epoch (\d)/2 \| train_loss_epoch: {number} \| eval_loss_epoch: {number} \| {seconds} \(total {seconds}\)"
    )
    assert [m.group(1) for line in lines if (m := re.fullmatch(epoch_line, line))] == ["1", "2"]
    for message in (
        "Starting training run",
        "Starting epoch 1",
        "Starting epoch 2",
        "Starting eval epoch",
        "Finishing training run",
        "Starting evaluation run",
        "Finishing evaluation run",
    ):
        assert message in lines
    assert any(re.fullmatch(rf"evaluation \| evaluation_loss: {number} \| {seconds}", line) for line in lines)
    assert lines.index("Finishing training run") > lines.index(
        next(line for line in lines if line.startswith("epoch 2/2"))
    )
    # One progress bar per epoch, finished, with its speed and loss.
    assert re.search(r"epoch 1/2: 100%.*7/7 .*step/s, loss=", err)
    assert re.search(r"epoch 2/2: 100%.*7/7 .*step/s, loss=", err)
    assert re.search(r"eval: 100%.*2/2", err)


def test_get_default_callbacks_gives_fresh_instances_in_the_default_order():
    first, second = get_default_callbacks(), get_default_callbacks()
    assert [type(cb) for cb in first] == [
        MoveModulesToDeviceCallback,
        TerminateOnNaNCallback,
        PrintProgressCallback,
        ProgressBarCallback,
        LogMetricsCallback,
    ]
    assert all(a is not b for a, b in zip(first, second))
    assert ProgressBarCallback not in [type(cb) for cb in get_default_callbacks(progress_bar=False)]
    assert len(get_default_callbacks(progress_bar=False)) == 4


def test_default_callback_classes_are_the_classes_of_pa_cores_default_names():
    from pa_core import plugins

    assert pa_callbacks.DEFAULT_CALLBACK_CLASSES == tuple(
        plugins.load_catalogue_callback(name) for name in pa_core.DEFAULT_CALLBACKS
    )
    assert tuple(type(cb) for cb in get_default_callbacks()) == pa_callbacks.DEFAULT_CALLBACK_CLASSES


def test_upstream_names_are_reexported():
    assert pa_callbacks.TrainerCallback is pa_core.TrainerCallback
    assert pa_callbacks.CallbackHandler is pa_core.CallbackHandler
    assert pa_callbacks.StopTrainingError is pa_core.StopTrainingError
    assert sorted(pa_callbacks.__all__) == sorted(set(pa_callbacks.__all__))
    assert all(hasattr(pa_callbacks, name) for name in pa_callbacks.__all__)


# --- the catalogue -----------------------------------------------------------------------------

CATALOGUE = {
    "move-modules-to-device": "MoveModulesToDeviceCallback",
    "terminate-on-nan": "TerminateOnNaNCallback",
    "print-progress": "PrintProgressCallback",
    "progress-bar": "ProgressBarCallback",
    "log-metrics": "LogMetricsCallback",
    "save-best-model": "SaveBestModelCallback",
    "early-stopping": "EarlyStoppingCallback",
    "model-ema": "ModelEmaCallback",
    "convert-sync-batchnorm": "ConvertSyncBatchNormCallback",
    "limit-batches": "LimitBatchesCallback",
    "step-based-evaluation": "StepBasedEvaluationCallback",
    "limit-eval-steps": "LimitEvalStepsCallback",
    "metrics-file": "MetricsFileCallback",
    "wsd-checkpoint": "WSDCheckpointCallback",
    "save-training-state": "SaveTrainingStateCallback",
}


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_each_catalogue_name_gives_its_callback(name, make_trainer):
    trainer = make_trainer(callbacks=[name])
    assert type(trainer.callback_handler.callbacks[0]) is getattr(pa_callbacks, CATALOGUE[name])


def test_every_catalogue_callback_trains_with_its_defaults(make_trainer, train_data, eval_data, tmp_path):
    trainer = make_trainer(callbacks=list(CATALOGUE))  # in the order above: save-training-state last
    trainer.train(
        train_data,
        num_epochs=2,
        eval_dataset=eval_data,
        per_device_batch_size=4,
        create_scheduler_fn=WSDLrScheduler.create_scheduler_fn(),
    )
    assert {"best_model.pt", "ema_model.pt", "metrics.jsonl", "training_states", "checkpoints"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert (tmp_path / "training_states" / "final").is_dir()
    # The schedule is sized on the full data (20 updates); limit-batches ran 4, before any decay.
    assert list((tmp_path / "checkpoints").iterdir()) == []
    assert trainer.run_history.get_metric_values("ema_model_eval_loss_epoch")


def test_the_same_callback_class_twice_is_an_error(make_trainer):
    with pytest.raises(ValueError, match="SaveBestModelCallback"):
        make_trainer(callbacks=[SaveBestModelCallback(), SaveBestModelCallback(save_path="other.pt")])
    with pytest.raises(ValueError, match="EarlyStoppingCallback"):
        make_trainer(callbacks=["early-stopping", EarlyStoppingCallback])


# --- console output --------------------------------------------------------------------------


def test_log_metrics_prints_one_line_per_epoch_with_every_metric(make_trainer, train_data, eval_data, capsys):
    class WritesAMetric:
        @hookimpl
        def on_eval_epoch_end(self, trainer):
            trainer.run_history.update_metric("eval_accuracy", 0.5)

    # Listed after the logger, the metric still reaches the epoch's line.
    trainer = make_trainer(callbacks=[LogMetricsCallback(), WritesAMetric()])
    trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=8)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):
        history = trainer.run_history
        assert line.startswith(
            f"epoch {epoch}/3 | train_loss_epoch: {history.get_metric_values('train_loss_epoch')[epoch - 1]:.5g} | "
            f"eval_accuracy: 0.5 | eval_loss_epoch: {history.get_metric_values('eval_loss_epoch')[epoch - 1]:.5g} | "
        )
        assert re.search(r"\| [0-9.]+s \(total [0-9.]+s\)$", line)


def test_log_metrics_is_the_override_point_for_other_sinks(make_trainer, train_data, eval_data, capsys):
    class Sink(LogMetricsCallback):
        def __init__(self):
            super().__init__()
            self.logged = []

        def log_metrics(self, trainer, metrics):
            self.logged.append((trainer.run_history.current_epoch, dict(metrics)))

    sink = Sink()
    trainer = make_trainer(callbacks=[sink])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=8)
    history = trainer.run_history
    assert sink.logged == [
        (epoch, {name: history.get_metric_values(name)[epoch - 1] for name in ("train_loss_epoch", "eval_loss_epoch")})
        for epoch in (1, 2)
    ]
    trainer.evaluate(eval_data)
    assert sink.logged[2] == (1, {"evaluation_loss": trainer.run_history.get_latest_metric("evaluation_loss")})
    assert capsys.readouterr().out == ""  # the override replaces printing


def test_a_stopped_epoch_still_gets_its_line(make_trainer, train_data, eval_data, capsys):
    # Early stopping listed before the logger ends the epoch before the logger's epoch-end event.
    trainer = make_trainer(callbacks=[EarlyStoppingCallback(early_stopping_threshold=100), LogMetricsCallback()])
    trainer.train(train_data, num_epochs=5, eval_dataset=eval_data, per_device_batch_size=8)
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(" |")[0] for line in epoch_lines] == ["epoch 1/5", "epoch 2/5"]


def test_progress_bars_do_not_flood_a_log_that_is_not_a_terminal(make_trainer, capsys):
    trainer = make_trainer(callbacks=[ProgressBarCallback()])
    trainer.train(make_classification_dataset(num_samples=400), num_epochs=1, per_device_batch_size=1)
    err = capsys.readouterr().err
    assert "400/400" in err
    assert err.count("\r") <= 3  # drawn when created and when closed, not for every step


def test_the_progress_bar_reads_the_loss_at_most_once_per_interval(host_syncs_per_epoch, fake_clock):
    def callbacks(seconds_per_step):
        def factory():
            clock = fake_clock(seconds_per_step)
            bar = ProgressBarCallback(loss_refresh_interval=1.0)
            bar._clock = clock
            return [clock, bar]

        return factory

    # With 0.5 s per step the loss is read every second step: 12 more steps, 6 more reads.
    assert host_syncs_per_epoch(callbacks(0.5), 16) - host_syncs_per_epoch(callbacks(0.5), 4) == 6
    # Slow steps (2 s each) are read every step.
    assert host_syncs_per_epoch(callbacks(2.0), 16) - host_syncs_per_epoch(callbacks(2.0), 4) == 12


def test_the_default_callbacks_read_nothing_back_per_step(host_syncs_per_epoch):
    def defaults():
        callbacks = list(get_default_callbacks())
        callbacks[3] = ProgressBarCallback(loss_refresh_interval=math.inf)  # no time-dependent reads
        return callbacks

    assert host_syncs_per_epoch(defaults, 4) == host_syncs_per_epoch(defaults, 16)


def test_move_modules_to_device_moves_helper_modules_but_not_the_model(make_trainer, train_data):
    class MovedTo(nn.Module):
        def to(self, *args, **kwargs):
            self.moved_to = args
            return super().to(*args, **kwargs)

    trainer = make_trainer(callbacks=[MoveModulesToDeviceCallback()])
    trainer.helper = MovedTo()
    trainer.train(train_data, num_epochs=1)
    assert trainer.helper.moved_to == (trainer.device,)
    assert [name for name, _ in MoveModulesToDeviceCallback()._get_modules(trainer)] == ["loss_func", "helper"]
