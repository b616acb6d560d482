"""The frozen record of how a training run was configured."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["TrainerRunConfig"]

# Data loader options that are objects, not settings: dropped from ``to_dict()`` so the
# result can be pickled, logged or written as JSON.
_UNPORTABLE_DL_KWARGS = ("sampler", "batch_sampler", "collate_fn", "worker_init_fn", "generator")


@dataclass(frozen=True)
class TrainerRunConfig:
    """How the current ``train()`` run is configured; available as ``trainer.run_config``.

    Totals: ``train_total_batch_size`` = per-device batch size x processes x gradient
    accumulation steps; ``eval_total_batch_size`` = per-device batch size x processes.
    ``num_update_steps_per_epoch`` is the number of optimizer updates each process performs
    per epoch (``num_local_update_steps_per_epoch`` is the same number, kept under its
    upstream name); both are None for iterable data without a length, whose epochs end when
    the data does. ``max_num_train_steps`` counts optimizer updates.
    """

    num_epochs: int
    train_per_device_batch_size: int
    train_dl_kwargs: dict[str, Any]
    eval_per_device_batch_size: int
    eval_dl_kwargs: dict[str, Any]
    gradient_accumulation_steps: int
    gradient_clip_value: float | None
    train_total_batch_size: int
    eval_total_batch_size: int
    num_update_steps_per_epoch: int | None
    num_local_update_steps_per_epoch: int | None
    max_num_train_steps: int | None
    is_local_process_zero: bool
    is_world_process_zero: bool
    is_distributed: bool
    mixed_precision: str
    num_processes: int

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict; samplers and other objects in the data loader
        arguments are dropped so the result is picklable."""
        result = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("train_dl_kwargs", "eval_dl_kwargs"):
            result[key] = {k: v for k, v in (result[key] or {}).items() if k not in _UNPORTABLE_DL_KWARGS}
        return result


def create_run_config(
    accelerator: Any,
    run_state: Any,
    dataloader_kwargs: tuple[dict[str, Any], dict[str, Any]],
    num_epochs: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    gradient_clip_value: float | None,
    max_num_train_steps: int | None,
) -> TrainerRunConfig:
    """The config of a run whose loaders are prepared (collective on several processes: the
    epoch's length is the longest any process has). Batch sizes are the loaders' own, so
    ``batch_size`` given in the loader kwargs counts."""
    from accelerate.utils import DistributedType

    from pa_core.data import global_num_batches

    ga, processes = gradient_accumulation_steps, accelerator.num_processes
    num_batches = global_num_batches(run_state.train_dataloader, processes, run_state.control_group)
    updates_per_epoch = None if num_batches is None else math.ceil(num_batches / ga)
    if max_num_train_steps is not None and updates_per_epoch:
        num_epochs = math.ceil(max_num_train_steps / updates_per_epoch)
    train_kwargs, eval_kwargs = dataloader_kwargs
    train_batch_size = _loader_batch_size(run_state.train_dataloader, train_kwargs, batch_size)
    eval_batch_size = _loader_batch_size(run_state.eval_dataloader, eval_kwargs, batch_size)
    return TrainerRunConfig(
        num_epochs=num_epochs,
        train_per_device_batch_size=train_batch_size,
        train_dl_kwargs=train_kwargs,
        eval_per_device_batch_size=eval_batch_size,
        eval_dl_kwargs=eval_kwargs,
        gradient_accumulation_steps=ga,
        gradient_clip_value=gradient_clip_value,
        train_total_batch_size=train_batch_size * processes * ga,
        eval_total_batch_size=eval_batch_size * processes,
        num_update_steps_per_epoch=updates_per_epoch,
        num_local_update_steps_per_epoch=updates_per_epoch,
        max_num_train_steps=max_num_train_steps,
        is_local_process_zero=accelerator.is_local_main_process,
        is_world_process_zero=accelerator.is_main_process,
        is_distributed=accelerator.distributed_type != DistributedType.NO,
        mixed_precision=accelerator.mixed_precision,
        num_processes=processes,
    )


def _loader_batch_size(dataloader: Any, kwargs: dict[str, Any], default: int) -> int:
    """The per-device batch size a loader really uses (user kwargs included)."""
    size = getattr(dataloader, "batch_size", None)
    if isinstance(size, int):
        return size
    return kwargs.get("batch_size", default) if dataloader is not None else default
