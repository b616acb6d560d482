"""Parameter schedulers that step once per optimizer update.

A scheduler here sets a field of every optimizer parameter group (``lr`` by default, but
``weight_decay``, ``momentum`` or any other field works) to a value computed from the number of
optimizer updates performed so far. Call it once after every optimizer update; never per batch
and never per epoch. Schedules are sized in optimizer updates per process, so a schedule is the
same on one process or many.

- :class:`SchedulerBase`: stateless; you pass the update count to :meth:`~SchedulerBase.step_update`.
- :class:`StatefulSchedulerBase`: counts updates itself; the first :meth:`~StatefulSchedulerBase.step`
  is update 0.
- :class:`CosineLrScheduler`: linear warmup, cosine annealing with k-decay, cooldown at the minimum.
- :class:`WSDLrScheduler`: warmup-stable-decay with one or more decay checkpoints (arXiv 2410.05192).
- :func:`estimate_checkpoint_steps`: geometrically spaced checkpoint steps for :class:`WSDLrScheduler`.

Notation in the docstrings: ``n`` is the update index given to the scheduler (0 for the first
``step()``), ``b`` is a parameter group's base value (its ``initial_<field>``).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import partial
from numbers import Real
from typing import Any

import torch

from pa_core.placeholders import TrainerPlaceholderValues

__all__ = [
    "CosineLrScheduler",
    "SchedulerBase",
    "StatefulSchedulerBase",
    "WSDLrScheduler",
    "estimate_checkpoint_steps",
]


class SchedulerBase(ABC):
    """Base class for a scheduler of any field of an optimizer's parameter groups.

    On construction each group gets ``initial_<field>`` (kept if already present, e.g. after an
    optimizer state was loaded), and the field is set to that initial value. ``base_lr_values``
    holds the initial value of every group; the name is historical and it holds whichever field
    is scheduled.

    The class is stateless: the caller passes the number of updates::

        for batch in train_dataloader:
            ...
            optimizer.step()
            num_updates += 1
            scheduler.step_update(num_updates)

    Subclasses implement :meth:`get_updated_values`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, param_group_field: str = "lr") -> None:
        """
        :param optimizer: the optimizer whose parameter groups are updated; any object with
            ``param_groups`` works (e.g. Accelerate's wrapped optimizer).
        :param param_group_field: the parameter-group field to schedule.
        :raises KeyError: when a parameter group has no such field.
        """
        self.optimizer = optimizer
        self.param_group_field = param_group_field
        self._initial_param_group_field = f"initial_{param_group_field}"
        for index, group in enumerate(optimizer.param_groups):
            if param_group_field not in group:
                raise KeyError(
                    f"param_group_field={param_group_field!r} is not a field of optimizer.param_groups[{index}]; "
                    f"available fields: {sorted(k for k in group if k != 'params')}"
                )
            group.setdefault(self._initial_param_group_field, group[param_group_field])
        self.base_lr_values: list[Any] = [group[self._initial_param_group_field] for group in optimizer.param_groups]
        self._update_param_groups(self.base_lr_values)

    @abstractmethod
    def get_updated_values(self, num_updates: int) -> float | Sequence[float] | None:
        """The scheduled value(s) after ``num_updates`` optimizer updates.

        Return one number to give every parameter group that value, a list or tuple with one
        value per group, or None to leave the groups unchanged.
        """

    def step_update(self, num_updates: int) -> None:
        """Set every parameter group's field to ``get_updated_values(num_updates)``."""
        values = self.get_updated_values(num_updates)
        if values is not None:
            self._update_param_groups(values)

    def _update_param_groups(self, values: float | Sequence[float]) -> None:
        groups = self.optimizer.param_groups
        if not isinstance(values, (list, tuple)):
            values = [values] * len(groups)  # type: ignore[list-item]  # a single number here
        if len(values) != len(groups):
            raise ValueError(
                f"get_updated_values returned {len(values)} values for {len(groups)} parameter groups; "
                "return one number, or one value per group"
            )
        for group, value in zip(groups, values):
            group[self.param_group_field] = value

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer, which is saved on its own."""
        return {key: value for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict`."""
        self.__dict__.update(state_dict)


class StatefulSchedulerBase(SchedulerBase, ABC):
    """A :class:`SchedulerBase` that counts updates itself.

    Call :meth:`step` once after every optimizer update; the first call computes update 0, the
    next update 1, and so on. The count is part of the state, so a restored scheduler continues
    where the saved one stopped.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, param_group_field: str = "lr") -> None:
        """
        :param optimizer: the optimizer whose parameter groups are updated.
        :param param_group_field: the parameter-group field to schedule.
        """
        super().__init__(optimizer, param_group_field=param_group_field)
        self._num_updates = -1

    def step(self) -> None:
        """Advance the count by one and apply the values for the new count."""
        self._num_updates += 1
        self.step_update(self._num_updates)


def _check_number(name: str, value: Any, *, minimum: float = 0, allow_equal: bool = True) -> None:
    valid = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    valid = valid and (value >= minimum if allow_equal else value > minimum)
    if not valid:
        bound = f">= {minimum}" if allow_equal else f"> {minimum}"
        raise ValueError(f"{name}={value!r} is not accepted; expected a finite number {bound}")


class CosineLrScheduler(StatefulSchedulerBase):
    """Cosine annealing of the learning rate (arXiv 1608.03983, without restarts), with optional
    linear warmup, k-decay (arXiv 2004.05909) and a cooldown at the minimum.

    With ``T = total_num_epochs * num_update_steps_per_epoch`` updates, ``W`` warmup updates and
    ``C`` cooldown updates (each ``epochs * num_update_steps_per_epoch``), per parameter group::

        s = warmup_starting_lr_ratio * b   if warmup_starting_lr_ratio is not None else warmup_starting_lr
        m = min_lr_ratio * b               if min_lr_ratio is not None else lr_min

        n < W:            lr = s + (b - s) * n / W
        W <= n < T - C:   lr = m + (b - m) * (1 + cos(pi * ((n - W) / (T - W - C)) ** k_decay)) / 2
        n >= T - C:       lr = m

    So update ``W`` is the first at the base learning rate, the cosine reaches ``m`` exactly at
    ``T - C``, and the minimum is held through the cooldown and after the run. Construction sets
    the groups to the update-0 values. ``k_decay > 1`` keeps the rate high for longer,
    ``k_decay < 1`` lowers it sooner.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_num_epochs: int,
        num_update_steps_per_epoch: int,
        k_decay: float = 1.0,
        lr_min: float = 1e-6,
        min_lr_ratio: float | None = None,
        num_warmup_epochs: int = 0,
        warmup_starting_lr: float = 1e-6,
        warmup_starting_lr_ratio: float | None = None,
        num_cooldown_epochs: int = 0,
    ) -> None:
        """
        :param optimizer: the optimizer; each group's ``lr`` is its base (maximum) rate ``b``.
        :param total_num_epochs: epochs in the run, warmup and cooldown included.
        :param num_update_steps_per_epoch: optimizer updates per epoch on each process.
        :param k_decay: the exponent ``k`` applied to the cosine's progress.
        :param lr_min: the minimum rate ``m`` for every group.
        :param min_lr_ratio: if set, ``m = min_lr_ratio * b`` per group; takes precedence over ``lr_min``.
        :param num_warmup_epochs: epochs of linear warmup.
        :param warmup_starting_lr: the warmup's starting rate ``s`` for every group.
        :param warmup_starting_lr_ratio: if set, ``s = warmup_starting_lr_ratio * b`` per group;
            takes precedence over ``warmup_starting_lr``.
        :param num_cooldown_epochs: epochs at the minimum rate after the cosine.
        :raises ValueError: for a non-positive length, a negative value, or warmup plus cooldown
            longer than the run.
        """
        super().__init__(optimizer)
        _check_number("total_num_epochs", total_num_epochs, allow_equal=False)
        _check_number("num_update_steps_per_epoch", num_update_steps_per_epoch, allow_equal=False)
        _check_number("k_decay", k_decay, allow_equal=False)
        _check_number("lr_min", lr_min)
        _check_number("num_warmup_epochs", num_warmup_epochs)
        _check_number("warmup_starting_lr", warmup_starting_lr)
        _check_number("num_cooldown_epochs", num_cooldown_epochs)
        if min_lr_ratio is not None:
            _check_number("min_lr_ratio", min_lr_ratio)
        if warmup_starting_lr_ratio is not None:
            _check_number("warmup_starting_lr_ratio", warmup_starting_lr_ratio)
        if num_warmup_epochs + num_cooldown_epochs > total_num_epochs:
            raise ValueError(
                f"num_warmup_epochs={num_warmup_epochs} plus num_cooldown_epochs={num_cooldown_epochs} "
                f"exceed total_num_epochs={total_num_epochs}; their sum must be at most total_num_epochs"
            )
        self.total_iterations = total_num_epochs * num_update_steps_per_epoch
        self.lr_min = lr_min
        self.lr_min_ratio = min_lr_ratio
        self.warmup_iterations = num_warmup_epochs * num_update_steps_per_epoch
        self.warmup_lr_init = warmup_starting_lr
        self.warmup_lr_ratio = warmup_starting_lr_ratio
        self.k_decay = k_decay
        self.num_cooldown_iterations = num_cooldown_epochs * num_update_steps_per_epoch
        self._update_param_groups(self.get_updated_values(0))

    def _min_value(self, base: float) -> float:
        return self.lr_min_ratio * base if self.lr_min_ratio is not None else self.lr_min

    def _warmup_start(self, base: float) -> float:
        return self.warmup_lr_ratio * base if self.warmup_lr_ratio is not None else self.warmup_lr_init

    def _value(self, num_updates: int, base: float) -> float:
        if num_updates < self.warmup_iterations:
            start = self._warmup_start(base)
            return start + (base - start) * num_updates / self.warmup_iterations
        minimum = self._min_value(base)
        cosine_end = self.total_iterations - self.num_cooldown_iterations
        if num_updates >= cosine_end:
            return minimum
        progress = (num_updates - self.warmup_iterations) / (cosine_end - self.warmup_iterations)
        return minimum + (base - minimum) * (1 + math.cos(math.pi * progress**self.k_decay)) / 2

    def get_updated_values(self, num_updates: int) -> list[float]:
        """One learning rate per group for update ``num_updates``, by the formula in the class
        docstring (warmup, then cosine, then the minimum)."""
        return [self._value(num_updates, base) for base in self.base_lr_values]

    @classmethod
    def create_scheduler_fn(
        cls,
        total_num_epochs: int | TrainerPlaceholderValues = TrainerPlaceholderValues.NUM_EPOCHS,
        num_update_steps_per_epoch: int | TrainerPlaceholderValues = (
            TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH
        ),
        k_decay: float = 1.0,
        lr_min: float = 1e-6,
        min_lr_ratio: float | None = None,
        num_warmup_epochs: int = 0,
        warmup_starting_lr: float = 1e-6,
        warmup_starting_lr_ratio: float | None = None,
        num_cooldown_epochs: int = 0,
    ) -> partial[CosineLrScheduler]:
        """A ``functools.partial`` that takes an optimizer and builds this scheduler, for
        ``Trainer.train(create_scheduler_fn=...)``.

        The run length defaults to the placeholders ``NUM_EPOCHS`` and
        ``NUM_UPDATE_STEPS_PER_EPOCH``, which the Trainer replaces with the run's values when it
        creates the scheduler; the other arguments are those of the constructor::

            trainer.train(..., create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1))
        """
        # The placeholders are replaced with numbers by the Trainer before the partial is called.
        return partial(
            cls,
            total_num_epochs=total_num_epochs,  # type: ignore[arg-type]
            num_update_steps_per_epoch=num_update_steps_per_epoch,  # type: ignore[arg-type]
            k_decay=k_decay,
            lr_min=lr_min,
            min_lr_ratio=min_lr_ratio,
            num_warmup_epochs=num_warmup_epochs,
            warmup_starting_lr=warmup_starting_lr,
            warmup_starting_lr_ratio=warmup_starting_lr_ratio,
            num_cooldown_epochs=num_cooldown_epochs,
        )

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings and the update count (upstream's keys)."""
        return {
            "total_iterations": self.total_iterations,
            "lr_min_ratio": self.lr_min_ratio,
            "lr_min": self.lr_min,
            "warmup_iterations": self.warmup_iterations,
            "warmup_lr_init": self.warmup_lr_init,
            "warmup_lr_ratio": self.warmup_lr_ratio,
            "k_decay": self.k_decay,
            "num_cooldown_iterations": self.num_cooldown_iterations,
            "num_updates": self._num_updates,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the next :meth:`step` continues the schedule."""
        self.total_iterations = state_dict["total_iterations"]
        self.lr_min_ratio = state_dict["lr_min_ratio"]
        self.lr_min = state_dict["lr_min"]
        self.warmup_iterations = state_dict["warmup_iterations"]
        self.warmup_lr_init = state_dict["warmup_lr_init"]
        self.warmup_lr_ratio = state_dict["warmup_lr_ratio"]
        self.k_decay = state_dict["k_decay"]
        self.num_cooldown_iterations = state_dict["num_cooldown_iterations"]
        self._num_updates = state_dict["num_updates"]


def estimate_checkpoint_steps(total_steps: int, num_checkpoints: int = 3) -> list[int]:
    """Checkpoint steps spaced geometrically, each twice the previous, the last at ``total_steps``
    (the paper's 50B -> 100B -> 200B pattern)::

        checkpoint[i] = total_steps // 2 ** (num_checkpoints - 1 - i),   i = 0 .. num_checkpoints - 1

    e.g. ``(100_000, 2) -> [50_000, 100_000]`` and ``(200_000, 4) -> [25_000, 50_000, 100_000, 200_000]``.

    :raises ValueError: when an argument is not a positive integer, or ``total_steps`` is too
        small for distinct checkpoints (it must be at least ``2 ** (num_checkpoints - 1)``).
    """
    for name, value in (("total_steps", total_steps), ("num_checkpoints", num_checkpoints)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} is not accepted; expected a positive integer")
    if total_steps < 2 ** (num_checkpoints - 1):
        raise ValueError(
            f"total_steps={total_steps} is too small for num_checkpoints={num_checkpoints}; "
            f"geometric spacing needs total_steps >= {2 ** (num_checkpoints - 1)}"
        )
    return [total_steps // 2 ** (num_checkpoints - 1 - i) for i in range(num_checkpoints)]


class WSDLrScheduler(StatefulSchedulerBase):
    """Warmup-stable-decay learning rates with decay checkpoints, after "Understanding
    Warmup-Stable-Decay Learning Rates: A River Valley Loss Landscape Perspective"
    (arXiv 2410.05192).

    Training of ``total_steps`` updates is cut into periods ending at the checkpoint steps from
    :func:`estimate_checkpoint_steps` (one checkpoint: the end of training). A period from
    ``start`` to ``end`` has ``d = int((end - start) * decay_phase_ratio)`` decay updates beginning
    at ``pre_decay_step = end - d``. Per parameter group, with ``r = lr_min`` (a fraction of ``b``)
    and ``W = num_warmup_steps``::

        n < W (not in continuation):  lr = s + (b - s) * n / W,  s = warmup_starting_lr
        stable, n < pre_decay_step:   lr = b
        decay:                        t = (n - pre_decay_step) / d   (0 at the decay's first update)
            inverse-sqrt (default):   lr = b * (r + (1 - r) * (1 - sqrt(t)))
            paper's shape:            lr = b / (t * (1 / r - 1) + 1)
        n >= total_steps:             lr = b * r

    After each intermediate checkpoint the next period starts again at ``b``: each checkpoint is
    a decayed model, and training continues from the stable branch. Construction sets the groups
    to the update-0 values. The warmup takes precedence: a warmup that runs into a decay phase,
    or lasts the whole run (``num_warmup_steps >= total_steps``), is accepted as
    pytorch-accelerated accepted it, and the rates follow the warmup line until it ends.

    Continuation (``is_continuation_from_checkpoint=True``) starts a new segment of
    ``total_steps`` updates from a saved state, typically the pre-decay state saved by
    ``WSDCheckpointCallback``: no warmup, stable at the saved peak rates, decays placed for the
    new ``total_steps``. See :meth:`load_state_dict`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        num_epochs: int | None = None,
        num_update_steps_per_epoch: int | None = None,
        total_steps: int | None = None,
        num_warmup_steps: int | None = 0,
        decay_phase_ratio: float = 0.1,
        lr_min: float = 1e-6,
        warmup_starting_lr: float = 1e-6,
        use_inverse_sqrt_decay: bool = True,
        num_checkpoints: int = 1,
        is_continuation_from_checkpoint: bool = False,
    ) -> None:
        """
        :param optimizer: the optimizer; each group's ``lr`` is its peak rate ``b``.
        :param num_epochs: with ``num_update_steps_per_epoch``, gives ``total_steps = num_epochs *
            num_update_steps_per_epoch``; pass these two or ``total_steps``, not both.
        :param num_update_steps_per_epoch: optimizer updates per epoch on each process.
        :param total_steps: optimizer updates in the run (per process).
        :param num_warmup_steps: updates of linear warmup; 0 (the default) for none; None for 1%
            of ``total_steps`` (``int(0.01 * total_steps)``). It may be as long as the run.
        :param decay_phase_ratio: the fraction of each period spent decaying, in [0, 1]; at most
            1/3 with more than one checkpoint.
        :param lr_min: the rate at the end of each decay as a fraction ``r`` of ``b``, in [0, 1];
            must be above 0 for the paper's shape.
        :param warmup_starting_lr: the warmup's starting rate, between 0 and the largest ``b``.
        :param use_inverse_sqrt_decay: True for the inverse-sqrt decay, False for the paper's shape.
        :param num_checkpoints: how many decayed checkpoints, geometrically spaced.
        :param is_continuation_from_checkpoint: start a new segment from a loaded state (no warmup).
        :raises ValueError: naming the argument, its value and what is accepted.
        """
        super().__init__(optimizer)
        if total_steps is not None and (num_epochs is not None or num_update_steps_per_epoch is not None):
            raise ValueError(
                f"total_steps={total_steps!r} was given with num_epochs={num_epochs!r} and "
                f"num_update_steps_per_epoch={num_update_steps_per_epoch!r}; give total_steps, "
                "or num_epochs and num_update_steps_per_epoch"
            )
        if total_steps is None:
            if num_epochs is None or num_update_steps_per_epoch is None:
                raise ValueError(
                    f"num_epochs={num_epochs!r}, num_update_steps_per_epoch={num_update_steps_per_epoch!r} "
                    "and total_steps=None do not size the schedule; give total_steps, "
                    "or both num_epochs and num_update_steps_per_epoch"
                )
            total_steps = num_epochs * num_update_steps_per_epoch
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
            raise ValueError(f"total_steps={total_steps!r} is not accepted; expected a positive integer")
        if num_warmup_steps is None:
            num_warmup_steps = int(0.01 * total_steps)
        if not isinstance(num_warmup_steps, Real) or isinstance(num_warmup_steps, bool) or num_warmup_steps < 0:
            raise ValueError(f"num_warmup_steps={num_warmup_steps!r} is not accepted; expected None or an integer >= 0")
        num_warmup_steps = int(num_warmup_steps)
        if not (isinstance(decay_phase_ratio, Real) and 0 <= decay_phase_ratio <= 1):
            raise ValueError(f"decay_phase_ratio={decay_phase_ratio!r} is not accepted; expected a number in [0, 1]")
        if num_checkpoints != 1 and isinstance(decay_phase_ratio, Real) and decay_phase_ratio > 1 / 3:
            raise ValueError(
                f"decay_phase_ratio={decay_phase_ratio!r} is not accepted with num_checkpoints={num_checkpoints!r}; "
                "with several checkpoints the decay phases would overlap, so it must be at most 1/3"
            )
        if not (isinstance(lr_min, Real) and 0 <= lr_min <= 1):
            raise ValueError(f"lr_min={lr_min!r} is not accepted; expected a fraction of the base rate in [0, 1]")
        if not use_inverse_sqrt_decay and lr_min == 0:
            raise ValueError(
                f"lr_min={lr_min!r} is not accepted with use_inverse_sqrt_decay=False; the paper's decay shape "
                "divides by lr_min, so give a fraction in (0, 1]"
            )
        if not (isinstance(warmup_starting_lr, Real) and 0 <= warmup_starting_lr <= max(self.base_lr_values)):
            raise ValueError(
                f"warmup_starting_lr={warmup_starting_lr!r} is not accepted; expected a number between 0 and "
                f"the largest base learning rate, {max(self.base_lr_values)!r}"
            )
        self.total_steps: int = total_steps
        self.num_warmup_steps: int = num_warmup_steps
        self.decay_phase_ratio: float = decay_phase_ratio
        self.lr_min: float = lr_min
        self.warmup_starting_lr: float = warmup_starting_lr
        self.use_inverse_sqrt_decay: bool = use_inverse_sqrt_decay
        self.num_checkpoints: int = num_checkpoints
        self.is_continuation_from_checkpoint: bool = is_continuation_from_checkpoint
        #: The update index (as counted by :meth:`step`, or given to :meth:`step_update`) of the
        #: last stable update before the most recent decay phase the schedule has reached, i.e.
        #: ``pre_decay_step - 1`` of that period; None before the first. pytorch-accelerated's
        #: name, kept for code that reads it.
        self.previous_checkpoint_step: int | None = None
        self._set_checkpoints()
        self._update_param_groups(self.get_updated_values(0))

    def _set_checkpoints(self) -> None:
        self.checkpoint_steps = estimate_checkpoint_steps(self.total_steps, self.num_checkpoints)
        self.checkpoint_decay_info = _decay_periods(self.checkpoint_steps, self.decay_phase_ratio)

    def get_checkpoint_steps(self) -> list[int]:
        """The update counts at which each decay ends (a decayed checkpoint); the last is ``total_steps``."""
        return list(self.checkpoint_steps)

    def get_decay_info(self) -> list[dict[str, int]]:
        """One dict per period: ``period_start``, ``period_end`` (its checkpoint), ``decay_steps``
        (``int((period_end - period_start) * decay_phase_ratio)``) and ``pre_decay_step``
        (``period_end - decay_steps``, the first update of the decay, still at the peak rate)."""
        return [dict(info) for info in self.checkpoint_decay_info]

    def get_phase_info(self, num_updates: int) -> dict[str, int]:
        """The :meth:`get_decay_info` entry of the period holding ``num_updates``: the first whose
        ``period_end >= num_updates`` (a count equal to a checkpoint belongs to the period it ends);
        the last period beyond the end."""
        for info in self.checkpoint_decay_info:
            if info["period_end"] >= num_updates:
                return dict(info)
        return dict(self.checkpoint_decay_info[-1])

    def get_current_step(self) -> int:
        """The update index of the last :meth:`step` (-1 before the first); the number of
        updates done is this plus one."""
        return self._num_updates

    def get_current_phase_info(self) -> dict[str, int]:
        """:meth:`get_phase_info` for :meth:`get_current_step`."""
        return self.get_phase_info(self._num_updates)

    def step_update(self, num_updates: int) -> None:
        """Apply the rates of update ``num_updates`` and keep :attr:`previous_checkpoint_step` current."""
        super().step_update(num_updates)
        reached = [info["pre_decay_step"] - 1 for info in self.checkpoint_decay_info]
        reached = [step for step in reached if 0 <= step <= num_updates]
        if reached:
            self.previous_checkpoint_step = reached[-1]

    def _value(self, num_updates: int, base: float) -> float:
        if not self.is_continuation_from_checkpoint and num_updates < self.num_warmup_steps:
            start = self.warmup_starting_lr
            return start + (base - start) * num_updates / self.num_warmup_steps
        if num_updates >= self.total_steps:
            return base * self.lr_min
        info = next(info for info in self.checkpoint_decay_info if num_updates < info["period_end"])
        if num_updates < info["pre_decay_step"]:
            return base
        t = (num_updates - info["pre_decay_step"]) / info["decay_steps"]
        if self.use_inverse_sqrt_decay:
            return base * (self.lr_min + (1 - self.lr_min) * (1 - math.sqrt(t)))
        return base / (t * (1 / self.lr_min - 1) + 1)

    def get_updated_values(self, num_updates: int) -> list[float]:
        """One learning rate per group for update ``num_updates``, by the formulas in the class
        docstring (warmup, stable, decay before each checkpoint, minimum after the end)."""
        return [self._value(num_updates, base) for base in self.base_lr_values]

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings, the peak rates (``base_lr_values``) and the update count."""
        return {
            "total_steps": self.total_steps,
            "num_warmup_steps": self.num_warmup_steps,
            "decay_phase_ratio": self.decay_phase_ratio,
            "lr_min": self.lr_min,
            "warmup_starting_lr": self.warmup_starting_lr,
            "use_inverse_sqrt_decay": self.use_inverse_sqrt_decay,
            "num_checkpoints": self.num_checkpoints,
            "is_continuation_from_checkpoint": self.is_continuation_from_checkpoint,
            "base_lr_values": list(self.base_lr_values),
            "num_updates": self._num_updates,
            "previous_checkpoint_step": self.previous_checkpoint_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a saved state, or start a continuation segment from it.

        Without continuation, everything is restored and the next :meth:`step` continues the
        saved schedule. With ``is_continuation_from_checkpoint=True``, a state saved by a run
        that was not itself a continuation, or saved when its update count was a pre-decay step
        or a checkpoint (what ``WSDCheckpointCallback`` saves), starts a new segment: this
        scheduler keeps its own ``total_steps``, checkpoints and decay settings, takes the peak
        rates from the state, and counts from update 0 again with no warmup. Any other state from a
        continuation run (an interrupted segment) is restored exactly.

        States saved by pytorch-accelerated 0.1.61 load too. They hold no update count (upstream
        left it out of its state dict), so, as upstream did, a continuation starts a new segment
        from them, and otherwise the settings are restored and this scheduler keeps its own count
        (with a warning, since the schedule then restarts from that count).
        """
        from_upstream = "num_updates" not in state_dict
        starts_segment = self.is_continuation_from_checkpoint and (
            from_upstream or not state_dict["is_continuation_from_checkpoint"] or _is_segment_boundary(state_dict)
        )
        if starts_segment:
            self.base_lr_values = list(state_dict["base_lr_values"])
            self._num_updates = -1
            self.previous_checkpoint_step = None
            self._update_param_groups(self.get_updated_values(0))
            return
        for key in (
            "total_steps",
            "num_warmup_steps",
            "decay_phase_ratio",
            "lr_min",
            "warmup_starting_lr",
            "use_inverse_sqrt_decay",
            "num_checkpoints",
            "is_continuation_from_checkpoint",
        ):
            setattr(self, key, state_dict[key])
        self.base_lr_values = list(state_dict["base_lr_values"])
        self.previous_checkpoint_step = state_dict.get("previous_checkpoint_step")
        self._set_checkpoints()
        if from_upstream:
            warnings.warn(
                "This WSDLrScheduler state was saved by pytorch-accelerated, which did not save the update count; "
                f"the schedule continues from this scheduler's own count ({self._num_updates + 1} updates done), as "
                "it did there. To continue a run, resume from a state saved by pa (Trainer.save_training_state).",
                UserWarning,
                stacklevel=2,
            )
        else:
            self._num_updates = state_dict["num_updates"]

    @classmethod
    def create_scheduler_fn(
        cls,
        total_num_epochs: int | TrainerPlaceholderValues = TrainerPlaceholderValues.NUM_EPOCHS,
        num_update_steps_per_epoch: int | TrainerPlaceholderValues = (
            TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH
        ),
        num_warmup_epochs: float | None = None,
        decay_phase_ratio: float = 0.1,
        lr_min: float = 1e-6,
        warmup_starting_lr: float = 1e-6,
        use_inverse_sqrt_decay: bool = True,
        num_checkpoints: int = 1,
        is_continuation_from_checkpoint: bool = False,
    ) -> partial[WSDLrScheduler]:
        """A ``functools.partial`` that takes an optimizer and builds this scheduler, for
        ``Trainer.train(create_scheduler_fn=...)``.

        The run length defaults to the placeholders ``NUM_EPOCHS`` and
        ``NUM_UPDATE_STEPS_PER_EPOCH`` (updates per process), replaced by the Trainer.
        ``num_warmup_epochs`` becomes ``num_warmup_steps = num_update_steps_per_epoch *
        num_warmup_epochs``; None (the default) gives the constructor's ``num_warmup_steps=None``,
        i.e. 1% of the total steps. The other arguments are those of the constructor.
        """
        num_warmup_steps = None
        if num_warmup_epochs is not None:
            num_warmup_steps = num_update_steps_per_epoch * num_warmup_epochs
        # The placeholders are replaced with numbers by the Trainer before the partial is called.
        return partial(
            cls,
            num_epochs=total_num_epochs,  # type: ignore[arg-type]
            num_update_steps_per_epoch=num_update_steps_per_epoch,  # type: ignore[arg-type]
            num_warmup_steps=num_warmup_steps,  # type: ignore[arg-type]
            decay_phase_ratio=decay_phase_ratio,
            lr_min=lr_min,
            warmup_starting_lr=warmup_starting_lr,
            use_inverse_sqrt_decay=use_inverse_sqrt_decay,
            num_checkpoints=num_checkpoints,
            is_continuation_from_checkpoint=is_continuation_from_checkpoint,
        )


def _decay_periods(checkpoint_steps: list[int], decay_phase_ratio: float) -> list[dict[str, int]]:
    periods, period_start = [], 0
    for period_end in checkpoint_steps:
        decay_steps = int((period_end - period_start) * decay_phase_ratio)
        periods.append(
            {
                "period_start": period_start,
                "period_end": period_end,
                "decay_steps": decay_steps,
                "pre_decay_step": period_end - decay_steps,
            }
        )
        period_start = period_end
    return periods


def _is_segment_boundary(state: dict[str, Any]) -> bool:
    """Whether a saved WSD state stopped with a pre-decay step or a checkpoint of updates done."""
    checkpoints = estimate_checkpoint_steps(state["total_steps"], state["num_checkpoints"])
    pre_decay = {info["pre_decay_step"] for info in _decay_periods(checkpoints, state["decay_phase_ratio"])}
    return state["num_updates"] + 1 in pre_decay | set(checkpoints)
