"""Running fewer batches: every epoch for a quick check of a script, or only the evaluations.

``LimitBatchesCallback`` lives in pa-core (``pa_core.utils``), because a Trainer created inside
``pa_core.utils.LimitBatches`` adds it itself; it is published here under its catalogue name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pa_callbacks._common import check_positive_int
from pa_core import TrainerCallback
from pa_core.utils import DataLoaderSlice, LimitBatchesCallback

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["LimitBatchesCallback", "LimitEvalStepsCallback"]


class LimitEvalStepsCallback(TrainerCallback):
    """Limits evaluation epochs to ``num_eval_steps`` batches in total across processes
    (``num_eval_steps // num_processes`` per process, at least 1): by default only intermediate
    evaluations (see :class:`~pa_callbacks.StepBasedEvaluationCallback`), so that frequent
    evaluations during an epoch stay cheap while each epoch's own evaluation sees every sample.

    List it before :class:`~pa_callbacks.ProgressBarCallback`, so the bar shows the limited length.

    :param num_eval_steps: the most evaluation batches, summed over processes.
    :param limit_intermediate_only: True limits intermediate evaluations only; False limits
        every evaluation, including each epoch's and ``evaluate()``'s.
    """

    def __init__(self, num_eval_steps: int = 100, limit_intermediate_only: bool = True) -> None:
        check_positive_int(type(self).__name__, "num_eval_steps", num_eval_steps)
        self.num_eval_steps = num_eval_steps
        self.limit_intermediate_only = limit_intermediate_only
        self._limiter: _AdjustableLimit | None = None

    def _install(self, trainer: Trainer) -> None:
        # The Trainer reads trainer.eval_dataloader before each evaluation and iterates it after
        # on_eval_epoch_start, so a wrapper whose limit is set in that event limits that evaluation.
        if trainer.eval_dataloader is not None and not isinstance(trainer.eval_dataloader, _AdjustableLimit):
            trainer.eval_dataloader = _AdjustableLimit(trainer.eval_dataloader)
        self._limiter = trainer.eval_dataloader

    def _uninstall(self, trainer: Trainer) -> None:
        if isinstance(trainer.eval_dataloader, _AdjustableLimit):
            trainer.eval_dataloader = trainer.eval_dataloader.dataloader
        self._limiter = None

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._install(trainer)

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._install(trainer)

    def on_eval_epoch_start(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        if self._limiter is None or not (is_intermediate or not self.limit_intermediate_only):
            return
        steps_per_process = max(self.num_eval_steps // trainer.num_processes, 1)
        self._limiter.limit = steps_per_process
        trainer.print(f"Limiting evaluation to {steps_per_process} steps per process")

    def on_eval_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if self._limiter is not None:
            self._limiter.limit = None

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._uninstall(trainer)

    def on_evaluation_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._uninstall(trainer)

    def on_exception(self, trainer: Trainer, **kwargs: Any) -> None:
        self._uninstall(trainer)


class _AdjustableLimit:
    """A data loader whose iteration stops after ``limit`` batches when ``limit`` is set."""

    def __init__(self, dataloader: Any) -> None:
        self.dataloader = dataloader
        self.limit: int | None = None

    def __iter__(self) -> Iterator[Any]:
        if self.limit is None:
            return iter(self.dataloader)
        return iter(DataLoaderSlice(self.dataloader, self.limit))

    def __len__(self) -> int:
        length = len(self.dataloader)
        return length if self.limit is None else min(length, self.limit)

    def __getattr__(self, name: str) -> Any:
        if name == "dataloader":  # not set yet, e.g. while unpickling
            raise AttributeError(name)
        return getattr(self.dataloader, name)
