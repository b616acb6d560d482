"""Callbacks that place modules: move helper modules to the device, convert BatchNorm layers to
SyncBatchNorm in distributed runs."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from pa_core import TrainerCallback

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["ConvertSyncBatchNormCallback", "MoveModulesToDeviceCallback"]


class MoveModulesToDeviceCallback(TrainerCallback):
    """Moves every ``nn.Module`` attribute of the trainer except ``model`` (for example a loss
    function with weights) to the trainer's device at the start of ``train()`` and ``evaluate()``.

    The model itself is placed by Accelerate when the run is prepared.
    """

    def _get_modules(self, trainer: Trainer) -> list[tuple[str, torch.nn.Module]]:
        """The ``(name, module)`` attributes of ``trainer`` to move: every public module
        attribute (a loss function, a teacher model...) except the model, which Accelerate places."""
        return [
            (name, value)
            for name, value in vars(trainer).items()
            if isinstance(value, torch.nn.Module) and name != "model" and not name.startswith("_")
        ]

    def _move_modules_to_device(self, trainer: Trainer) -> None:
        for _, module in self._get_modules(trainer):
            module.to(trainer.device)

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._move_modules_to_device(trainer)

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._move_modules_to_device(trainer)


class ConvertSyncBatchNormCallback(TrainerCallback):
    """Converts every ``BatchNorm*d`` layer of the model to ``torch.nn.SyncBatchNorm`` at the start
    of a distributed training run, so batch statistics are computed over all processes.

    PyTorch's SyncBatchNorm only trains on accelerators (CUDA, XPU, HPU, ...): on CPU processes
    (gloo) the layers are left as they are, with a warning, instead of failing at the first batch.
    Single-process runs are left unchanged.
    """

    #: Device types on which SyncBatchNorm can train.
    sync_device_types: tuple[str, ...] = ("cuda", "xpu", "hpu", torch._C._get_privateuse1_backend_name())

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        if not trainer.run_config.is_distributed:
            return
        if trainer.device.type not in self.sync_device_types:
            warnings.warn(
                f"ConvertSyncBatchNormCallback: SyncBatchNorm cannot train on {trainer.device.type!r} devices, so "
                "the model's BatchNorm layers are left unchanged (each process normalises with its own batch "
                "statistics). Train on GPUs to synchronise them, or remove this callback.",
                UserWarning,
                stacklevel=2,
            )
            return
        trainer.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainer.model)
