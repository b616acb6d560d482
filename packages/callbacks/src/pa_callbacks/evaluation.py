"""Evaluating in the middle of training epochs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pa_callbacks._common import check_positive_int
from pa_core import TrainerCallback

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["StepBasedEvaluationCallback"]


class StepBasedEvaluationCallback(TrainerCallback):
    """Runs an evaluation epoch after every ``eval_every_n_steps`` optimizer updates within each
    training epoch (batches, without gradient accumulation), as an intermediate evaluation.

    Counting restarts each epoch, and no intermediate evaluation runs after an epoch's last
    update, where the epoch's own evaluation follows. The evaluation fires the eval events with
    ``is_intermediate=True`` and records ``intermediate_eval_loss``, which loggers read in
    ``on_eval_epoch_end``; it is then removed from the run history, as in pytorch-accelerated, so
    the history holds epoch metrics only. The epoch's training loss is not affected, and the
    model is back in training mode afterwards. Combine it with
    :class:`~pa_callbacks.LimitEvalStepsCallback` to evaluate on part of the data.

    :param eval_every_n_steps: evaluate after every this many optimizer updates of an epoch.
    """

    def __init__(self, eval_every_n_steps: int = 500) -> None:
        check_positive_int(type(self).__name__, "eval_every_n_steps", eval_every_n_steps)
        self.eval_every_n_steps = eval_every_n_steps

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        if trainer.eval_dataloader is None:
            raise ValueError(
                "StepBasedEvaluationCallback evaluates during training, but train() got no eval_dataset; pass one "
                "or remove the callback."
            )

    def on_train_update_end(self, trainer: Trainer, step: int = 0, num_updates: int = 0, **kwargs: Any) -> None:
        config = trainer.run_config
        updates_this_epoch = math.ceil((step + 1) / config.gradient_accumulation_steps)
        if updates_this_epoch % self.eval_every_n_steps:
            return
        if step + 1 == trainer.run_state.epoch_length or num_updates == config.max_num_train_steps:
            return  # the epoch (or the run) ends here and is evaluated anyway
        trainer.print(f"\nRunning evaluation after {updates_this_epoch} training steps")
        trainer.run_eval_epoch(is_intermediate=True)
        trainer.run_history.delete_metric(trainer.run_history.metric_name_prefix + "intermediate_eval_loss")
        trainer.print("\nResuming training...")
