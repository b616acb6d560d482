"""The same training checks under every hardware configuration of the matrix.

Launched by matrix/run_row.py with `accelerate launch`, `torchrun` or `notebook_launcher`; the
configuration (processes, machines, device, mixed precision, DeepSpeed, FSDP) comes entirely
from the launcher, as it would for a user's script.
"""

import functools
import math
import os
from pathlib import Path

import pytest
import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import RecordingCallback, make_classification_dataset, make_index_dataset, tiny_classifier
from pa_core.utils import local_process_zero_only, world_process_zero_only


def callbacks(*extra):
    """The deepspeed-cpu row adds pa-deepspeed's callback, which sizes the engine from train()."""
    if os.environ.get("PA_MATRIX_DEEPSPEED"):
        from pa_deepspeed import DeepSpeedCallback

        return [DeepSpeedCallback(zero_stage=int(os.environ["PA_MATRIX_ZERO_STAGE"])), *extra]
    return list(extra)


def make_trainer(*extra_callbacks, model=None, lr=0.05):
    model = model if model is not None else tiny_classifier(hidden=16)
    return Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=lr),
        callbacks=callbacks(*extra_callbacks),
    )


def flat(model):
    """Every weight of ``model`` in one CPU tensor (collective under FSDP: shards are gathered)."""
    whole = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    return torch.cat([p.detach().float().flatten().cpu() for p in whole])


TRAIN = make_classification_dataset(num_samples=96, seed=0)
EVAL = make_classification_dataset(num_samples=37, seed=1)  # uneven on purpose


def test_the_run_spans_every_launched_process(state):
    # N launched processes must train as one run of N, not as N runs of one (which would pass the rest).
    trainer = make_trainer()
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=4)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    assert trainer.run_config.num_processes == state.num_processes == launched
    if os.environ.get("PA_MATRIX_NODES") == "2":  # two machines, one process each: one run of two
        assert launched == 2
    assert trainer.run_config.is_distributed == (launched > 1)


def test_loss_decreases_and_counts_are_right(state):
    recorder = RecordingCallback(events=("on_train_update_end", "on_train_epoch_end", "on_eval_step_end"))
    trainer = make_trainer(recorder)
    trainer.train(TRAIN, num_epochs=4, eval_dataset=EVAL, per_device_batch_size=4, gradient_accumulation_steps=2)
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert losses[-1] < 0.7 * losses[0], losses
    batches_per_process = math.ceil(len(TRAIN) / (4 * state.num_processes))
    updates_per_epoch = math.ceil(batches_per_process / 2)
    assert trainer.run_config.num_update_steps_per_epoch == updates_per_epoch
    assert recorder.count("on_train_update_end") == 4 * updates_per_epoch
    assert recorder.count("on_train_epoch_end") == 4
    assert trainer.run_history.current_epoch == 5


def test_metrics_agree_across_processes():
    trainer = make_trainer()
    trainer.train(TRAIN, num_epochs=2, eval_dataset=EVAL, per_device_batch_size=4)
    values = torch.tensor(
        [trainer.run_history.get_latest_metric(name) for name in ("train_loss_epoch", "eval_loss_epoch")],
        device=trainer.device,
    )
    gathered = trainer.gather(values.unsqueeze(0))
    assert torch.equal(gathered, values.expand_as(gathered)), gathered


class CollectLabels:
    def __init__(self):
        self.local, self.gathered = [], None

    @hookimpl
    def on_eval_step_end(self, batch):
        self.local.append(batch[1])

    @hookimpl
    def on_eval_epoch_end(self, trainer):
        local = torch.cat(self.local) if self.local else torch.empty(0, dtype=torch.long, device=trainer.device)
        self.gathered = sorted(trainer.gather(local, padding_value=-1).tolist())


def test_eval_sees_every_sample_exactly_once():
    collector = CollectLabels()
    model = tiny_classifier(num_features=1, num_classes=37)
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.0), callbacks=callbacks(collector)
    )
    trainer.evaluate(make_index_dataset(num_samples=37), per_device_batch_size=3)
    assert collector.gathered == list(range(37))


def test_checkpoint_round_trip(workdir):
    trainer = make_trainer()
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=8)
    trainer.save_checkpoint(workdir / "checkpoint.pt", checkpoint_kwargs={"note": "matrix"})
    trained = flat(trainer.model)
    fresh = make_trainer(model=tiny_classifier(hidden=16, seed=3))
    loaded = fresh.load_checkpoint(workdir / "checkpoint.pt")
    assert loaded["note"] == "matrix"
    torch.testing.assert_close(flat(fresh.model), trained)


class Interrupt(Exception):
    pass


class SaveThenInterrupt:
    def __init__(self, state_dir):
        self.state_dir = state_dir

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates == 5:
            trainer.save_training_state(self.state_dir)
            raise Interrupt()


def test_resume_is_exact(workdir):
    kwargs = dict(
        num_epochs=3,
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=3, gamma=0.5),
    )
    reference = make_trainer()
    reference.train(TRAIN, **kwargs)
    with pytest.raises(Interrupt):
        make_trainer(SaveThenInterrupt(workdir / "state")).train(TRAIN, **kwargs)
    resumed = make_trainer(model=tiny_classifier(hidden=16, seed=7))
    resumed.train(TRAIN, resume_from=workdir / "state", **kwargs)
    torch.testing.assert_close(flat(resumed.model), flat(reference.model), rtol=0, atol=0)


@pytest.mark.skipif(os.environ.get("PA_MATRIX_NODES") != "2", reason="only meaningful on the two-machine row")
def test_per_node_saving_and_process_decorators(workdir, state):
    # Each simulated machine has its own PA_MATRIX_NODE_DIR, as machines have their own disks.
    node_dir = Path(os.environ["PA_MATRIX_NODE_DIR"])
    node_dir.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer()
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=8)
    trainer.save_checkpoint(node_dir / "per_node.pt", save_per_node=True)
    trainer.save_checkpoint(node_dir / "world.pt", save_per_node=False)
    assert (node_dir / "per_node.pt").exists()  # every machine has its copy
    assert (node_dir / "world.pt").exists() == state.is_main_process  # only the first machine's disk
    assert state.is_local_main_process and (state.is_main_process == (state.process_index == 0))
    assert local_process_zero_only(lambda: "local")() == "local"  # runs on each machine's first process
    assert world_process_zero_only(lambda: "world")() == ("world" if state.is_main_process else None)
