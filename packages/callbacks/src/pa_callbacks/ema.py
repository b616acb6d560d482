"""An exponential moving average (EMA) of the model's weights: kept during training, evaluated
each epoch, and saved when it is the best so far."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from pa_callbacks._common import check_positive_int
from pa_callbacks.checkpoints import SaveBestModelCallback
from pa_core import CallbackHandler, TrainerCallback
from pa_core.utils import ModelEma

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["ModelEmaCallback"]


class ModelEmaCallback(TrainerCallback):
    """Keeps an exponential moving average of the model's weights (:class:`pa_core.utils.ModelEma`)
    and saves it.

    The average starts from the model at the start of training and is updated once per epoch
    (as in pytorch-accelerated) or, with ``update_every_n_steps``, after every that many
    optimizer updates. With ``evaluate_during_training``, after each epoch's evaluation the
    averaged model is evaluated too (``trainer.run_eval_epoch``), recording
    ``ema_model_eval_loss_epoch`` (and any metric the given ``callbacks`` record, prefixed with
    ``ema_model_``), and saved to ``save_path`` whenever ``watch_metric`` improves (by a
    :class:`~pa_callbacks.SaveBestModelCallback` it holds); otherwise it is saved at the end of
    every epoch. The trainer's own model is never replaced by the average.

    The averaged weights, the best value and its epoch are part of the training state, so a run
    resumed with ``train(resume_from=...)`` continues the same average.

    Place it after callbacks that write metrics and before those that read them (loggers).

    :param decay: the weight kept from the average at each update, in [0, 1].
    :param evaluate_during_training: evaluate the averaged model after each epoch's evaluation
        (needs an ``eval_dataset``) and keep the best; False saves the average every epoch.
    :param save_path: the checkpoint file for the averaged weights.
    :param watch_metric: the metric that decides the best average (with evaluation).
    :param greater_is_better: True when a larger ``watch_metric`` is better.
    :param model_ema: the class that keeps the average, called as ``model_ema(model, decay=decay)``.
    :param callbacks: callbacks (instances, classes or catalogue names) called during the
        averaged model's evaluation, for example one computing metrics; no other callback is.
    :param update_every_n_steps: update the average after every this many optimizer updates;
        None (the default) updates it at the end of each training epoch.
    """

    def __init__(
        self,
        decay: float = 0.99,
        evaluate_during_training: bool = True,
        save_path: str | os.PathLike[str] = "ema_model.pt",
        watch_metric: str = "ema_model_eval_loss_epoch",
        greater_is_better: bool = False,
        model_ema: Callable[..., ModelEma] = ModelEma,
        callbacks: Iterable[Any] = (),
        update_every_n_steps: int | None = None,
    ) -> None:
        check_positive_int(type(self).__name__, "update_every_n_steps", update_every_n_steps, allow_none=True)
        if not (isinstance(decay, (int, float)) and not isinstance(decay, bool) and 0 <= decay <= 1):
            raise ValueError(f"ModelEmaCallback(decay={decay!r}) is not accepted; decay must be a number in [0, 1].")
        self.decay = decay
        self.evaluate_during_training = evaluate_during_training
        self.save_path = save_path
        self.model_ema_cls = model_ema
        self.callback_handler = CallbackHandler(callbacks)
        self.update_every_n_steps = update_every_n_steps
        self.best_model_saver = SaveBestModelCallback(
            save_path=save_path,
            watch_metric=watch_metric,
            greater_is_better=greater_is_better,
            reset_on_train=False,
            save_optimizer=False,
            save_scheduler=False,
            load_saved_checkpoint=False,
        )
        self.ema_model: ModelEma | None = None
        self.metric_prefix = "ema_model_"
        self._pending_ema_state: dict[str, torch.Tensor] | None = None
        self._training = False

    @property
    def best_metric(self) -> Any:
        """The best ``watch_metric`` value of the average so far."""
        return self.best_model_saver.best_metric

    @property
    def best_metric_epoch(self) -> int | None:
        """The epoch of :attr:`best_metric`."""
        return self.best_model_saver.best_metric_epoch

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The best value, its epoch and the averaged weights (on the CPU)."""
        state = self.best_model_saver.state_dict()
        if self.ema_model is not None:
            state["ema_state_dict"] = {k: v.detach().cpu() for k, v in self.ema_model.module.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the averaged weights are applied when training starts."""
        self.best_model_saver.load_state_dict(state)
        self._pending_ema_state = state.get("ema_state_dict")

    # -- events ---------------------------------------------------------------------------

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self.best_model_saver.on_training_run_start(trainer)
        if self.evaluate_during_training and trainer.eval_dataloader is None:
            raise ValueError(
                "ModelEmaCallback(evaluate_during_training=True) evaluates the averaged model after each epoch, but "
                "train() got no eval_dataset. Pass an eval_dataset, or use evaluate_during_training=False to save "
                "the average every epoch instead."
            )
        self.ema_model = self.model_ema_cls(trainer.get_model(keep_torch_compile=False), decay=self.decay)
        if self._pending_ema_state is not None:  # resuming: continue the saved average
            self.ema_model.module.load_state_dict(self._pending_ema_state)
            self._pending_ema_state = None
        if self.evaluate_during_training:
            self.ema_model.to(trainer.device)
        self._training = True

    def on_train_update_end(self, trainer: Trainer, num_updates: int = 0, **kwargs: Any) -> None:
        if self.update_every_n_steps is not None and num_updates % self.update_every_n_steps == 0:
            self.ema_model.update(trainer.get_model(keep_torch_compile=False))

    def on_train_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if self.update_every_n_steps is None:
            self.ema_model.update(trainer.get_model(keep_torch_compile=False))

    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        if not (self._training and self.evaluate_during_training) or is_intermediate:
            return
        trainer.print("Running evaluation on EMA model")
        trainer.run_eval_epoch(
            model=self.ema_model.module, callbacks=self.callback_handler, metric_prefix=self.metric_prefix
        )

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        model = trainer.model
        trainer.model = self.ema_model.module  # what the checkpoint saves
        try:
            if self.evaluate_during_training:
                self.best_model_saver.on_training_run_epoch_end(trainer)
            else:
                trainer.save_checkpoint(save_path=self.save_path, save_optimizer=False, save_scheduler=False)
        finally:
            trainer.model = model

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._training = False
