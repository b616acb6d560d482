"""Progress output: start/end messages and tqdm progress bars.

The bars show the running loss and steps per second without stalling the device: the loss is
read back at most once per ``loss_refresh_interval`` seconds, never at every step. They work in
terminals, in notebooks (``tqdm.auto``) and in logs that are not terminals (CI), where they
redraw rarely instead of flooding the log.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from pa_callbacks._common import is_local_main_process
from pa_core import TrainerCallback

if TYPE_CHECKING:
    from pa_core import LossTracker, Trainer

__all__ = ["PrintProgressCallback", "ProgressBarCallback"]


class PrintProgressCallback(TrainerCallback):
    """Prints a message at the start and end of each training and evaluation run, and at the
    start of each training and evaluation epoch (on the main process of each machine)."""

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        trainer.print("\nStarting training run")

    def on_train_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        trainer.print(f"\nStarting epoch {trainer.run_history.current_epoch}")

    def on_eval_epoch_start(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        if not is_intermediate:  # intermediate evaluations announce themselves
            trainer.print("\nStarting eval epoch")

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        trainer.print("Finishing training run")

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        trainer.print("\nStarting evaluation run")

    def on_evaluation_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        trainer.print("Finishing evaluation run")


class ProgressBarCallback(TrainerCallback):
    """A tqdm progress bar for each training and evaluation epoch, on the main process of each
    machine, showing steps per second and the running mean loss of the epoch.

    :param loss_refresh_interval: the least number of seconds between two reads of the running
        loss from the device (each read waits for the device to catch up); ``float("inf")``
        never shows the running loss.
    :param non_tty_mininterval: the least number of seconds between redraws when the output is
        not a terminal or notebook (a CI log), so that a long epoch adds a few lines, not thousands.
    """

    def __init__(self, loss_refresh_interval: float = 1.0, non_tty_mininterval: float = 30.0) -> None:
        for name, value in (
            ("loss_refresh_interval", loss_refresh_interval),
            ("non_tty_mininterval", non_tty_mininterval),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(
                    f"ProgressBarCallback({name}={value!r}) is not accepted; {name} must be a number of seconds >= 0."
                )
        self.loss_refresh_interval = loss_refresh_interval
        self.non_tty_mininterval = non_tty_mininterval
        self.pbar: Any = None
        self.eval_pbar: Any = None
        self._clock = time.monotonic
        self._next_loss_read = {"train": 0.0, "eval": 0.0}

    # -- bars -----------------------------------------------------------------------------

    def _create_bar(self, trainer: Trainer, total: int | None, desc: str, initial: int = 0, leave: bool = True) -> Any:
        interactive = _output_is_interactive()
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="step",
            leave=leave,
            dynamic_ncols=interactive,
            mininterval=0.1 if interactive else self.non_tty_mininterval,
            disable=not is_local_main_process(trainer),
        )

    def _step(self, bar: Any, tracker: LossTracker, kind: str) -> None:
        bar.update(1)
        if not bar.disable and self._clock() >= self._next_loss_read[kind]:
            bar.set_postfix(loss=f"{float(tracker.average):.4g}", refresh=False)
            self._next_loss_read[kind] = self._clock() + self.loss_refresh_interval

    def _close(self, bar: Any, final_loss: Any = None) -> None:
        if bar is None:
            return
        if final_loss is not None and not bar.disable:
            bar.set_postfix(loss=f"{float(final_loss):.4g}", refresh=False)
        bar.close()

    # -- training -------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        # A run resumed in the middle of an epoch starts after the batches already done.
        done = trainer.run_state.epoch_step
        epoch, last_epoch = trainer.run_history.current_epoch, trainer.last_epoch
        self.pbar = self._create_bar(trainer, _length(trainer.train_dataloader), f"epoch {epoch}/{last_epoch}", done)
        self._next_loss_read["train"] = self._clock() + self.loss_refresh_interval

    def on_train_step_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._step(self.pbar, trainer.loss_tracker, "train")

    def on_train_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        history = trainer.run_history
        values = history.get_metric_values(history.metric_name_prefix + "train_loss_epoch")
        self._close(self.pbar, values[-1] if values else None)
        self.pbar = None

    # -- evaluation -----------------------------------------------------------------------

    def on_eval_epoch_start(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        desc = "intermediate eval" if is_intermediate else "eval"
        self.eval_pbar = self._create_bar(trainer, _length(trainer.eval_dataloader), desc, leave=not is_intermediate)
        self._next_loss_read["eval"] = self._clock() + self.loss_refresh_interval

    def on_eval_step_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._step(self.eval_pbar, trainer.eval_loss_tracker, "eval")

    def on_eval_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._close(self.eval_pbar)
        self.eval_pbar = None

    # -- failure --------------------------------------------------------------------------

    def on_exception(self, trainer: Trainer, **kwargs: Any) -> None:
        for bar in (self.eval_pbar, self.pbar):
            self._close(bar)
        self.pbar = self.eval_pbar = None


def _length(dataloader: Any) -> int | None:
    try:
        return len(dataloader)
    except TypeError:  # an iterable data set without a length
        return None


def _output_is_interactive() -> bool:
    """True in a notebook (tqdm.auto chose its widget) or when stderr is a terminal."""
    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())
