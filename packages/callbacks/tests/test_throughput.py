"""ThroughputCallback: figures checked against a clock read in the test, and against the counts they come from."""

import json
import os
import resource
import time
from importlib.metadata import entry_points

import pytest
import torch

from pa_callbacks import ProfilerCallback, ThroughputCallback
from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, run_on_processes, tiny_classifier


class TrainEpochClock:
    """Measures each training epoch (from its start to its end; evaluation comes after) with its own clock."""

    def __init__(self):
        self.seconds = []

    @hookimpl
    def on_train_epoch_start(self):
        self._start = time.perf_counter()

    @hookimpl
    def on_train_epoch_end(self):
        self.seconds.append(time.perf_counter() - self._start)


def latest(trainer, name):
    return trainer.run_history.get_latest_metric(name)


def within_factor(value, expected, factor=1.5):
    return expected / factor < value < expected * factor


def test_epoch_figures_agree_with_a_clock_read_in_the_test(make_trainer):
    clock = TrainEpochClock()
    trainer = make_trainer([clock, ThroughputCallback()])
    # 64 training batches of 8, then an evaluation over eight times as many samples (taking longer
    # than the training here), which the figures must leave out.
    train, evaluation = make_classification_dataset(num_samples=512), make_classification_dataset(4096)
    trainer.train(train, num_epochs=1, eval_dataset=evaluation, per_device_batch_size=8)

    (seconds,) = clock.seconds
    assert within_factor(latest(trainer, "samples_per_second_epoch"), 512 / seconds)
    assert within_factor(latest(trainer, "batches_per_second_epoch"), 64 / seconds)
    assert within_factor(latest(trainer, "seconds_per_update_epoch"), seconds / 64)


def test_samples_are_counted_from_batch_sizes_and_updates_from_updates(make_trainer):
    trainer = make_trainer([ThroughputCallback()])
    # Batches of 16, 16 and 8 samples; with 2 batches per update, updates after batches 2 and 3.
    trainer.train(
        make_classification_dataset(num_samples=40),
        num_epochs=1,
        per_device_batch_size=16,
        gradient_accumulation_steps=2,
    )

    samples_per_batch = latest(trainer, "samples_per_second_epoch") / latest(trainer, "batches_per_second_epoch")
    assert samples_per_batch == pytest.approx(40 / 3)
    batches_per_update = latest(trainer, "seconds_per_update_epoch") * latest(trainer, "batches_per_second_epoch")
    assert batches_per_update == pytest.approx(3 / 2)


def test_tokens_and_model_flops_utilisation(make_trainer, train_data):
    callback = ThroughputCallback(tokens_per_sample=128, flops_per_sample=3e6, peak_flops_per_device=1e12)
    trainer = make_trainer([callback])
    trainer.train(train_data, num_epochs=2, per_device_batch_size=8)

    samples_per_second = trainer.run_history.get_metric_values("samples_per_second_epoch")
    history = trainer.run_history
    assert len(samples_per_second) == 2
    assert history.get_metric_values("tokens_per_second_epoch") == pytest.approx([s * 128 for s in samples_per_second])
    expected_tflops = [s * 3e6 / 1e12 for s in samples_per_second]
    assert history.get_metric_values("model_tflops_per_second_epoch") == pytest.approx(expected_tflops)
    assert history.get_metric_values("mfu_epoch") == pytest.approx([s * 3e6 / 1e12 for s in samples_per_second])


def test_every_n_updates_figures_cover_windows_of_n_updates(make_trainer, train_data, eval_data):
    clock = TrainEpochClock()
    trainer = make_trainer([clock, ThroughputCallback(log_every_n_updates=2)])
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=8)  # 5 updates per epoch

    history = trainer.run_history
    window_rates = history.get_metric_values("samples_per_second")
    assert len(window_rates) == 5  # after updates 2, 4, 6, 8 and 10
    batch_rates = history.get_metric_values("batches_per_second")
    assert [s / b for s, b in zip(window_rates, batch_rates)] == pytest.approx([8.0] * 5)
    # The windows cover the training time of both epochs, evaluation left out.
    window_seconds = sum(16 / rate for rate in window_rates)
    assert within_factor(window_seconds, sum(clock.seconds))
    assert len(history.get_metric_values("samples_per_second_epoch")) == 2


def test_peak_memory_is_the_process_peak_resident_memory_on_cpu(make_trainer, train_data):
    trainer = make_trainer([ThroughputCallback()])
    trainer.train(train_data, num_epochs=1, per_device_batch_size=8)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    assert 0 < latest(trainer, "peak_memory_mib") <= peak_after


@pytest.mark.parametrize("every", [None, 2])
def test_nothing_is_read_from_the_device_per_step(host_syncs_per_epoch, every):
    callbacks = lambda: [ThroughputCallback(log_every_n_updates=every)]  # noqa: E731
    assert host_syncs_per_epoch(callbacks, 16) == host_syncs_per_epoch(callbacks, 4)


def test_catalogue_names():
    found = {ep.name: ep.load() for ep in entry_points(group="pa.callbacks") if ep.name in ("throughput", "profiler")}
    assert found == {"throughput": ThroughputCallback, "profiler": ProfilerCallback}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"log_every_n_updates": 0}, "log_every_n_updates"),
        ({"tokens_per_sample": 1.5}, "tokens_per_sample"),
        ({"flops_per_sample": -1}, "flops_per_sample"),
        ({"peak_flops_per_device": "1e12"}, "peak_flops_per_device"),
    ],
)
def test_invalid_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ThroughputCallback(**kwargs)


# -- two processes ------------------------------------------------------------------------------


def train_on_two_processes(out_dir):
    os.chdir(out_dir)
    model = tiny_classifier()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[ThroughputCallback(log_every_n_updates=2), ProfilerCallback("profiler", active=2, row_limit=0)],
    )
    # 32 samples in batches of 4 on each of 2 processes: 4 batches (and updates) per process and epoch.
    trainer.train(make_classification_dataset(num_samples=32), num_epochs=1, per_device_batch_size=4)
    history = trainer.run_history
    result = {name: history.get_metric_values(name) for name in history.get_metric_names()}
    with open(os.path.join(out_dir, f"rank{torch.distributed.get_rank()}.json"), "w") as handle:
        json.dump(result, handle)


@pytest.mark.multiprocess
def test_two_processes_count_the_samples_of_both(tmp_path):
    run_on_processes(train_on_two_processes, str(tmp_path), num_processes=2)
    for rank in (0, 1):
        figures = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # 32 samples per epoch over 4 batches on each process: 8 samples per batch of the run.
        (samples_per_second,), (batches_per_second,) = (
            figures["samples_per_second_epoch"],
            figures["batches_per_second_epoch"],
        )
        assert samples_per_second / batches_per_second == pytest.approx(8)
        windows = zip(figures["samples_per_second"], figures["batches_per_second"])
        assert [s / b for s, b in windows] == pytest.approx([8, 8])
        assert figures["peak_memory_mib"][-1] > 0
    # The profiler ran on the main process only.
    assert [path.name.split(".")[0] for path in (tmp_path / "profiler").iterdir()] == ["rank0"]
