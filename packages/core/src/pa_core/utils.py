"""Utilities: an exponential moving average of a model, batch limiting for quick runs,
process-aware decorators, a data loader worker seed function, and padding removal.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator
from copy import deepcopy
from functools import wraps
from typing import Any, TypeVar

import torch
from accelerate.state import PartialState
from torch import nn

from pa_core.callbacks import TrainerCallback

__all__ = [
    "LIMIT_BATCHES_ENV_VAR",
    "DataLoaderSlice",
    "LimitBatches",
    "LimitBatchesCallback",
    "ModelEma",
    "local_process_zero_first",
    "local_process_zero_only",
    "remove_padding",
    "worker_init_fn",
    "world_process_zero_only",
]

LIMIT_BATCHES_ENV_VAR = "PT_ACC_LIMIT_BATCHES"
"""The environment variable that :class:`LimitBatches` sets; a Trainer created while it holds an
integer limits every data loader to that many batches."""

F = TypeVar("F", bound=Callable[..., Any])


class LimitBatches:
    """Context manager: a Trainer created inside it uses at most ``num_batches`` batches per
    train and eval epoch, for quick checks of a training script.

    It sets the environment variable ``PT_ACC_LIMIT_BATCHES`` to ``num_batches`` on entry and
    restores the previous value (or its absence) on exit. Setting the variable yourself, e.g.
    ``PT_ACC_LIMIT_BATCHES=2 python train.py``, has the same effect::

        with LimitBatches(2):
            trainer = Trainer(...)
            trainer.train(...)
    """

    def __init__(self, num_batches: int) -> None:
        """
        :param num_batches: the most batches per epoch, a positive integer.
        :raises ValueError: for anything but a positive integer.
        """
        if not isinstance(num_batches, int) or isinstance(num_batches, bool) or num_batches < 1:
            raise ValueError(f"num_batches={num_batches!r} is not accepted; expected a positive integer")
        self.num_batches = num_batches
        self._previous: str | None = None

    def __enter__(self) -> LimitBatches:
        self._previous = os.environ.get(LIMIT_BATCHES_ENV_VAR)
        os.environ[LIMIT_BATCHES_ENV_VAR] = str(self.num_batches)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is None:
            os.environ.pop(LIMIT_BATCHES_ENV_VAR, None)
        else:
            os.environ[LIMIT_BATCHES_ENV_VAR] = self._previous


def limit_batches_from_env() -> int | None:
    """The limit ``PT_ACC_LIMIT_BATCHES`` sets (None when unset or ``none``)."""
    value = os.environ.get(LIMIT_BATCHES_ENV_VAR, "").strip()
    if value.lower() in ("", "none"):
        return None
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{LIMIT_BATCHES_ENV_VAR} must be a positive integer or 'none', got {value!r}.")
    return limit


class LimitBatchesCallback(TrainerCallback):
    """Limits every training and evaluation epoch to ``num_batches`` batches per process, to check
    quickly that a training script runs end to end.

    This is the one mechanism behind batch limiting: a Trainer created while
    ``PT_ACC_LIMIT_BATCHES`` is set (by :class:`LimitBatches` or in the shell) puts a
    ``LimitBatchesCallback`` first in its callbacks. It wraps the run's data loaders in
    :class:`DataLoaderSlice` at the start of each run; schedules and placeholders are still sized
    on the full loaders. pa-callbacks publishes it as ``limit-batches``.

    :param num_batches: the most batches per epoch (2 by default, enough for a smoke test).
    """

    def __init__(self, num_batches: int = 2) -> None:
        if not isinstance(num_batches, int) or isinstance(num_batches, bool) or num_batches < 1:
            raise ValueError(
                f"LimitBatchesCallback(num_batches={num_batches!r}) is not accepted; num_batches must be a positive "
                "integer."
            )
        self.num_batches = num_batches

    def _limit(self, dataloader: Any) -> Any:
        if dataloader is None or isinstance(dataloader, DataLoaderSlice):
            return dataloader
        return DataLoaderSlice(dataloader, self.num_batches)

    def on_training_run_start(self, trainer: Any, **kwargs: Any) -> None:
        trainer.train_dataloader = self._limit(trainer.train_dataloader)
        trainer.eval_dataloader = self._limit(trainer.eval_dataloader)

    def on_evaluation_run_start(self, trainer: Any, **kwargs: Any) -> None:
        trainer.eval_dataloader = self._limit(trainer.eval_dataloader)


def with_batch_limit(callbacks: list[Any]) -> list[Any]:
    """``callbacks`` with a :class:`LimitBatchesCallback` first when ``PT_ACC_LIMIT_BATCHES`` is set
    (as it is inside ``with LimitBatches(n):``) and none is there yet."""
    limit = limit_batches_from_env()
    if limit is None or any(cb is LimitBatchesCallback or isinstance(cb, LimitBatchesCallback) for cb in callbacks):
        return callbacks
    return [LimitBatchesCallback(limit), *callbacks]


class DataLoaderSlice:
    """The first ``slice_size`` batches of a data loader.

    Iterating yields at most ``slice_size`` batches of ``dl``; ``len()`` is
    ``min(len(dl), slice_size)`` (``slice_size`` when ``dl`` has no length). Any other attribute
    (``batch_size``, ``dataset``, ``sampler``, ...) is read from ``dl``.
    """

    def __init__(self, dl: Iterable[Any], slice_size: int) -> None:
        """
        :param dl: the data loader (any iterable) to slice.
        :param slice_size: the most batches to yield, an integer >= 0.
        :raises ValueError: for a negative or non-integer ``slice_size``.
        """
        if not isinstance(slice_size, int) or isinstance(slice_size, bool) or slice_size < 0:
            raise ValueError(f"slice_size={slice_size!r} is not accepted; expected an integer >= 0")
        self.dl = dl
        self.slice_size = slice_size

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.dl, self.slice_size)

    def __len__(self) -> int:
        try:
            return min(len(self.dl), self.slice_size)  # type: ignore[arg-type]
        except TypeError:
            return self.slice_size

    def __getattr__(self, name: str) -> Any:
        if name == "dl":  # not set yet, e.g. while unpickling
            raise AttributeError(name)
        return getattr(self.dl, name)


def local_process_zero_only(func: F) -> F:
    """Decorator: run ``func`` only on the local main process (process 0 of each node) and
    return its result there; other processes return None. Every process waits at a barrier
    afterwards, so all leave together (on one process there is no waiting)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = PartialState()
        try:
            return func(*args, **kwargs) if state.local_process_index == 0 else None
        finally:
            state.wait_for_everyone()

    return wrapper  # type: ignore[return-value]


def local_process_zero_first(func: F) -> F:
    """Decorator: run ``func`` on every process, the local main process first; the others start
    once it has finished (e.g. it downloads a data set that the others then read from disk).
    Each process returns its own result."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = PartialState()
        if state.local_process_index == 0:
            try:
                return func(*args, **kwargs)
            finally:
                state.wait_for_everyone()
        state.wait_for_everyone()
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def world_process_zero_only(func: F) -> F:
    """Decorator: run ``func`` only on the global main process (process 0 of all) and return its
    result there; other processes return None. Every process waits at a barrier afterwards."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = PartialState()
        try:
            return func(*args, **kwargs) if state.process_index == 0 else None
        finally:
            state.wait_for_everyone()

    return wrapper  # type: ignore[return-value]


class ModelEma(nn.Module):
    """An exponential moving average (EMA) of a model's parameters and buffers.

    ``module`` is a frozen copy of the model, in eval mode. After each optimizer update call
    :meth:`update`; every floating-point entry of the state dict becomes::

        ema = decay * ema + (1 - decay) * model

    Integer entries (e.g. BatchNorm's ``num_batches_tracked``) are copied. Override
    :meth:`update_fn` to change the rule. Calling the ModelEma calls ``module``.

    Create it from the unwrapped model, before any SyncBatchNorm conversion or DDP wrapping;
    :meth:`update` pairs entries by position, so a wrapped model (DDP, torch.compile) whose state
    dict has the same entries in the same order also works.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        """
        :param model: the model being trained.
        :param decay: the weight kept from the average at each update, in [0, 1]; values close
            to 1 (0.999, 0.9999) average over many updates.
        :raises ValueError: when ``decay`` is outside [0, 1].
        """
        super().__init__()
        if not (isinstance(decay, (int, float)) and 0 <= decay <= 1):
            raise ValueError(f"decay={decay!r} is not accepted; expected a number in [0, 1]")
        self.module = deepcopy(model)
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.module.eval()
        self.decay = decay

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the averaged model."""
        return self.module(*args, **kwargs)

    def update_fn(self, ema_model_weights: torch.Tensor, updated_model_weights: torch.Tensor) -> torch.Tensor:
        """The new averaged value: ``decay * ema_model_weights + (1 - decay) * updated_model_weights``."""
        return self.decay * ema_model_weights + (1.0 - self.decay) * updated_model_weights

    @torch.no_grad()
    def _update(self, model: nn.Module, update_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        ema_state = self.module.state_dict().values()
        model_state = model.state_dict().values()
        for ema_value, model_value in zip(ema_state, model_state, strict=True):
            model_value = model_value.to(ema_value.device)
            if ema_value.is_floating_point():
                ema_value.copy_(update_fn(ema_value, model_value))
            else:
                ema_value.copy_(model_value)

    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model`` with :meth:`update_fn`."""
        self._update(model, self.update_fn)

    def set(self, model: nn.Module) -> None:
        """Copy ``model``'s parameters and buffers into the average."""
        self._update(model, lambda ema_value, model_value: model_value)


def worker_init_fn(worker_id: int) -> int:
    """Seed Python's ``random`` (and NumPy's global generator, if NumPy is installed) in a data
    loader worker from the worker's torch seed, ``torch.initial_seed() % 2**32``.

    PyTorch gives each worker its own torch seed (base seed + worker id, the base seed drawn
    afresh from the main process for every epoch's iterator); seeding the other generators from
    it keeps augmentations different across workers, epochs and processes, and reproducible
    under a fixed seed.

    :param worker_id: the worker's index (its seed already includes it).
    :return: the seed used.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        return seed
    numpy.random.seed(seed)
    return seed


def remove_padding(padded_tensor: torch.Tensor, pad_value: float) -> torch.Tensor:
    """Remove padding, e.g. added so that tensors of different sizes could be gathered.

    1-D: the elements equal to ``pad_value`` are dropped. N-D: the entries along dim 0 whose
    every element equals ``pad_value`` are dropped (a row containing any other value is kept
    whole). A NaN ``pad_value`` matches NaN.

    :raises ValueError: for a 0-D tensor.
    """
    if padded_tensor.ndim == 0:
        raise ValueError("remove_padding needs a tensor with at least one dimension, got a 0-D tensor")
    if isinstance(pad_value, float) and math.isnan(pad_value):
        is_pad = torch.isnan(padded_tensor)
    else:
        is_pad = padded_tensor == pad_value
    if padded_tensor.ndim > 1:
        is_pad = is_pad.flatten(start_dim=1).all(dim=1)
    return padded_tensor[~is_pad]
