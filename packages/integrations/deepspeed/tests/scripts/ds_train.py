"""Training runs the pa-deepspeed tests start on real processes (torchrun, accelerate launch, python).

Every run trains the same tiny classifier on the same data, so its results can be compared with
a plain (DDP) run of the same model. Results go to ``--out``: ``<name>.json`` (metrics, written by
the world's main process) and ``<name>.pt`` weight files written by ``save_checkpoint``.

Modes:
- ``reference``: the plain run, no DeepSpeed.
- ``zero``: a DeepSpeed run (``--stage``) with a checkpoint inside and after the run (and a training
  state after it), a training state saved mid-epoch by an interrupted run and resumed by a new
  Trainer, and ``evaluate()``.
- ``variants``: several short DeepSpeed runs one after the other in the same processes
  (stages 0 and 1, CPU offload, bf16), each compared by the test with the reference.
- ``errors``: configurations that contradict ``train()``'s arguments; records the error messages.
- ``launch``: no callback at all; DeepSpeed comes from ``accelerate launch --use_deepspeed``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, tiny_classifier

torch.set_num_threads(1)

EPOCHS = 3
BATCH = 4
TRAIN = make_classification_dataset(num_samples=72, seed=0)  # 9 batches of 4 per process on 2 processes
EVAL = make_classification_dataset(num_samples=32, seed=1)


class Interrupted(Exception):
    """Stands in for a crash or preemption in the middle of a run."""


class SaveStateAndStop:
    """Saves a training state after optimizer update ``at``, then interrupts the run."""

    def __init__(self, at: int, state_dir: str) -> None:
        self.at, self.state_dir = at, state_dir

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates == self.at:
            trainer.save_training_state(self.state_dir)
            raise Interrupted()


class Inspect:
    """Records how the DeepSpeed engine is set up once the run has started, and saves a
    gathered checkpoint at the end of the first epoch (inside the run)."""

    def __init__(self, checkpoint_path: str | None = None) -> None:
        self.checkpoint_path = checkpoint_path
        self.facts: dict = {}

    @hookimpl
    def on_train_epoch_start(self, trainer):
        engine = trainer.model
        if self.facts or not hasattr(engine, "gradient_accumulation_steps"):
            return
        parameters = list(engine.module.parameters())
        self.facts = {
            "engine": type(engine).__name__,
            "zero_stage": engine.zero_optimization_stage(),
            "gradient_accumulation_steps": engine.gradient_accumulation_steps(),
            "train_micro_batch_size_per_gpu": engine.train_micro_batch_size_per_gpu(),
            "train_batch_size": engine.train_batch_size(),
            "gradient_clipping": engine.gradient_clipping(),
            "optimizer": type(engine.optimizer).__name__,
            "base_optimizer": type(getattr(engine.optimizer, "optimizer", engine.optimizer)).__name__,
            # ZeRO-3 keeps only a shard of each parameter on each process.
            "local_numel": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in parameters),
            "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in parameters),
            "param_dtype": str(parameters[0].dtype),
        }

    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if self.checkpoint_path and trainer.run_history.current_epoch == 1:
            trainer.save_checkpoint(self.checkpoint_path)


def make_trainer(callbacks, deepspeed_kwargs):
    model = tiny_classifier(hidden=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    if deepspeed_kwargs is not None:
        from pa_deepspeed import DeepSpeedCallback

        callbacks = [*callbacks, DeepSpeedCallback(**deepspeed_kwargs)]
    return Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=callbacks)


def fit(trainer, ga, **kwargs):
    trainer.train(
        TRAIN,
        num_epochs=EPOCHS,
        eval_dataset=EVAL,
        per_device_batch_size=BATCH,
        gradient_accumulation_steps=ga,
        **kwargs,
    )


def history(trainer):
    return {name: trainer.run_history.get_metric_values(name) for name in ("train_loss_epoch", "eval_loss_epoch")}


def zero_kwargs(stage, **extra):
    # A persistence threshold of 0 makes ZeRO-3 shard even this tiny model's parameters.
    zero = {"stage": stage, "stage3_param_persistence_threshold": 0}
    return {"config": {"zero_optimization": zero}, **extra}


def write(out: Path, name: str, results: dict) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        (out / f"{name}.json").write_text(json.dumps(results, indent=1))


def run_reference(args, out):
    trainer = make_trainer([], None)
    fit(trainer, args.ga)
    trainer.save_checkpoint(out / "reference.pt", save_optimizer=False)
    write(out, "reference", {"history": history(trainer), "num_processes": trainer.run_config.num_processes})


def run_zero(args, out):
    name = f"zero{args.stage}"
    inspect = Inspect(checkpoint_path=str(out / f"{name}-epoch1.pt"))
    uninterrupted = make_trainer([inspect], zero_kwargs(args.stage))
    fit(uninterrupted, args.ga)
    uninterrupted.save_checkpoint(out / f"{name}.pt")  # after train(): the engine gathers ZeRO-3 shards
    uninterrupted.save_training_state(out / f"{name}-final-state")  # DeepSpeed's own sharded checkpoint

    state_dir = out / f"{name}-state"
    interrupted = make_trainer([SaveStateAndStop(at=7, state_dir=str(state_dir))], zero_kwargs(args.stage))
    try:
        fit(interrupted, args.ga)
    except Interrupted:
        pass
    resumed = make_trainer([], zero_kwargs(args.stage))
    fit(resumed, args.ga, resume_from=state_dir)
    resumed.save_checkpoint(out / f"{name}-resumed.pt")
    resumed_history = history(resumed)
    resumed.evaluate(EVAL, per_device_batch_size=BATCH)
    write(
        out,
        name,
        {
            "history": history(uninterrupted),
            "resumed_history": resumed_history,
            "evaluation_loss": resumed.run_history.get_latest_metric("evaluation_loss"),
            "engine": inspect.facts,
            "distributed_type": str(uninterrupted.run_config.is_distributed),
            "state_files": sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*") if p.is_file()),
        },
    )


VARIANTS = {
    "stage0": zero_kwargs(0),
    "stage1": zero_kwargs(1),
    "stage2-offload": zero_kwargs(2, offload_optimizer_device="cpu"),
    "stage3-offload": zero_kwargs(3, offload_optimizer_device="cpu", offload_param_device="cpu"),
    "stage2-bf16": zero_kwargs(2, mixed_precision="bf16"),
    "stage2-fp16": zero_kwargs(2, mixed_precision="fp16"),  # DeepSpeed has no fp16 on the CPU: GPU only
}
CPU_VARIANTS = ("stage0", "stage1", "stage2-offload", "stage3-offload", "stage2-bf16")


def run_variants(args, out):
    results = {}
    for name in args.only.split(",") if args.only else CPU_VARIANTS:
        inspect = Inspect()
        trainer = make_trainer([inspect], VARIANTS[name])
        fit(trainer, args.ga)
        trainer.save_checkpoint(out / f"{name}.pt")
        results[name] = {"history": history(trainer), "engine": inspect.facts}
    write(out, "variants", results)


def run_errors(args, out):
    from pa_deepspeed import DeepSpeedConfigError

    attempts = {
        "micro_batch": ({"config": {"train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": 2}}}, {}),
        "accumulation": ({"config": {"gradient_accumulation_steps": 4, "zero_optimization": {"stage": 2}}}, {}),
        "train_batch_size": ({"config": {"train_batch_size": 64, "zero_optimization": {"stage": 1}}}, {}),
        "clip_value": ({"zero_stage": 2}, {"gradient_clip_value": 0.5}),
        "fp16_on_cpu": ({"zero_stage": 2, "mixed_precision": "fp16"}, {}),
    }
    results = {}
    for name, (deepspeed_kwargs, train_kwargs) in attempts.items():
        try:
            trainer = make_trainer([], deepspeed_kwargs)
            trainer.train(
                TRAIN, num_epochs=1, per_device_batch_size=BATCH, gradient_accumulation_steps=2, **train_kwargs
            )
        except DeepSpeedConfigError as error:
            results[name] = str(error)
        else:
            results[name] = None
    # A config file whose batch entries agree with train() runs.
    config_file = out / "ds_config.json"
    config_file.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": BATCH,
                "gradient_accumulation_steps": 2,
                "zero_optimization": {"stage": 2},
            }
        )
    )
    trainer = make_trainer([], {"config": config_file})
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=BATCH, gradient_accumulation_steps=2)
    results["config_file_history"] = history(trainer)
    # The pa.callbacks catalogue name, with every default.
    model = tiny_classifier(hidden=16)
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=0.05), callbacks=["deepspeed"]
    )
    trainer.train(TRAIN, num_epochs=1, per_device_batch_size=BATCH, gradient_accumulation_steps=2)
    results["catalogue_history"] = history(trainer)
    results["catalogue_engine"] = type(trainer.accelerator.deepspeed_engine_wrapped.engine).__name__
    from deepspeed.accelerator import get_accelerator

    # Some CPUs (oneDNN with native fp16) run DeepSpeed's fp16 mode: it is refused only where they do not.
    results["fp16_supported"] = bool(get_accelerator().is_fp16_supported())
    write(out, "errors", results)


def run_launch(args, out):
    # Without the callback nothing stops DeepSpeed compiling its shared-memory op on the CPU.
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    inspect = Inspect()
    trainer = make_trainer([inspect], None)
    fit(trainer, args.ga)
    write(out, "launch", {"history": history(trainer), "engine": inspect.facts})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("reference", "zero", "variants", "errors", "launch"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage", type=int, default=2)
    parser.add_argument("--ga", type=int, default=2)
    parser.add_argument("--only", default="", help="variants mode: comma-separated names (default: the CPU set)")
    args = parser.parse_args()
    runner = {
        "reference": run_reference,
        "zero": run_zero,
        "variants": run_variants,
        "errors": run_errors,
        "launch": run_launch,
    }[args.mode]
    runner(args, args.out)


if __name__ == "__main__":
    main()
