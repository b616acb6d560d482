"""Run history (metrics per epoch) and the running loss tracker."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Any

import torch

__all__ = ["InMemoryRunHistory", "LossTracker", "RunHistory"]


class RunHistory(ABC):
    """The metrics recorded during a run, one value per update, and the current epoch.

    Subclass it to store metrics elsewhere; the Trainer only uses the methods below.
    """

    @abstractmethod
    def get_metric_names(self) -> set[str]:
        """The names of every recorded metric."""

    @abstractmethod
    def get_metric_values(self, metric_name: str) -> list[Any]:
        """Every value recorded for ``metric_name``, oldest first (empty if none)."""

    @abstractmethod
    def get_latest_metric(self, metric_name: str) -> Any:
        """The last value recorded for ``metric_name``; ``ValueError`` if there is none."""

    @abstractmethod
    def update_metric(self, metric_name: str, metric_value: Any) -> None:
        """Record a value for ``metric_name`` (with the current prefix prepended)."""

    @abstractmethod
    def delete_metric(self, metric_name: str) -> None:
        """Forget every value of ``metric_name``."""

    @abstractmethod
    def set_metric_name_prefix(self, prefix: str = "") -> None:
        """Prepend ``prefix`` to the names of metrics recorded from now on."""

    @property
    @abstractmethod
    def metric_name_prefix(self) -> str:
        """The prefix added to recorded metric names."""

    @property
    @abstractmethod
    def current_epoch(self) -> int:
        """The epoch being run, starting at 1; N + 1 after N completed epochs."""

    @abstractmethod
    def _increment_epoch(self) -> None:
        """Advance ``current_epoch`` by one (called by the Trainer at each epoch end)."""

    @abstractmethod
    def reset(self) -> None:
        """Clear every metric and go back to epoch 1; the prefix is kept."""

    def state_dict(self) -> dict[str, Any]:
        """The history as plain data, saved with the training state."""
        return {
            "current_epoch": self.current_epoch,
            "metrics": {name: list(self.get_metric_values(name)) for name in self.get_metric_names()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the history with one saved by :meth:`state_dict`."""
        prefix = self.metric_name_prefix
        self.reset()
        self.set_metric_name_prefix("")
        for name, values in state["metrics"].items():
            for value in values:
                self.update_metric(name, value)
        self.set_metric_name_prefix(prefix)
        while self.current_epoch < state["current_epoch"]:
            self._increment_epoch()


class InMemoryRunHistory(RunHistory):
    """A :class:`RunHistory` kept in a dict in memory."""

    def __init__(self) -> None:
        self._current_epoch = 1
        self._metrics: defaultdict[str, list[Any]] = defaultdict(list)
        self._prefix = ""

    def get_metric_names(self) -> set[str]:
        return set(self._metrics)

    def get_metric_values(self, metric_name: str) -> list[Any]:
        return self._metrics.get(metric_name, [])

    def get_latest_metric(self, metric_name: str) -> Any:
        values = self._metrics.get(metric_name)
        if not values:
            raise ValueError(
                f"No values have been recorded for metric {metric_name!r}. "
                f"Recorded metrics: {sorted(self._metrics) or 'none'}."
            )
        return values[-1]

    def update_metric(self, metric_name: str, metric_value: Any) -> None:
        self._metrics[f"{self._prefix}{metric_name}"].append(metric_value)

    def delete_metric(self, metric_name: str) -> None:
        self._metrics.pop(metric_name, None)

    def set_metric_name_prefix(self, prefix: str = "") -> None:
        self._prefix = prefix

    @property
    def metric_name_prefix(self) -> str:
        return self._prefix

    @property
    def current_epoch(self) -> int:
        return self._current_epoch

    def _increment_epoch(self) -> None:
        self._current_epoch += 1

    def reset(self) -> None:
        self._current_epoch = 1
        self._metrics = defaultdict(list)


class LossTracker:
    """Running, sample-weighted average of a loss.

    Values may be tensors: they are accumulated on their device, so updating the tracker
    never forces the host to wait for the device. Read :attr:`average` (and convert it with
    ``float()``) only when the value is needed, for example once per epoch.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every value."""
        self.loss_value: Any = 0
        self.total_loss: Any = 0
        self.running_count = 0

    def update(self, loss_value: Any, batch_size: int = 1) -> None:
        """Add one batch's mean loss, weighted by the batch's number of samples."""
        if isinstance(loss_value, torch.Tensor):
            loss_value = loss_value.detach()
        self.loss_value = loss_value
        self.total_loss = self.total_loss + loss_value * batch_size
        self.running_count += batch_size

    @property
    def average(self) -> Any:
        """Sample-weighted mean of the values so far (0 before any update)."""
        return self.total_loss / self.running_count if self.running_count else 0


def sum_over_processes(accelerator: Any, total: Any, count: int) -> tuple[float, int]:
    """A loss sum and its number of samples, each added up over every process (collective when
    there are several; one host read)."""
    if accelerator.num_processes == 1:
        return float(total), int(count)
    device = accelerator.device
    stats = torch.stack(
        [torch.as_tensor(total, dtype=torch.float32).to(device).reshape(()), torch.tensor(float(count), device=device)]
    )
    summed_total, summed_count = accelerator.reduce(stats, reduction="sum").tolist()
    return summed_total, int(summed_count)


def epoch_loss(tracker: LossTracker, accelerator: Any) -> tuple[float | None, int]:
    """The sample-weighted mean of ``tracker`` over every process (None without samples) and
    the number of samples."""
    total, count = sum_over_processes(accelerator, tracker.total_loss, tracker.running_count)
    return (total / count if count else None), count
