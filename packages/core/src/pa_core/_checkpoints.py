"""``Trainer.save_checkpoint`` and ``Trainer.load_checkpoint``: one portable file of weights (and,
if asked, optimizer and scheduler states) that loads into a plain model."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from accelerate.utils import DistributedType

from pa_core._serialization import atomic_save, check_checkpoint, check_optimizer_state, load_file, load_model_state
from pa_core._sharding import full_state

if TYPE_CHECKING:
    from pa_core._trainer_base import TrainerBase


def save_checkpoint(
    trainer: TrainerBase,
    save_path: str | os.PathLike[str],
    checkpoint_kwargs: dict[str, Any] | None,
    save_optimizer: bool,
    save_scheduler: bool,
    save_per_node: bool,
    wrapped_model: Any,
) -> None:
    """See :meth:`pa_core.Trainer.save_checkpoint`; ``wrapped_model`` is the run's prepared model."""
    accelerator, model = trainer.accelerator, trainer.model
    if wrapped_model is not None and wrapped_model is not model and accelerator.unwrap_model(wrapped_model) is model:
        model = wrapped_model  # after train(): sharded engines (DeepSpeed ZeRO-3) gather through their wrapper
    model_state = accelerator.get_state_dict(model, unwrap=True)
    # DeepSpeed ZeRO-3 gathers the full weights on the world's main process only (None elsewhere),
    # and so does FSDP (an empty dict elsewhere).
    is_fsdp = accelerator.distributed_type == DistributedType.FSDP
    has_weights = model_state is not None and (accelerator.is_main_process or not is_fsdp)
    checkpoint: dict[str, Any] = {"model_state_dict": _strip_compile_prefix(model_state) if has_weights else {}}
    if save_optimizer and trainer.optimizer is not None:
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            warnings.warn(
                "DeepSpeed shards the optimizer state across processes, so save_checkpoint saves the model "
                "weights only; use save_training_state(dir) to keep the optimizer state.",
                UserWarning,
                stacklevel=3,
            )
        else:  # (FSDP2's optimizer state is sharded like its parameters: gathered whole)
            checkpoint["optimizer_state_dict"] = full_state(trainer.optimizer.state_dict(), has_weights)
    if save_scheduler and trainer.scheduler is not None:
        checkpoint["scheduler_state_dict"] = trainer.scheduler.state_dict()
    checkpoint.update(checkpoint_kwargs or {})
    writer = accelerator.is_local_main_process if save_per_node else accelerator.is_main_process
    if writer and has_weights:
        atomic_save(checkpoint, save_path)
    accelerator.wait_for_everyone()


def load_checkpoint(
    trainer: TrainerBase, checkpoint_path: str | os.PathLike[str], load_optimizer: bool, load_scheduler: bool
) -> dict[str, Any]:
    """See :meth:`pa_core.Trainer.load_checkpoint`."""
    checkpoint = check_checkpoint(load_file(checkpoint_path, "checkpoint"), checkpoint_path)
    optimizer_state = checkpoint.get("optimizer_state_dict") if load_optimizer else None
    if optimizer_state is not None and trainer.optimizer is None:
        raise ValueError(
            "The checkpoint holds an optimizer state but this Trainer has no optimizer: create the Trainer "
            "with the optimizer, or call load_checkpoint(..., load_optimizer=False)."
        )
    if load_scheduler and "scheduler_state_dict" in checkpoint and trainer.scheduler is None:
        raise ValueError(
            "The checkpoint holds a scheduler state but this Trainer has no scheduler (one is created by "
            "train(create_scheduler_fn=...)); call load_checkpoint(..., load_scheduler=False)."
        )
    if optimizer_state is not None:
        check_optimizer_state(trainer.optimizer, optimizer_state, checkpoint_path)
    model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    load_model_state(model, checkpoint["model_state_dict"], checkpoint_path)
    if optimizer_state is not None and trainer.optimizer is not None:
        trainer.optimizer.load_state_dict(optimizer_state)
    if load_scheduler and "scheduler_state_dict" in checkpoint:
        trainer.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
    return checkpoint


def _strip_compile_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    prefix = "_orig_mod."
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}
