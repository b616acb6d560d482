"""Reporting the run history: one readable line per epoch on the console, and a JSON-lines
metrics file that ``pa plot`` turns into curves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pa_callbacks._common import (
    MetricSnapshot,
    as_number,
    check_positive_int,
    format_duration,
    format_value,
    is_world_main_process,
    updates_done,
)
from pa_core import TrainerCallback

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["LogMetricsCallback", "MetricsFileCallback"]


class LogMetricsCallback(TrainerCallback):
    """Logs the metrics of the run history: by default one line per epoch on the console, with
    every metric recorded during the epoch and the time taken::

        epoch 2/5 | train_loss_epoch: 0.41213 | eval_loss_epoch: 0.39871 | 1.2s (total 2.5s)

    Intermediate evaluations (see :class:`~pa_callbacks.StepBasedEvaluationCallback`) and
    ``evaluate()`` runs get a line of their own. Printing happens on the main process of each
    machine.

    Subclass it and override :meth:`log_metrics` to send the metrics elsewhere: it is called
    once per epoch, after the epoch's training and evaluation (so metrics written by any callback
    during the epoch are included), once per intermediate evaluation and once per ``evaluate()``.
    """

    def __init__(self) -> None:
        self._snapshot = MetricSnapshot()
        self._training = False
        self._epoch_pending = False
        self._run_start = self._epoch_start = 0.0
        self._line_label = ""
        self._line_time = ""

    # -- the override point ---------------------------------------------------------------

    def log_metrics(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """Log ``metrics`` (metric name -> latest value); by default print one line."""
        trainer.print(self.format_line(metrics))

    def format_line(self, metrics: dict[str, Any]) -> str:
        """The console line for ``metrics``: what is being logged, each metric, the time taken."""
        parts = [self._line_label, *(f"{name}: {format_value(value)}" for name, value in metrics.items())]
        if self._line_time:
            parts.append(self._line_time)
        return " | ".join(part for part in parts if part)

    def _log(self, trainer: Trainer, label: str, metrics: dict[str, Any], time_taken: str = "") -> None:
        if metrics:
            self._line_label, self._line_time = label, time_taken
            self.log_metrics(trainer, metrics)

    # -- training -------------------------------------------------------------------------

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._training = True
        self._run_start = time.perf_counter()
        self._snapshot.take(trainer.run_history)

    def on_train_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_pending = True

    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        updated = self._snapshot.updated(trainer.run_history)
        if is_intermediate:
            metrics = {name: value for name, value in updated.items() if "train" not in name}
            self._log(trainer, f"epoch {trainer.run_history.current_epoch}, intermediate evaluation", metrics)
        elif not self._training:
            self._log(trainer, "evaluation", updated, format_duration(time.perf_counter() - self._run_start))
            self._snapshot.take(trainer.run_history)

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._log_epoch(trainer)

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if self._epoch_pending:  # the epoch was cut short, e.g. by a StopTrainingError
            self._log_epoch(trainer)
        self._training = False

    def _log_epoch(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        epoch, last_epoch = trainer.run_history.current_epoch, trainer.last_epoch
        took = f"{format_duration(now - self._epoch_start)} (total {format_duration(now - self._run_start)})"
        self._log(trainer, f"epoch {epoch}/{last_epoch}", self._snapshot.updated(trainer.run_history), took)
        self._snapshot.take(trainer.run_history)
        self._epoch_pending = False

    # -- evaluate() -----------------------------------------------------------------------

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._training = False
        self._run_start = time.perf_counter()
        self._snapshot.take(trainer.run_history)


class MetricsFileCallback(TrainerCallback):
    """Appends the run's metrics to a JSON-lines file, one JSON object per line, written by the
    main process of the whole run only.

    Each line has ``kind``, ``epoch``, ``step`` (optimizer updates so far in the run) and
    ``elapsed`` (seconds since the run started, continued across a resume), plus metrics:

    - ``"kind": "epoch"``: every metric recorded during the epoch (``train_loss_epoch``,
      ``eval_loss_epoch``, and any recorded by other callbacks);
    - ``"kind": "step"``: ``train_loss``, the mean training loss over the last
      ``log_train_loss_every_n_steps`` optimizer updates, averaged over all processes;
    - ``"kind": "intermediate_eval"``: the metrics of an intermediate evaluation;
    - ``"kind": "evaluation"``: the metrics of an ``evaluate()`` run.

    Plot the file with ``pa plot METRICS_FILE -o curves.png`` (``pip install "pa-callbacks[plot]"``).
    The file is appended to, so a resumed run continues it; use a new path for a new run.

    :param path: the file to append to (its folder is created).
    :param log_train_loss_every_n_steps: also write the training loss every this many optimizer
        updates (one host read each time); None (the default) writes epoch lines only.
    """

    def __init__(
        self, path: str | os.PathLike[str] = "metrics.jsonl", log_train_loss_every_n_steps: int | None = None
    ) -> None:
        check_positive_int(
            type(self).__name__, "log_train_loss_every_n_steps", log_train_loss_every_n_steps, allow_none=True
        )
        self.path = Path(path)
        self.log_train_loss_every_n_steps = log_train_loss_every_n_steps
        self._snapshot = MetricSnapshot()
        self._training = False
        self._epoch_pending = False
        self._restored = False
        self._elapsed_before = 0.0
        self._run_start = 0.0
        self._loss_mark: tuple[Any, int] = (0, 0)

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The elapsed time, so that a resumed run continues it."""
        return {"elapsed": self._elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called before ``on_training_run_start`` when resuming)."""
        self._elapsed_before = float(state["elapsed"])
        self._restored = True

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._run_start if self._run_start else 0.0)

    # -- writing --------------------------------------------------------------------------

    def _write(self, trainer: Trainer, kind: str, metrics: dict[str, Any]) -> None:
        if not metrics or not is_world_main_process(trainer):
            return
        record = {
            "kind": kind,
            "epoch": trainer.run_history.current_epoch,
            "step": updates_done(trainer),
            "elapsed": round(self._elapsed(), 3),
            **{name: _jsonable(value) for name, value in metrics.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _write_train_loss(self, trainer: Trainer) -> None:
        tracker = trainer.loss_tracker
        total_before, count_before = self._loss_mark
        stats = torch.stack(
            [
                torch.as_tensor(tracker.total_loss - total_before, dtype=torch.float32, device=trainer.device),
                torch.tensor(float(tracker.running_count - count_before), device=trainer.device),
            ]
        )
        if trainer.run_config.num_processes > 1:
            stats = trainer.gather(stats.reshape(1, 2)).sum(dim=0)
        total, count = stats.tolist()
        self._loss_mark = (tracker.total_loss, tracker.running_count)
        if count:
            self._write(trainer, "step", {"train_loss": total / count})

    # -- training -------------------------------------------------------------------------

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        if not self._restored:
            self._elapsed_before = 0.0
        self._restored = False
        self._training = True
        self._run_start = time.perf_counter()
        self._snapshot.take(trainer.run_history)

    def on_train_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        # After the tracker was reset (or restored, when resuming in the middle of an epoch).
        self._loss_mark = (trainer.loss_tracker.total_loss, trainer.loss_tracker.running_count)
        self._epoch_pending = True

    def on_train_update_end(self, trainer: Trainer, num_updates: int = 0, **kwargs: Any) -> None:
        every = self.log_train_loss_every_n_steps
        if every is not None and num_updates % every == 0:
            self._write_train_loss(trainer)

    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        updated = self._snapshot.updated(trainer.run_history)
        if is_intermediate:
            self._write(trainer, "intermediate_eval", {k: v for k, v in updated.items() if "train" not in k})
        elif not self._training:
            self._write(trainer, "evaluation", updated)
            self._snapshot.take(trainer.run_history)

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._write_epoch(trainer)

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if self._epoch_pending:  # the epoch was cut short, e.g. by a StopTrainingError
            self._write_epoch(trainer)
        self._training = False

    def _write_epoch(self, trainer: Trainer) -> None:
        self._write(trainer, "epoch", self._snapshot.updated(trainer.run_history))
        self._snapshot.take(trainer.run_history)
        self._epoch_pending = False

    # -- evaluate() -----------------------------------------------------------------------

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._training = False
        self._snapshot.take(trainer.run_history)


def _jsonable(value: Any) -> Any:
    value = as_number(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
