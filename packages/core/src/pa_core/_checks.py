"""Argument checks for the Trainer: bad input is reported before any work, naming the argument,
the value received and what to pass instead.

The Trainer calls :func:`check_trainer_arguments` from ``__init__``, :func:`check_train_arguments`
from ``train()`` and :func:`check_evaluate_arguments` from ``evaluate()``; the smaller checks are
used by those and by the loop (:func:`check_batch_output` on the first batch of an epoch).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import IterableDataset

__all__ = [
    "call_loss_func",
    "check_batch_output",
    "check_dataset",
    "check_evaluate_arguments",
    "check_optimizer",
    "check_positive_int",
    "check_train_arguments",
    "check_trainer_arguments",
    "inputs_and_targets",
]

_EXAMPLE_OPTIMIZER = "torch.optim.AdamW(model.parameters(), lr=1e-3)"


# ----------------------------------------------------------------------------------------
# Trainer()
# ----------------------------------------------------------------------------------------


def check_trainer_arguments(model: Any, loss_func: Any, optimizer: Any, callbacks: Any) -> None:
    """Check ``Trainer(model, loss_func, optimizer, callbacks)``.

    :raises TypeError: when ``model`` is not an ``nn.Module``, ``loss_func`` is neither callable
        nor None, ``optimizer`` is not an optimizer instance (a string, or the optimizer class
        itself), or ``callbacks`` is not a collection of callbacks.
    :raises ValueError: when none of the optimizer's parameters belong to the model.
    :warns UserWarning: when some trainable parameters of the model are not in the optimizer.
    """
    if not isinstance(model, torch.nn.Module):
        hint = (
            " Build the model first (e.g. model = torchvision.models.resnet18()) and pass the module."
            if isinstance(model, str)
            else ""
        )
        raise TypeError(f"model must be a torch.nn.Module, got {_describe(model)}.{hint}")
    if _looks_like_optimizer(loss_func) and callable(optimizer):
        raise TypeError(
            f"loss_func is an optimizer ({_describe(loss_func)}) and optimizer is {_describe(optimizer)}: the "
            "arguments look swapped. The order is Trainer(model, loss_func, optimizer); passing them by name "
            "avoids the mix-up: Trainer(model, loss_func=..., optimizer=...)."
        )
    if isinstance(loss_func, type) and issubclass(loss_func, torch.nn.Module):
        raise TypeError(
            f"loss_func must be a loss function or an instance of a loss module, got the class "
            f"{_class_path(loss_func)} itself. Create it: loss_func={_class_path(loss_func)}()."
        )
    if loss_func is not None and not callable(loss_func):
        raise TypeError(
            f"loss_func must be callable as loss_func(model_outputs, targets) (e.g. torch.nn.CrossEntropyLoss()), "
            f"or None for a model that computes its own loss; got {_describe(loss_func)}."
        )
    check_optimizer(optimizer, model, loss_func)
    if isinstance(callbacks, (str, bytes)):
        raise TypeError(
            f"callbacks must be a list of callbacks, got the string {callbacks!r}; for one catalogue name write "
            f"callbacks=[{callbacks!r}]."
        )
    if not isinstance(callbacks, Iterable):
        raise TypeError(
            f"callbacks must be a list (or tuple) of callbacks, got {_describe(callbacks)}; for one callback write "
            "callbacks=[callback]."
        )


def check_optimizer(optimizer: Any, model: torch.nn.Module, loss_func: Any = None) -> None:
    """Check that ``optimizer`` is None or an optimizer instance over ``model``'s parameters.

    Parameters of ``loss_func`` (when it is a module with parameters of its own) count as the
    model's.

    :raises TypeError: for a string, an optimizer class, or an object that is not an optimizer.
    :raises ValueError: when none of the optimizer's parameters belong to the model.
    :warns UserWarning: naming the trainable parameters of the model the optimizer leaves out.
    """
    if optimizer is None:
        return
    if isinstance(optimizer, type):
        example = f"{_class_path(optimizer)}(model.parameters(), lr=...)"
        raise TypeError(
            f"optimizer must be an optimizer instance, got the class {_class_path(optimizer)} itself. Create it over "
            f"the model's parameters and pass that: optimizer={example}."
        )
    if isinstance(optimizer, str):
        raise TypeError(
            f"optimizer must be an optimizer instance, got the string {optimizer!r}; pa does not create optimizers "
            f"from names. Pass one created over the model's parameters, e.g. optimizer={_EXAMPLE_OPTIMIZER}."
        )
    if not _looks_like_optimizer(optimizer):
        raise TypeError(
            f"optimizer must be a torch optimizer (with param_groups, step() and zero_grad()), or None to only "
            f"evaluate; got {_describe(optimizer)}. Pass e.g. optimizer={_EXAMPLE_OPTIMIZER}."
        )
    optimized = [p for group in optimizer.param_groups for p in group.get("params", ())]
    if not optimized:
        return  # parameter groups may be added later (e.g. by gradual unfreezing)
    optimized_ids = {id(p) for p in optimized}
    named = list(model.named_parameters())
    known_ids = {id(p) for _, p in named}
    if isinstance(loss_func, torch.nn.Module):
        known_ids.update(id(p) for p in loss_func.parameters())
    if not optimized_ids & known_ids:
        raise ValueError(
            f"None of the optimizer's {len(optimized_ids)} parameters belong to the model "
            f"({type(model).__name__}, {len(known_ids)} parameters), so training would change nothing. The "
            "optimizer was probably created over another model, or before the model was re-created or copied; "
            f"create it from this model: optimizer = {type(optimizer).__name__}(model.parameters(), ...)."
        )
    left_out = [name for name, p in named if p.requires_grad and id(p) not in optimized_ids]
    if left_out:
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        trainable = sum(1 for _, p in named if p.requires_grad)
        warnings.warn(
            f"{len(left_out)} of the model's {trainable} trainable parameters are not in the optimizer, so they "
            f"will not be trained: {shown}. If that is intended, freeze them (param.requires_grad_(False), or "
            "pa_core.finetuning.ModelFreezer); otherwise create the optimizer over model.parameters().",
            UserWarning,
            stacklevel=4,
        )


def _looks_like_optimizer(value: Any) -> bool:
    return (
        not isinstance(value, type)
        and hasattr(value, "param_groups")
        and callable(getattr(value, "step", None))
        and callable(getattr(value, "zero_grad", None))
    )


# ----------------------------------------------------------------------------------------
# train() and evaluate()
# ----------------------------------------------------------------------------------------


def check_train_arguments(
    *,
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
    optimizer: Any,
) -> None:
    """Check the arguments of ``Trainer.train`` (``optimizer`` is the trainer's).

    ``resume_from`` is checked by :func:`pa_core.training_state.find_training_state`, which also finds the folder.

    :raises ValueError: for an empty or missing dataset, a count that is not a positive integer,
        a non-positive clip value, or a Trainer without an optimizer.
    :raises TypeError: for arguments of the wrong type (a scheduler factory or collate function
        that is not callable, data-loader arguments that are not a dict).
    """
    check_dataset("train_dataset", train_dataset)
    if eval_dataset is not None:
        check_dataset("eval_dataset", eval_dataset)
    check_positive_int("num_epochs", num_epochs)
    check_positive_int("per_device_batch_size", per_device_batch_size)
    check_positive_int("gradient_accumulation_steps", gradient_accumulation_steps)
    if max_num_train_steps is not None:
        check_positive_int("max_num_train_steps", max_num_train_steps)
    if gradient_clip_value is not None and (
        isinstance(gradient_clip_value, bool)
        or not isinstance(gradient_clip_value, (int, float))
        or not gradient_clip_value > 0
    ):
        raise ValueError(f"gradient_clip_value must be a positive number or None, got {gradient_clip_value!r}.")
    if create_scheduler_fn is not None and not callable(create_scheduler_fn):
        raise TypeError(
            f"create_scheduler_fn must be callable (e.g. a functools.partial), got {create_scheduler_fn!r}."
        )
    check_dataloader_kwargs("train_dataloader_kwargs", train_dataloader_kwargs)
    check_dataloader_kwargs("eval_dataloader_kwargs", eval_dataloader_kwargs)
    check_collate_fn(collate_fn)
    if not isinstance(reset_run_history, bool):
        raise TypeError(f"reset_run_history must be True or False, got {reset_run_history!r}.")
    if optimizer is None:
        raise ValueError("The Trainer was created with optimizer=None; pass an optimizer to train.")


def check_evaluate_arguments(dataset: Any, per_device_batch_size: Any, dataloader_kwargs: Any, collate_fn: Any) -> None:
    """Check the arguments of ``Trainer.evaluate`` (``dataset`` after the default is applied)."""
    if dataset is None:
        raise ValueError("evaluate() needs a dataset: pass `dataset` (no eval_dataset was given to train()).")
    check_dataset("dataset", dataset)
    check_positive_int("per_device_batch_size", per_device_batch_size)
    check_dataloader_kwargs("dataloader_kwargs", dataloader_kwargs)
    check_collate_fn(collate_fn)


def check_positive_int(name: str, value: Any) -> None:
    """:raises ValueError: unless ``value`` is an int of at least 1 (``True`` is refused)."""
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


def check_dataloader_kwargs(name: str, value: Any) -> None:
    """:raises TypeError: unless ``value`` is None or a dict of ``DataLoader`` arguments."""
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of DataLoader arguments or None, got {value!r}.")


def check_collate_fn(collate_fn: Any) -> None:
    """:raises TypeError: unless ``collate_fn`` is None or callable."""
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"collate_fn must be callable or None, got {collate_fn!r}.")


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------


def check_batch_output(batch_output: Any, method: str) -> None:
    """Check what ``calculate_train_batch_loss`` / ``calculate_eval_batch_loss`` returned.

    :raises ValueError: unless it is a dict with ``loss`` (a scalar tensor) and ``batch_size``.
    """
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
                f"{_describe_output(model_outputs)}, targets: {_describe_output(targets)}. Check the model's output "
                f"and the loss function agree, or override Trainer.{method}.)"
            )
        raise


# ----------------------------------------------------------------------------------------
# Describing values
# ----------------------------------------------------------------------------------------


def warn_about_epoch_loss(metric: str, loss: float | None, epoch: int, run_state: Any) -> None:
    """Warn about an epoch without samples (no loss is recorded for it), and once per run about a
    diverged training loss."""
    if loss is None:
        warnings.warn(
            f"{metric} is not recorded for epoch {epoch}: the epoch had no samples on any process (an empty "
            "dataset, an IterableDataset whose __iter__ does not start again each epoch, or drop_last=True with "
            "fewer samples than one batch on every process).",
            RuntimeWarning,
            stacklevel=4,
        )
    elif metric == "train_loss_epoch" and not math.isfinite(loss) and not run_state.warned_non_finite:
        run_state.warned_non_finite = True
        warnings.warn(
            f"train_loss_epoch is {loss} in epoch {epoch}: training diverged (lower the learning rate, clip "
            "gradients, check the data), and the weights are probably no longer finite. Add the terminate-on-nan "
            "callback to stop such runs automatically.",
            RuntimeWarning,
            stacklevel=4,
        )


def _class_path(cls: type) -> str:
    module = cls.__module__
    if module.startswith("torch.optim."):
        module = "torch.optim"  # torch.optim.adam.Adam is torch.optim.Adam to its users
    elif module.startswith("torch.nn.modules."):
        module = "torch.nn"  # and torch.nn.modules.loss.MSELoss is torch.nn.MSELoss
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _describe(value: Any) -> str:
    """``value`` as an error message shows it: its repr (shortened) and its type."""
    if isinstance(value, type):
        return f"the class {_class_path(value)}"
    if value is None:
        return "None"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (a {_class_path(type(value))})"


def _describe_output(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def check_run_eval_epoch(dataloader: Any, callbacks: Any, evaluating: bool) -> None:
    """Check a ``Trainer.run_eval_epoch`` call (``dataloader`` after the default is applied;
    ``evaluating``: it is made from inside an evaluation epoch)."""
    if dataloader is None:
        raise ValueError("run_eval_epoch needs a data loader: the run has no eval_dataset; pass `dataloader`.")
    if callbacks is None and evaluating:
        raise RuntimeError(
            "run_eval_epoch was called during an evaluation epoch (from an eval hook) with the trainer's own "
            "callbacks, which would fire that hook again, endlessly. Pass callbacks=() (or the callbacks the "
            "nested evaluation should call)."
        )
