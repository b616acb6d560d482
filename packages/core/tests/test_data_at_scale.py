"""Data at scale: every sample exactly once on any number of processes and DataLoader workers,
evaluation that cannot hang, signals that are never lost, iterable datasets resumed.

The multi-process tests start real processes (torchrun, gloo on the CPU) running the scripts in
scripts/, each under a timeout that kills every process it started: a hang fails, it never
blocks the test run.
"""

import json
import os
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import IterableDataset

from pa_core import CheckpointError, hookimpl
from pa_core.schedulers import CosineLrScheduler
from pa_core.testing import RecordingCallback, make_index_dataset, run_process_tree, tiny_classifier, torchrun_command

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from sample_counts import EVAL_SIZE, TRAIN_SIZE, IdTrainer, Stream, hf_stream  # noqa: E402

multiprocess = pytest.mark.multiprocess


def launch(script: str, out_dir: Path, processes: int, *args: str, timeout: float = 300) -> list[dict]:
    """Run a script on ``processes`` processes; the JSON each process wrote."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(out_dir)}
    path = str(SCRIPTS / script)
    if processes > 1:
        command = torchrun_command(path, str(out_dir), *args, num_processes=processes)
    else:
        command = [sys.executable, path, str(out_dir), *args]
    result = run_process_tree(command, timeout=timeout, env=env, cwd=str(out_dir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(processes)]


# ----------------------------------------------------------------------------------------
# Every sample exactly once per epoch
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=multiprocess), pytest.param(3, marks=multiprocess)])
def test_every_sample_is_seen_once_per_epoch_on_any_number_of_processes_and_workers(tmp_path, processes):
    ranks = launch("sample_counts.py", tmp_path, processes)
    for case in ranks[0]:
        runs = [rank[case] for rank in ranks]
        for epoch in range(2):
            seen = sorted(i for run in runs for i in run["train"][epoch])
            assert seen == list(range(TRAIN_SIZE)), (case, "train", epoch)
        for evaluation in range(3):  # after each training epoch, then evaluate()
            seen = sorted(i for run in runs for i in run["eval"][evaluation])
            assert seen == list(range(EVAL_SIZE)), (case, "eval", evaluation)
        # Every process runs the same steps, so collectives in hooks never wait forever.
        assert len({json.dumps([run["train_steps"], run["eval_steps"], run["num_updates"]]) for run in runs}) == 1
        assert len({run["evaluation_loss"] for run in runs}) == 1
        warned = " ".join(runs[0]["warnings"])
        if case == "wrong-len":
            assert f"says it has {TRAIN_SIZE + 5} samples (__len__), but the epoch had {TRAIN_SIZE}" in warned
        elif case.startswith("self-splitting") and case.endswith("2-workers"):
            # pa cannot see that this dataset splits itself between workers: it says what to check.
            assert "read by 2 DataLoader workers" in warned and "split_by_worker" in warned
        else:
            assert runs[0]["warnings"] == [], case


# ----------------------------------------------------------------------------------------
# Distributed evaluation
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process_eval_losses(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("eval-reference")
    return launch("eval_sweep.py", out_dir, 1, "3")[0]


@multiprocess
@pytest.mark.parametrize("processes", [2, 3])
def test_evaluation_of_every_size_runs_equal_steps_and_counts_each_sample_once(
    tmp_path, processes, one_process_eval_losses
):
    ranks = launch("eval_sweep.py", tmp_path, processes, str(processes))
    sizes = list(ranks[0])
    assert [int(size) for size in sizes] == list(range(1, 3 * processes * 2 + 2))
    for size in sizes:
        reference = one_process_eval_losses[size]
        for rank in ranks:
            for metric in ("evaluation_loss", "eval_loss_epoch", "intermediate_eval_loss"):
                assert rank[size][metric] == pytest.approx(reference[metric], rel=1e-5), (size, metric)
            # gather(padding_value=...) on every step returns each label once, in dataset order.
            assert rank[size]["gathered"] == [list(range(int(size)))] * 3
        assert len({tuple(rank[size]["steps"]) for rank in ranks}) == 1


# ----------------------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------------------

PHASES = ["data-loading", "train-step", "eval-epoch", "last-epoch", "after-last-update", "run-end", "during-save"]


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=multiprocess)])
def test_a_signal_at_any_phase_stops_every_process_at_the_same_place_and_resumes_exactly(tmp_path, processes):
    ranks = launch("signal_phases.py", tmp_path, processes)
    for phase in [*PHASES, "train-step-sigint"]:
        signum = signal.SIGINT if phase.endswith("sigint") else signal.SIGTERM
        for rank in ranks:
            result = rank[phase]
            assert result["status"] == 128 + signum, phase
            assert len(result["preemptions"]) == 1 and result["preemptions"][0][0] == signum, phase
            assert result["resumed_equals_uninterrupted"], phase
        # Only process 0 received the signal; every process stopped after the same update.
        assert len({(rank[phase]["epoch"], rank[phase]["num_updates"]) for rank in ranks}) == 1, phase
    assert all(rank["during-save"]["save_finished"] for rank in ranks)
    for rank in ranks:  # evaluate() stops the same way; there is no training state to save
        assert rank["evaluate"] == {"status": 143, "preemptions": [[signal.SIGTERM, None]], "saved": False}


@pytest.mark.parametrize(("mode", "status"), [("ends", 0), ("raises", 1), ("preempted", 143)])
def test_a_script_with_dataloader_workers_exits_however_its_run_ended(tmp_path, mode, status):
    # The workers ignore preemption signals; left alive, Python's exit handler would wait for them forever.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = run_process_tree([sys.executable, str(SCRIPTS / "exits.py"), mode], timeout=90, env=env)
    assert result.returncode == status, result.stderr[-3000:]
    assert ("trained" in result.stdout) == (mode == "ends")


def test_a_signal_no_check_acted_on_is_delivered_again_when_the_run_ends():
    from pa_core._preemption import SignalWatcher

    received = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        with SignalWatcher([signal.SIGUSR1]):
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives after the run's last check
            assert received == []  # recorded, not yet acted on
        assert received == [signal.SIGUSR1]  # handed to the previous handler, not swallowed
    finally:
        signal.signal(signal.SIGUSR1, previous)


# ----------------------------------------------------------------------------------------
# Resuming iterable data
# ----------------------------------------------------------------------------------------


class SaveAt:
    """Saves a training state after the given optimizer update (or at the end of the given epoch)."""

    def __init__(self, path, update=None, epoch=None):
        self.path, self.update, self.epoch = path, update, epoch

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates == self.update:
            trainer.save_training_state(self.path)

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if trainer.run_history.current_epoch == self.epoch:
            trainer.save_training_state(self.path)


class StatefulLoaderTrainer(IdTrainer):
    """Builds its own torchdata StatefulDataLoader (with its own generator, so that starting an
    epoch draws nothing from the global random state, as pa's own loaders do)."""

    def create_train_dataloader(self, batch_size, train_dl_kwargs=None):
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(self.train_dataset, batch_size=batch_size, num_workers=2, generator=torch.Generator())


def _train(make_data, trainer_class=IdTrainer, callbacks=(), resume_from=None, workers=0):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    trainer = trainer_class(
        model, torch.nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=0.01), callbacks=list(callbacks)
    )
    kwargs = {"num_workers": workers} if trainer_class is IdTrainer else None
    trainer.train(
        make_data(TRAIN_SIZE),
        num_epochs=3,
        per_device_batch_size=4,
        resume_from=resume_from,
        train_dataloader_kwargs=kwargs,
    )
    return {name: value.clone() for name, value in trainer.model.state_dict().items()}


def _assert_same(actual, expected):
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


def test_an_iterable_dataset_resumes_exactly_at_an_epoch_boundary(tmp_path):
    expected = _train(Stream)
    _train(Stream, callbacks=[SaveAt(tmp_path / "state", epoch=1)])
    _assert_same(_train(Stream, resume_from=tmp_path / "state"), expected)


@pytest.mark.parametrize(
    "make_data, trainer_class",
    [(hf_stream, IdTrainer), (lambda n: Stream(n, splits_by_worker=True), StatefulLoaderTrainer)],
    ids=["datasets-state-dict", "stateful-dataloader-2-workers"],
)
def test_an_iterable_dataset_that_saves_its_position_resumes_exactly_mid_epoch(tmp_path, make_data, trainer_class):
    expected = _train(make_data, trainer_class)
    _train(make_data, trainer_class, callbacks=[SaveAt(tmp_path / "state", update=13)])  # in epoch 2
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Resuming in the middle")
        resumed = _train(make_data, trainer_class, resume_from=tmp_path / "state")
    _assert_same(resumed, expected)


@pytest.mark.parametrize(
    "make_data, workers",
    [(Stream, 0), (hf_stream, 2)],
    ids=["no-state-dict", "datasets-state-dict-but-read-by-workers"],
)
def test_an_iterable_dataset_that_cannot_save_its_position_restarts_the_epoch_with_a_warning(
    tmp_path, make_data, workers
):
    _train(make_data, callbacks=[SaveAt(tmp_path / "state", update=13)], workers=workers)
    with pytest.warns(UserWarning, match="Resuming in the middle of an epoch.*starts again from its beginning"):
        _train(make_data, resume_from=tmp_path / "state", workers=workers)


def test_set_epoch_reaches_an_iterable_dataset_each_epoch():
    class EpochAware(Stream):
        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    dataset = EpochAware(8)
    dataset.epochs = []
    model = torch.nn.Linear(1, 2)
    trainer = IdTrainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[])
    trainer.train(dataset, num_epochs=3, per_device_batch_size=4)
    assert dataset.epochs == [0, 1, 2]


# ----------------------------------------------------------------------------------------
# Bad input: a clear error before any step
# ----------------------------------------------------------------------------------------


class NoLength(IterableDataset):
    def __iter__(self):
        return iter(make_index_dataset(8))


def _untrained(make_trainer):
    recorder = RecordingCallback(events=("on_train_step_start",))
    return make_trainer(callbacks=[recorder], model=tiny_classifier(num_features=1, num_classes=8)), recorder


@pytest.mark.parametrize("max_num_train_steps", [None, 10])
def test_a_placeholder_schedule_on_data_without_a_length_is_refused_before_any_step(make_trainer, max_num_train_steps):
    trainer, recorder = _untrained(make_trainer)
    with pytest.raises(ValueError, match=r"NUM_EPOCHS|NUM_UPDATE_STEPS_PER_EPOCH") as error:
        trainer.train(
            NoLength(),
            num_epochs=2,
            max_num_train_steps=max_num_train_steps,
            create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(),
        )
    assert "without a length" in str(error.value) and "num_update_steps_per_epoch=N" in str(error.value)
    assert recorder.events == []


def test_shuffle_for_an_iterable_dataset_is_refused_naming_the_argument(make_trainer):
    trainer, recorder = _untrained(make_trainer)
    with pytest.raises(ValueError, match=r"train_dataloader_kwargs has shuffle=True.*IterableDataset"):
        trainer.train(NoLength(), num_epochs=1, train_dataloader_kwargs={"shuffle": True})
    assert recorder.events == []


@pytest.mark.parametrize("dataset", [(i for i in range(4)), object(), 42], ids=["generator", "object", "int"])
def test_a_dataset_that_is_neither_map_style_nor_iterable_is_refused(make_trainer, dataset):
    trainer, recorder = _untrained(make_trainer)
    with pytest.raises(TypeError, match=r"train_dataset is a \w+, which is neither a map-style dataset"):
        trainer.train(dataset, num_epochs=1)
    with pytest.raises(TypeError, match=r"dataset is a \w+, which is neither"):
        trainer.evaluate(dataset)
    assert recorder.events == []


def test_a_schedule_with_explicit_numbers_trains_on_data_without_a_length(make_trainer):
    trainer, _ = _untrained(make_trainer)
    trainer.train(
        NoLength(),
        num_epochs=5,
        max_num_train_steps=3,
        per_device_batch_size=4,
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(total_num_epochs=1, num_update_steps_per_epoch=3),
    )
    # 2 updates per pass over the data: the run stops after 3 updates, in the second epoch.
    assert trainer.run_state.num_updates == 3
    assert trainer.run_config.num_update_steps_per_epoch is None
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 2


def test_a_missing_training_state_is_a_checkpoint_error(make_trainer, tmp_path):
    trainer, _ = _untrained(make_trainer)
    with pytest.raises(CheckpointError, match="resume_from="):
        trainer.train(make_index_dataset(8), num_epochs=1, resume_from=tmp_path / "nothing")


@pytest.fixture(autouse=True)
def _no_torchrun_leftovers(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    yield
