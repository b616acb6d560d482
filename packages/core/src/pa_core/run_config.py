"""The frozen record of how a training run was configured."""

from __future__ import annotations

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
    upstream name). ``max_num_train_steps`` counts optimizer updates.
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
    num_update_steps_per_epoch: int
    num_local_update_steps_per_epoch: int
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
