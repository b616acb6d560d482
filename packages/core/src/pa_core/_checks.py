"""Argument checks for the Trainer: bad input fails early, naming the argument, the value received
and what to do."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import IterableDataset


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (1 or more), got {value!r}.")


def check_dataset(name: str, dataset: Any) -> None:
    """A map-style dataset (``__getitem__`` and ``__len__``) or a torch ``IterableDataset``."""
    if dataset is None:
        raise ValueError(f"{name} is None; pass a torch Dataset (or any object with __getitem__ and __len__).")
    if isinstance(dataset, IterableDataset):
        return
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        iterable = hasattr(dataset, "__iter__") or hasattr(dataset, "__next__")
        hint = (
            " It can be iterated: wrap it in a torch.utils.data.IterableDataset whose __iter__ returns a fresh "
            "iterator each time (a generator is exhausted after one epoch)."
            if iterable
            else ""
        )
        raise TypeError(
            f"{name} is a {type(dataset).__name__}, which is neither a map-style dataset (__getitem__ and __len__) "
            f"nor a torch.utils.data.IterableDataset.{hint}"
        )
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty (len({name}) == 0); it needs at least one sample.")


def check_train_arguments(
    optimizer: Any,
    train_dataset: Any,
    num_epochs: Any,
    eval_dataset: Any,
    per_device_batch_size: Any,
    max_num_train_steps: Any,
    gradient_accumulation_steps: Any,
    gradient_clip_value: Any,
    create_scheduler_fn: Any,
    train_dataloader_kwargs: Any,
    eval_dataloader_kwargs: Any,
    reset_run_history: Any,
    collate_fn: Any,
) -> None:
    """Check ``Trainer.train``'s arguments (``resume_from`` is checked where it is found)."""
    check_dataset("train_dataset", train_dataset)
    if eval_dataset is not None:
        check_dataset("eval_dataset", eval_dataset)
    check_positive_int("num_epochs", num_epochs)
    check_positive_int("per_device_batch_size", per_device_batch_size)
    check_positive_int("gradient_accumulation_steps", gradient_accumulation_steps)
    if max_num_train_steps is not None:
        check_positive_int("max_num_train_steps", max_num_train_steps)
    if gradient_clip_value is not None and not (
        isinstance(gradient_clip_value, (int, float))
        and not isinstance(gradient_clip_value, bool)
        and gradient_clip_value > 0
    ):
        raise ValueError(f"gradient_clip_value must be a positive number or None, got {gradient_clip_value!r}.")
    if create_scheduler_fn is not None and not callable(create_scheduler_fn):
        raise TypeError(
            f"create_scheduler_fn must be callable (e.g. a functools.partial), got {create_scheduler_fn!r}."
        )
    for name, value in (
        ("train_dataloader_kwargs", train_dataloader_kwargs),
        ("eval_dataloader_kwargs", eval_dataloader_kwargs),
    ):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict of DataLoader arguments or None, got {value!r}.")
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"collate_fn must be callable or None, got {collate_fn!r}.")
    if not isinstance(reset_run_history, bool):
        raise TypeError(f"reset_run_history must be True or False, got {reset_run_history!r}.")
    if optimizer is None:
        raise ValueError("The Trainer was created with optimizer=None; pass an optimizer to train.")


def check_batch_output(batch_output: Any, method: str) -> None:
    if not isinstance(batch_output, dict) or "loss" not in batch_output or "batch_size" not in batch_output:
        found = sorted(batch_output) if isinstance(batch_output, dict) else type(batch_output).__name__
        raise ValueError(
            f"{method} must return a dict with 'loss', 'model_outputs' and 'batch_size'; got {found}. "
            f"Override Trainer.{method} to return them for your batch layout."
        )
    loss = batch_output["loss"]
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(
            f"The loss returned by {method} must be a scalar tensor, got {shape}. Reduce it (e.g. with "
            f".mean()) in loss_func, or override Trainer.{method}."
        )


def inputs_and_targets(batch: Any, method: str) -> tuple[Any, Any]:
    """``batch[0]`` and ``batch[1]``, or a clear error saying how to handle other layouts."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    found = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else "")
    keys = f" with keys {sorted(batch)}" if isinstance(batch, dict) else ""
    raise TypeError(
        f"The default Trainer.{method} expects each batch to be (inputs, targets); the data loader yielded "
        f"{found}{keys}. Override Trainer.{method} to unpack your batches (see the README, 'Customising the loop')."
    )


def call_loss_func(loss_func: Any, model_outputs: Any, targets: Any, method: str) -> torch.Tensor:
    """``loss_func(model_outputs, targets)``, with a note describing both when it fails."""
    if loss_func is None:
        raise ValueError(
            f"loss_func is None, so the default Trainer.{method} cannot compute a loss. Pass a loss_func, or "
            f"override Trainer.{method} to take the loss from your model's outputs."
        )
    try:
        return loss_func(model_outputs, targets)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(
                f"(pa: loss_func(model_outputs, targets) failed in Trainer.{method}; model_outputs: "
                f"{_describe(model_outputs)}, targets: {_describe(targets)}. Check the model's output and the "
                f"loss function agree, or override Trainer.{method}.)"
            )
        raise


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def check_path_argument(name: str, value: Any) -> None:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {value!r}.")
