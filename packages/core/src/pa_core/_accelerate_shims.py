"""Every Accelerate and torch workaround pa needs, in one place.

Where Accelerate does avoidable work on every step, and how pa steps around it:

Accelerate 1.x's ``AcceleratedOptimizer.step`` calls ``is_lomo_available()`` twice per call;
each call is an uncached ``importlib.util.find_spec`` that searches ``sys.path`` on disk (about
400 Python calls and several ``stat`` calls per step, 80-90 us on a small CPU machine). For
the common case the rest of that method only calls the wrapped optimizer's ``step``, so pa
calls it directly when that is provably equivalent:

- no gradient scaler (fp16 uses one: its path needs Accelerate's patched step),
- not XLA (it all-reduces gradients inside ``step``),
- not a LOMO optimizer (``step`` must be a no-op for those).

Everything else goes through Accelerate unchanged. The Trainer only steps at the end of an
accumulation window, where Accelerate's own ``sync_gradients`` check would pass.

``AcceleratedOptimizer.zero_grad`` likewise calls ``inspect.signature(optimizer.zero_grad)`` on
every call, to learn whether the wrapped optimizer accepts ``set_to_none`` (about 35 Python
calls, 10-30 us per step on a small CPU machine). The answer cannot change during a run, so pa
asks once and then calls the wrapped optimizer's ``zero_grad`` as Accelerate would, unless a
subclass of ``AcceleratedOptimizer`` (DeepSpeed's, Megatron-LM's) overrides ``zero_grad``.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType


def optimizer_step_function(optimizer: Any) -> Callable[[], Any]:
    """The cheapest function that performs ``optimizer.step()`` with Accelerate's semantics."""

    def late_bound_step() -> Any:
        # Looked up at each call: an LR scheduler created after this function replaces
        # ``optimizer.step`` with a wrapper that records the step (else it warns it ran first).
        return optimizer.step()

    if not isinstance(optimizer, AcceleratedOptimizer):
        return late_bound_step
    inner = optimizer.optimizer
    if (
        optimizer.scaler is not None
        # DeepSpeed steps inside accelerator.backward; its wrapper's step is a deliberate no-op.
        or optimizer.accelerator_state.distributed_type in (DistributedType.XLA, DistributedType.DEEPSPEED)
        or type(inner).__module__.split(".")[0] == "lomo_optim"
    ):
        return late_bound_step
    inner_step = inner.step

    def step() -> Any:
        result = inner_step()
        # What a torch LR scheduler's step-tracking wrapper around ``optimizer.step`` records;
        # without it the scheduler warns that it was stepped before the optimizer.
        optimizer._opt_called = True
        return result

    return step


def optimizer_zero_grad_function(optimizer: Any) -> Callable[[], Any]:
    """The cheapest function that performs ``optimizer.zero_grad()`` with Accelerate's semantics."""
    if (
        not isinstance(optimizer, AcceleratedOptimizer)
        or type(optimizer).zero_grad is not AcceleratedOptimizer.zero_grad
    ):
        return optimizer.zero_grad
    inner = optimizer.optimizer
    if "set_to_none" in inspect.signature(inner.zero_grad).parameters:
        return functools.partial(inner.zero_grad, set_to_none=True)  # Accelerate's default for such optimizers
    return inner.zero_grad


# ----------------------------------------------------------------------------------------
# Launch and data-loader workarounds
# ----------------------------------------------------------------------------------------


def accelerator_device_available() -> bool:
    """Whether this machine has a device Accelerate would use instead of the CPU."""
    import torch

    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool(
        torch.cuda.is_available()
        or (xpu is not None and xpu.is_available())
        or (mps is not None and mps.is_available())
    )


def multi_process_cpu_kwargs() -> dict[str, Any]:
    """``Accelerator`` arguments for several processes on a machine without an accelerator.

    Accelerate only goes multi-process on the CPU when told to (``cpu=True``); DeepSpeed runs
    on the CPU only with ``cpu=False`` and an explicit gloo process group (without one,
    Accelerate finds no backend and counts a single process).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or accelerator_device_available():
        return {}
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes"):
        from accelerate.utils import InitProcessGroupKwargs

        return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    return {"cpu": True}


def forget_single_process_state() -> None:
    """Drop an Accelerate state that counts one process while several were launched.

    Under torchrun on a machine without an accelerator, a ``PartialState()`` made before the
    Trainer (by the user's script, a test fixture or a library) counts one process, and every
    later Accelerator would silently reuse it: each process would train alone on all the data.
    Dropping it is safe: the state made next reuses the process group it may have started.
    """
    from accelerate.state import AcceleratorState, PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and PartialState._shared_state.get("num_processes") == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def shut_down_workers(*loaders_or_iterators: Any) -> None:
    """Stop the DataLoader worker processes behind each object, waiting for them to exit.

    pa's loaders' workers ignore preemption signals (the main process stops the run cleanly),
    so they must not be left to ``multiprocessing``'s exit handler, which ends leftover
    processes with SIGTERM and then waits for them forever. Persistent workers are kept by the
    DataLoader (``_iterator``); an epoch's workers by the iterator the epoch is reading. The
    wrappers pa and Accelerate put around a DataLoader are followed to it.
    """
    for obj in loaders_or_iterators:
        seen = 0
        while obj is not None and seen < 8:  # DataLoaderSlice.dl, StreamLoader.dataloader, Accelerate's base
            shutdown = getattr(obj, "_shutdown_workers", None)
            if callable(shutdown):  # a multi-process DataLoader iterator
                shutdown()
                break
            iterator = obj.__dict__.get("_iterator") if hasattr(obj, "__dict__") else None
            if iterator is not None and callable(getattr(iterator, "_shutdown_workers", None)):
                iterator._shutdown_workers()
                obj._iterator = None
            obj = next(
                (
                    obj.__dict__.get(name)
                    for name in ("base_dataloader", "dataloader", "dl")
                    if hasattr(obj, "__dict__") and obj.__dict__.get(name) is not None
                ),
                None,
            )
            seen += 1


def leave_process_group_at_exit() -> None:
    """Have the process leave its process group when the interpreter exits, if the script did not.

    torch asks every multi-process script to call ``destroy_process_group()``; one left for the
    interpreter's teardown can abort the process after its work is done ("terminate called without
    an active exception"), which a launcher reports as a failure. Registered once per process, by
    the first run on several processes; does nothing if the group is already gone.
    """
    if not getattr(leave_process_group_at_exit, "registered", False):
        leave_process_group_at_exit.registered = True  # type: ignore[attr-defined]
        atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # at exit, never replace the script's own outcome
            pass


def deal_batches_unevenly(prepared_dataloader: Any) -> Any:
    """Stop Accelerate from padding the last batches of a prepared map-style loader with
    repeated samples (its ``even_batches``): pa gives processes that run out of data empty
    batches instead, so every sample counts once."""
    from accelerate.data_loader import BatchSamplerShard

    batch_sampler = getattr(prepared_dataloader, "batch_sampler", None)
    if isinstance(batch_sampler, BatchSamplerShard):
        batch_sampler.even_batches = False
    return prepared_dataloader


def take_over_gradient_accumulation(accelerator: Any, gradient_accumulation_steps: int) -> None:
    """pa divides the loss and skips gradient syncs itself; Accelerate must not do it again."""
    launched_with = accelerator.gradient_accumulation_steps
    if launched_with == 1 or accelerator.distributed_type == DistributedType.DEEPSPEED:
        return  # (DeepSpeed's engine accumulation is checked against train() at run start)
    if launched_with != gradient_accumulation_steps:
        raise ValueError(
            f"Accelerate was configured for {launched_with} gradient-accumulation steps (accelerate launch "
            f"--gradient_accumulation_steps or the Accelerator), but train() got gradient_accumulation_steps="
            f"{gradient_accumulation_steps}. pa accumulates itself: pass the number to train() only."
        )
    accelerator.gradient_accumulation_steps = 1


def check_deepspeed_engine(accelerator: Any, engine: Any, run_config: Any) -> None:
    """Under DeepSpeed the engine accumulates and clips: check it agrees with train()'s arguments.

    Runs after ``on_training_run_start``, where pa-deepspeed sizes the engine from ``train()``.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED or run_config is None:
        return
    if run_config.gradient_clip_value is not None:
        raise ValueError(
            f"train(gradient_clip_value={run_config.gradient_clip_value!r}) clips gradients by value, which "
            "DeepSpeed cannot do: it clips the gradient norm inside its optimizer step (the DeepSpeed config's "
            "gradient_clipping). Remove gradient_clip_value."
        )
    ga, engine_ga = run_config.gradient_accumulation_steps, engine.gradient_accumulation_steps()
    if engine_ga != ga:
        raise ValueError(
            f"DeepSpeed is configured for {engine_ga} gradient-accumulation steps but train() was called with "
            f"gradient_accumulation_steps={ga}. Pass --gradient_accumulation_steps {ga} to accelerate launch, set "
            "it in the DeepSpeed config, or add pa-deepspeed's DeepSpeedCallback, which takes it from train()."
        )


def prepare_model_for_evaluation(accelerator: Any, model: Any) -> Any:
    """The model prepared for ``evaluate()``: DeepSpeed builds ZeRO stage 1/2 engines only around
    an optimizer, and evaluation needs none (every process holds the whole model)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage != 3:
        return accelerator.prepare_model(model, evaluation_mode=True)
    return accelerator.prepare(model)


def wrapped_model_to_keep(accelerator: Any, wrapped_model: Any) -> Any:
    """The prepared model to keep after a run: only a DeepSpeed engine is needed then (to gather
    ZeRO-3 weights). A DDP wrapper kept alive until interpreter exit is freed after its process
    group's threads, and that deadlocks or aborts the process as it exits."""
    return wrapped_model if accelerator.distributed_type == DistributedType.DEEPSPEED else None


def loss_for_backward(
    accelerator: Any, loss: Any, batch_output: dict[str, Any], ga: int, is_empty: bool, num_active: int
) -> Any:
    """The loss to backpropagate so that every engine's update is the mean over the real samples
    of the accumulation window (``ga`` steps), whatever DDP and DeepSpeed divide by themselves.

    ``is_empty``: this process has no data at this step; ``num_active``: processes that have.
    """
    num_processes, deepspeed = accelerator.num_processes, accelerator.distributed_type == DistributedType.DEEPSPEED
    if is_empty:
        return loss * 0  # zero gradients, but the step's collectives still run
    if num_active < num_processes:
        # Processes out of data contribute zero gradients: scale so that the update is the
        # mean over the processes that had data, not over all.
        loss = loss * (num_processes / num_active)
    if "num_items_in_batch" in batch_output:
        # The loss is already normalised over the whole accumulation window; DDP averages
        # gradients over processes, so undo that average when accumulating.
        if ga > 1 and num_processes > 1:
            loss = loss * num_processes
        if ga > 1 and deepspeed:
            loss = loss * ga  # the engine divides every loss by its accumulation steps
        return loss
    if ga == 1 or deepspeed:
        return loss  # the DeepSpeed engine divides by its accumulation steps itself
    return loss / ga
