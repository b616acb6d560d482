"""Small helpers shared by the callbacks: argument checks, process checks, metric comparison,
metric snapshots and number formatting."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from pa_core import RunHistory, Trainer


def check_positive_int(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive integer (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        accepted = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{owner}({name}={value!r}) is not accepted; {name} must be {accepted}.")


def is_local_main_process(trainer: Trainer) -> bool:
    """True on the main process of this machine (where ``trainer.print`` prints)."""
    return trainer.is_local_process_zero


def is_world_main_process(trainer: Trainer) -> bool:
    """True on the main process of the whole run."""
    return trainer.is_world_process_zero


def updates_done(trainer: Trainer) -> int:
    """Optimizer updates done so far in the current training run (restored on resume)."""
    return trainer.run_state.num_updates


def as_number(value: Any) -> Any:
    """A one-element tensor as a Python number (one host read); anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def is_improvement(current: Any, best: Any, greater_is_better: bool) -> bool:
    """Whether ``current`` beats ``best``; a NaN never beats anything and is beaten by any number."""
    current, best = as_number(current), as_number(best)
    if _is_nan(current):
        return False
    if best is None or _is_nan(best):
        return True
    return current > best if greater_is_better else current < best


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def format_value(value: Any) -> str:
    """A metric value for a log line: floats with 5 significant digits."""
    value = as_number(value)
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def format_duration(seconds: float) -> str:
    """``12.3s``, ``4m05s`` or ``1h02m03s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def metric_order(name: str) -> tuple[int, str]:
    """Sort key: train metrics first, then the others, alphabetically within each."""
    return (0 if "train" in name else 1, name)


class MetricSnapshot:
    """Remembers how many values each metric had, to find the metrics updated since then."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def take(self, run_history: RunHistory) -> None:
        """Remember the current number of values of every metric."""
        self._counts = {name: len(run_history.get_metric_values(name)) for name in run_history.get_metric_names()}

    def updated(self, run_history: RunHistory) -> dict[str, Any]:
        """The latest value of every metric that got a new value since :meth:`take`, train metrics first."""
        names = [
            name
            for name in run_history.get_metric_names()
            if len(run_history.get_metric_values(name)) > self._counts.get(name, 0)
        ]
        return {name: run_history.get_latest_metric(name) for name in sorted(names, key=metric_order)}


def latest_watched_metric(trainer: Trainer, watch_metric: str, owner: str) -> Any:
    """The latest value of ``watch_metric``, or a ``ValueError`` saying how to get one recorded."""
    values = trainer.run_history.get_metric_values(watch_metric)
    if not values:
        recorded = sorted(trainer.run_history.get_metric_names()) or "none"
        raise ValueError(
            f"{owner} watches {watch_metric!r}, but the run history has no value for it (recorded metrics: "
            f"{recorded}). eval_loss_epoch is recorded only when train() gets an eval_dataset; pass one, or set "
            "watch_metric to a metric that is recorded every epoch."
        )
    return values[-1]
