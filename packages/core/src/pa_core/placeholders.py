"""Placeholders for values only known once ``train()`` has prepared the data.

Use them as keyword defaults of a ``functools.partial`` passed as ``create_scheduler_fn``;
the Trainer substitutes them when it creates the scheduler::

    create_scheduler_fn = partial(
        OneCycleLR, max_lr=0.01,
        epochs=TrainerPlaceholderValues.NUM_EPOCHS,
        steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
    )

Placeholders combine with numbers through ``*`` and ``+`` (``NUM_EPOCHS * 2 + 1``). Values
are read from the trainer by attribute; no string is ever evaluated.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pa_core.trainer import Trainer

__all__ = ["TrainerPlaceholderValues", "replace_trainer_placeholder_values"]

_SUBTRACTION_MESSAGE = (
    "Placeholders do not support subtraction; add a negative number instead, e.g. `PLACEHOLDER + -1`."
)


class _Arithmetic:
    """``*`` and ``+`` with numbers, building an expression ``placeholder * scale + offset``."""

    def _affine(self) -> tuple[TrainerPlaceholderValues, Any, Any]:
        raise NotImplementedError

    def __mul__(self, other: Any) -> PlaceholderExpression:
        placeholder, scale, offset = self._affine()
        return PlaceholderExpression(placeholder, scale * _number(other), offset * other)

    __rmul__ = __mul__

    def __add__(self, other: Any) -> PlaceholderExpression:
        placeholder, scale, offset = self._affine()
        return PlaceholderExpression(placeholder, scale, offset + _number(other))

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        raise NotImplementedError(_SUBTRACTION_MESSAGE)

    __rsub__ = __sub__


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Placeholders can only be combined with numbers, got {value!r}.")
    return value


class TrainerPlaceholderValues(_Arithmetic, Enum):
    """Values substituted from the trainer when the scheduler is created.

    - ``NUM_EPOCHS``: ``run_config.num_epochs``.
    - ``NUM_UPDATE_STEPS_PER_EPOCH``: optimizer updates each process performs per epoch.
    - ``PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH``: the same number, under upstream's name.
    - ``TRAIN_DATALOADER_LEN`` / ``EVAL_DATALOADER_LEN``: batches per process per epoch.
    """

    NUM_EPOCHS = "run_config.num_epochs"
    NUM_UPDATE_STEPS_PER_EPOCH = "run_config.num_update_steps_per_epoch"
    PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH = "run_config.num_local_update_steps_per_epoch"
    TRAIN_DATALOADER_LEN = "len:train_dataloader"
    EVAL_DATALOADER_LEN = "len:eval_dataloader"

    @classmethod
    def placeholder_set(cls) -> set[str]:
        """The names of every placeholder."""
        return {member.name for member in cls}

    def _affine(self) -> tuple[TrainerPlaceholderValues, Any, Any]:
        return self, 1, 0

    def resolve(self, trainer: Trainer) -> Any:
        """The placeholder's value for ``trainer``."""
        path = self.value
        if path.startswith("len:"):
            loader = getattr(trainer, path[4:], None)
            if loader is None:
                raise ValueError(f"{self.name} is only known when the trainer has that data loader.")
            try:
                return len(loader)
            except TypeError:
                raise ValueError(self._unknown_length_message()) from None
        obj: Any = trainer
        for attribute in path.split("."):
            obj = getattr(obj, attribute)
        if obj is None:
            raise ValueError(self._unknown_length_message())
        return obj

    def _unknown_length_message(self) -> str:
        return (
            f"create_scheduler_fn uses the placeholder {self.name}, but the data is an iterable dataset without a "
            "length (__len__), so the number of batches and optimizer updates per epoch is not known before it "
            "ends. Size the schedule in optimizer updates with numbers instead, e.g. "
            "CosineLrScheduler.create_scheduler_fn(total_num_epochs=1, num_update_steps_per_epoch=N) with "
            "train(max_num_train_steps=N), or give the dataset a __len__."
        )


class PlaceholderExpression(_Arithmetic):
    """``placeholder * scale + offset``, the result of placeholder arithmetic."""

    def __init__(self, placeholder: TrainerPlaceholderValues, scale: Any, offset: Any) -> None:
        self.placeholder, self.scale, self.offset = placeholder, scale, offset

    def _affine(self) -> tuple[TrainerPlaceholderValues, Any, Any]:
        return self.placeholder, self.scale, self.offset

    def resolve(self, trainer: Trainer) -> Any:
        return self.placeholder.resolve(trainer) * self.scale + self.offset

    def __repr__(self) -> str:
        return f"{self.placeholder.name} * {self.scale!r} + {self.offset!r}"


def _resolve(value: Any, trainer: Trainer) -> Any:
    return value.resolve(trainer) if isinstance(value, (TrainerPlaceholderValues, PlaceholderExpression)) else value


def replace_trainer_placeholder_values(trainer: Trainer, instance: Any) -> Any:
    """Return ``instance`` with placeholder arguments replaced by the trainer's values.

    ``instance`` is typically a ``functools.partial``; its positional and keyword
    arguments are substituted. Anything else is returned unchanged.
    """
    if not isinstance(instance, functools.partial):
        return instance
    args = [_resolve(arg, trainer) for arg in instance.args]
    kwargs = {key: _resolve(value, trainer) for key, value in instance.keywords.items()}
    return functools.partial(instance.func, *args, **kwargs)
