"""Stopping training when a watched metric stops improving."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pa_callbacks._common import as_number, check_positive_int, format_value, is_improvement, latest_watched_metric
from pa_core import StopTrainingError, TrainerCallback

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["EarlyStoppingCallback"]


class EarlyStoppingCallback(TrainerCallback):
    """Stops training when ``watch_metric`` has not improved by more than
    ``early_stopping_threshold`` for ``early_stopping_patience`` epochs in a row.

    It compares at the end of each epoch and stops with a :class:`~pa_core.StopTrainingError`,
    so the run ends cleanly: ``training_run_end`` and ``on_training_run_end`` still run. The best
    value and the patience counter are part of the training state, so a run resumed with
    ``train(resume_from=...)`` stops at the same epoch as one that was never interrupted.

    :param early_stopping_patience: how many epochs without improvement to allow.
    :param early_stopping_threshold: the smallest absolute change that counts as an improvement.
    :param watch_metric: the run-history metric to compare.
    :param greater_is_better: True when a larger value is better (accuracy), False for losses.
    :param reset_on_train: forget the best value and counter at the start of each ``train()``
        call (a resumed run keeps them); False carries them across calls.
    """

    def __init__(
        self,
        early_stopping_patience: int = 1,
        early_stopping_threshold: float = 0.01,
        watch_metric: str = "eval_loss_epoch",
        greater_is_better: bool = False,
        reset_on_train: bool = True,
    ) -> None:
        check_positive_int(type(self).__name__, "early_stopping_patience", early_stopping_patience)
        if (
            isinstance(early_stopping_threshold, bool)
            or not isinstance(early_stopping_threshold, (int, float))
            or not early_stopping_threshold >= 0
        ):
            raise ValueError(
                f"EarlyStoppingCallback(early_stopping_threshold={early_stopping_threshold!r}) is not accepted; "
                "it must be a number >= 0 (the smallest change that counts as an improvement)."
            )
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.watch_metric = watch_metric
        self.greater_is_better = greater_is_better
        self.reset_on_train = reset_on_train
        self.best_metric: Any = None
        self.early_stopping_patience_counter = 0
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        """The best value so far and the patience counter."""
        return {
            "best_metric": self.best_metric,
            "early_stopping_patience_counter": self.early_stopping_patience_counter,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next training run continues from it."""
        self.best_metric = state["best_metric"]
        self.early_stopping_patience_counter = state["early_stopping_patience_counter"]
        self._restored = True

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        if self.reset_on_train and not self._restored:
            self.best_metric, self.early_stopping_patience_counter = None, 0
        self._restored = False

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        current = as_number(latest_watched_metric(trainer, self.watch_metric, type(self).__name__))
        if self.best_metric is None or _is_nan(self.best_metric):
            self.best_metric = current
        else:
            change = abs(current - self.best_metric)
            if (
                is_improvement(current, self.best_metric, self.greater_is_better)
                and change > self.early_stopping_threshold
            ):
                trainer.print(
                    f"\nImprovement of {format_value(change)} in {self.watch_metric} observed, resetting counter."
                )
                self.best_metric = current
                self.early_stopping_patience_counter = 0
            else:
                trainer.print(
                    f"\nNo improvement in {self.watch_metric} above the threshold of {self.early_stopping_threshold} "
                    "observed, incrementing counter."
                )
                self.early_stopping_patience_counter += 1
            trainer.print(
                f"Early stopping counter: {self.early_stopping_patience_counter}/{self.early_stopping_patience}"
            )
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            raise StopTrainingError(
                f"Stopping training due to no improvement in {self.watch_metric} after "
                f"{self.early_stopping_patience} epochs"
            )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
