"""Two real processes on the CPU (gloo): data parallelism, uneven evaluation, gather."""

import json
import os
import subprocess

import pytest
import torch
from accelerate import PartialState

from pa_core import Trainer, hookimpl
from pa_core.testing import (
    make_classification_dataset,
    make_index_dataset,
    run_on_processes,
    tiny_classifier,
    torchrun_command,
)

pytestmark = pytest.mark.multiprocess


class CollectEvalLabels:
    """Keeps this process's eval labels and gathers them from every process at epoch end."""

    def __init__(self):
        self.local, self.gathered = [], None

    @hookimpl
    def on_eval_step_end(self, batch):
        self.local.append(batch[1])

    @hookimpl
    def on_eval_epoch_end(self, trainer):
        self.gathered = trainer.gather(torch.cat(self.local), padding_value=-1).tolist()
        self.local = []


def _train(per_device_batch_size):
    model = tiny_classifier()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.3), callbacks=[])
    trainer.train(
        make_classification_dataset(num_samples=48), num_epochs=2, per_device_batch_size=per_device_batch_size
    )
    return trainer


def _two_process_run(out_dir):
    results = {}
    trainer = _train(per_device_batch_size=4)
    if trainer.run_config.is_world_process_zero:
        torch.save(trainer.model.state_dict(), os.path.join(out_dir, "ddp.pt"))
    results["run_config"] = {
        key: getattr(trainer.run_config, key)
        for key in ("num_processes", "is_distributed", "train_total_batch_size", "num_update_steps_per_epoch")
    }

    # 9 samples in batches of 2: rank 0 gets 3 batches (5 samples), rank 1 gets 2 (4 samples).
    collector = CollectEvalLabels()
    evaluator = Trainer(
        tiny_classifier(num_features=1, num_classes=9), torch.nn.CrossEntropyLoss(), None, callbacks=[collector]
    )
    evaluator.evaluate(make_index_dataset(num_samples=9), per_device_batch_size=2)
    results["gathered_labels"] = collector.gathered
    results["evaluation_loss"] = evaluator.run_history.get_latest_metric("evaluation_loss")

    # Fewer samples than one batch per process: rank 1 has no data and runs an empty step.
    evaluator.evaluate(make_index_dataset(num_samples=3), per_device_batch_size=2)
    results["small_eval_labels"] = collector.gathered

    rank = PartialState().process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="forks the test process, which a used CUDA context does not survive"
)
def test_two_processes(tmp_path):
    run_on_processes(_two_process_run, str(tmp_path), num_processes=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # Per-device batch 4 on 2 processes trains exactly like batch 8 on 1 process.
    reference = _train(per_device_batch_size=8)
    ddp_state = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-5, atol=1e-6)
    assert ranks[0]["run_config"] == {
        "num_processes": 2,
        "is_distributed": True,
        "train_total_batch_size": 8,
        "num_update_steps_per_epoch": 6,
    }

    # Uneven evaluation: every sample exactly once, gathered on every process.
    for rank in ranks:
        assert sorted(rank["gathered_labels"]) == list(range(9))
    single = Trainer(tiny_classifier(num_features=1, num_classes=9), torch.nn.CrossEntropyLoss(), None, callbacks=[])
    single.evaluate(make_index_dataset(num_samples=9), per_device_batch_size=2)
    for rank in ranks:
        assert rank["evaluation_loss"] == pytest.approx(
            single.run_history.get_latest_metric("evaluation_loss"), rel=1e-5
        )
        assert rank["small_eval_labels"] == [0, 1, 2]


class RecordLearningRates:
    def __init__(self):
        self.lrs = []

    @hookimpl
    def on_train_update_end(self, trainer):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def _cosine_run(out_dir=None, per_device_batch_size=8):
    from pa_core.schedulers import CosineLrScheduler

    recorder = RecordLearningRates()
    model = tiny_classifier()
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[recorder]
    )
    trainer.train(
        make_classification_dataset(num_samples=64),
        num_epochs=3,
        per_device_batch_size=per_device_batch_size,
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1, lr_min=0.001),
    )
    # The scheduler's k-th step sets the rate for update k (counting from 0): one more step shows
    # where the schedule ends, which must be exactly where training ended.
    trainer.scheduler.step()
    recorder.lrs.append(trainer.optimizer.param_groups[0]["lr"])
    if out_dir is not None and trainer.run_config.is_world_process_zero:
        with open(os.path.join(out_dir, "cosine.json"), "w") as handle:
            json.dump(recorder.lrs, handle)
    return recorder.lrs


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="forks the test process, which a used CUDA context does not survive"
)
def test_cosine_schedule_is_the_same_on_one_and_two_processes(tmp_path):
    """SPEC 9.2: the schedule is sized in per-process updates, so it covers the run on any number of processes."""
    single = _cosine_run(per_device_batch_size=8)  # 8 updates per epoch on one process
    run_on_processes(_cosine_run, str(tmp_path), 4, num_processes=2)  # 8 updates per epoch per process
    double = json.loads((tmp_path / "cosine.json").read_text())
    assert len(single) == len(double) == 24 + 1
    assert double == pytest.approx(single)
    assert single[-1] == pytest.approx(0.001, abs=1e-9)  # the minimum is reached at the end of training
    assert min(single[8:-1]) > 0.001  # after warmup the rate decays to the minimum only at the end
    assert max(single) == pytest.approx(0.1, rel=1e-3)  # the peak after one warmup epoch


STATE_MADE_FIRST = """
import json, sys, torch
from accelerate import PartialState
from pa_core import Trainer
from pa_core.testing import make_classification_dataset, tiny_classifier

torch.set_num_threads(1)
state = PartialState()  # made before the Trainer, as a script or a library may do
model = tiny_classifier(hidden=8)
trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[])
trainer.train(make_classification_dataset(num_samples=16, seed=0), num_epochs=1, per_device_batch_size=4)
if state.is_main_process:
    json.dump([state.num_processes, trainer.run_config.num_processes, trainer.num_updates], open(sys.argv[1], "w"))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only case (a GPU makes Accelerate go multi-GPU)")
def test_a_partial_state_made_before_the_trainer_does_not_make_each_process_train_alone(tmp_path):
    # Under torchrun on a CPU-only machine, a bare PartialState() counts one process; a Trainer
    # reusing it would train each process alone on all the data.
    script, result = tmp_path / "script.py", tmp_path / "result.json"
    script.write_text(STATE_MADE_FIRST)
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        torchrun_command(str(script), str(result)), capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # 16 samples, batch 4 on each of 2 processes: 2 updates per process (4 if each trained alone).
    assert json.loads(result.read_text()) == [2, 2, 2]


class StopOnProcessZeroOnly:
    """An early-stopping rule evaluated on the main process only, raising there alone."""

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if trainer.is_world_process_zero:
            from pa_core import StopTrainingError

            raise StopTrainingError("process 0 decided to stop")


def _stop_on_one_process(out_dir):
    model = tiny_classifier()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[StopOnProcessZeroOnly()],
    )
    trainer.train(make_classification_dataset(num_samples=32), num_epochs=3, per_device_batch_size=4)
    rank = PartialState().process_index
    result = [trainer.run_history.current_epoch, trainer.run_state.num_updates]
    with open(os.path.join(out_dir, f"stop{rank}.json"), "w") as handle:
        json.dump(result, handle)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="forks the test process, which a used CUDA context does not survive"
)
def test_a_stop_training_error_raised_at_an_epoch_end_on_one_process_stops_every_process(tmp_path):
    run_on_processes(_stop_on_one_process, str(tmp_path), num_processes=2)
    results = [json.loads((tmp_path / f"stop{rank}.json").read_text()) for rank in (0, 1)]
    assert results == [[1, 4], [1, 4]]  # both stopped after epoch 1 (4 updates), instead of one hanging


def _plugin_loader_and_gather(out_dir):
    class CollectIds:
        def __init__(self):
            self.ids = []

        @hookimpl
        def on_eval_step_end(self, trainer, batch):
            self.ids += trainer.gather(batch[1], padding_value=-1).tolist()

    trainer = Trainer(tiny_classifier(num_features=1, num_classes=16), torch.nn.CrossEntropyLoss(), None, callbacks=[])
    trainer.evaluate(make_index_dataset(num_samples=4), per_device_batch_size=2)  # a two-process run to work in
    collector = CollectIds()
    loader = trainer.prepare_dataloader(torch.utils.data.DataLoader(make_index_dataset(num_samples=11), batch_size=2))
    trainer.run_eval_epoch(loader, callbacks=[collector])
    rank = PartialState().process_index
    try:
        trainer.gather(torch.zeros(2, 3 + rank))
        mismatch = None
    except ValueError as error:
        mismatch = str(error)
    with open(os.path.join(out_dir, f"plugin{rank}.json"), "w") as handle:
        json.dump({"ids": collector.ids, "mismatch": mismatch}, handle)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="forks the test process, which a used CUDA context does not survive"
)
def test_a_plugins_loader_prepared_by_the_trainer_sees_each_sample_once_and_gather_names_shape_mismatches(tmp_path):
    run_on_processes(_plugin_loader_and_gather, str(tmp_path), num_processes=2)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"plugin{rank}.json").read_text())
        assert result["ids"] == list(range(11))
        assert "processes hold shapes [(2, 3), (2, 4)]" in result["mismatch"]
