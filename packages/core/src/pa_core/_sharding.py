"""Gathering sharded states into the plain tensors of one portable file (``save_checkpoint``).

Under FSDP2 every parameter, and so every optimizer state tensor, is a ``DTensor``: each process
holds a shard. ``torch.save`` would store the shards with their device mesh, which neither loads
with ``weights_only=True`` nor into a plain model. :func:`full_state` gathers each one whole (a
collective: every process calls it, with the same structure) and moves it to the CPU.
"""

from __future__ import annotations

from typing import Any

import torch

__all__: list[str] = []


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return None
    return DTensor


def is_sharded(obj: Any) -> bool:
    """Whether ``obj`` (a tensor, or dicts and lists of them) holds a ``DTensor``."""
    dtensor = _dtensor_type()
    if dtensor is None:
        return False
    if isinstance(obj, dtensor):
        return True
    if isinstance(obj, dict):
        return any(is_sharded(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(is_sharded(value) for value in obj)
    return False


def full_state(obj: Any, keep: bool = True) -> Any:
    """``obj`` with every ``DTensor`` replaced by the whole tensor on the CPU (collective when it
    holds any: call it on every process). ``keep=False`` gathers without keeping the result (for
    the processes that do not write the file: each whole tensor is freed at once)."""
    dtensor = _dtensor_type()
    if dtensor is None or not is_sharded(obj):
        return obj
    return _gather(obj, dtensor, keep)


def _gather(obj: Any, dtensor: type, keep: bool) -> Any:
    if isinstance(obj, dtensor):
        whole = obj.full_tensor()  # type: ignore[attr-defined]
        return whole.detach().cpu() if keep else None
    if isinstance(obj, dict):
        return type(obj)((key, _gather(value, dtensor, keep)) for key, value in obj.items())
    if isinstance(obj, list):
        return [_gather(value, dtensor, keep) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_gather(value, dtensor, keep) for value in obj)
    if isinstance(obj, torch.Tensor) and keep:
        return obj.detach().cpu()
    return obj
