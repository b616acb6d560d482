"""Stopping a run whose loss became NaN or infinite, and ending it with an error.

Unlike pytorch-accelerated, the callback never calls ``sys.exit``: ``train()`` raises
:class:`NonFiniteLossError`, which a script turns into a non-zero exit status and a notebook or
test can catch. It also never reads the loss back from the device at every step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from pa_callbacks._common import check_positive_int
from pa_core import StopTrainingError, TrainerCallback, hookimpl

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["NonFiniteLossError", "TerminateOnNaNCallback"]


class NonFiniteLossError(RuntimeError):
    """Raised at the end of ``train()`` or ``evaluate()`` when :class:`TerminateOnNaNCallback`
    stopped the run because a loss was NaN or infinite."""


class TerminateOnNaNCallback(TrainerCallback):
    """Stops training when the training or evaluation loss is NaN or infinite, then makes
    ``train()`` (or ``evaluate()``) raise :class:`NonFiniteLossError`.

    The check reads losses the Trainer already brought to the host: ``train_loss_epoch`` at the
    end of each training epoch and the evaluation loss at the end of each evaluation epoch. With
    ``check_every_n_steps`` it also checks the running training loss every that many batches
    (one host read each time, agreed across processes), stopping before the bad batch's
    backward pass.

    Stopping works like a :class:`~pa_core.StopTrainingError`: the loop ends, the message is
    printed, ``on_stop_training_error`` fires and ``training_run_end`` runs; then this callback's
    ``on_training_run_end`` raises, and ``on_exception`` lets other callbacks record the failure.
    Its ``on_training_run_end`` is marked to run after every other callback's, where pa-core
    honours hook options on ``TrainerCallback`` methods; otherwise callbacks listed after it do
    not get ``on_training_run_end`` in that case (as in pytorch-accelerated, which exited there).

    :param check_every_n_steps: also check every this many training batches; None (the
        default) checks at epoch ends only.
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        check_positive_int(type(self).__name__, "check_every_n_steps", check_every_n_steps, allow_none=True)
        self.check_every_n_steps = check_every_n_steps
        self.triggered = False
        self.reason: str | None = None
        self._training = False

    # -- checks ---------------------------------------------------------------------------

    def check_for_nan_after_batch(self, batch_output: dict[str, Any], step: str | None = None) -> None:
        """Stop if ``batch_output["loss"]`` is NaN or infinite (pytorch-accelerated's check).

        Reads the loss back from the device: call it sparingly, not at every step.

        :param step: a word for the message, such as ``"training"`` or ``"validation"``.
        """
        if not torch.isfinite(batch_output["loss"]).all():
            self._stop(f"the {step or 'batch'} loss is {batch_output['loss']}")

    def _check_metric(self, trainer: Trainer, metric: str) -> None:
        name = trainer.run_history.metric_name_prefix + metric
        values = trainer.run_history.get_metric_values(name)
        if values and not math.isfinite(float(values[-1])):
            self._stop(f"{name} is {float(values[-1])} in epoch {trainer.run_history.current_epoch}")

    def _check_running_train_loss(self, trainer: Trainer, step: int) -> None:
        total = torch.as_tensor(trainer.loss_tracker.total_loss, device=trainer.device)
        bad = (~torch.isfinite(total)).float().reshape(1)
        if trainer.run_config.num_processes > 1:
            bad = trainer.gather(bad)  # every process sees every flag, so all stop together
        if bad.sum().item():
            self._stop(
                f"the running training loss is not finite at batch {step + 1} of epoch "
                f"{trainer.run_history.current_epoch}"
            )

    def _stop(self, reason: str) -> None:
        self.triggered = True
        self.reason = reason
        raise StopTrainingError(f"Stopping training due to a non-finite loss: {reason}.")

    def _raise_if_triggered(self, run: str) -> None:
        if self.triggered:
            raise NonFiniteLossError(
                f"The {run} stopped because a loss became NaN or infinite: {self.reason}. Lower the learning "
                "rate, clip gradients (train(gradient_clip_value=...)), or check the data and the loss function."
            )

    # -- events ---------------------------------------------------------------------------

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self.triggered, self.reason, self._training = False, None, True

    def on_train_step_end(self, trainer: Trainer, step: int = 0, **kwargs: Any) -> None:
        if self.check_every_n_steps is not None and (step + 1) % self.check_every_n_steps == 0:
            self._check_running_train_loss(trainer, step)

    def on_train_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._check_metric(trainer, "train_loss_epoch")

    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        if is_intermediate:
            self._check_metric(trainer, "intermediate_eval_loss")
        else:
            self._check_metric(trainer, "eval_loss_epoch" if self._training else "evaluation_loss")

    @hookimpl(trylast=True)
    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._training = False
        self._raise_if_triggered("training run")

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self.triggered, self.reason, self._training = False, None, False

    @hookimpl(trylast=True)
    def on_evaluation_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._raise_if_triggered("evaluation run")
