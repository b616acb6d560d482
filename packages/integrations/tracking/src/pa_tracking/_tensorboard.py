"""The :class:`TensorBoardCallback`: TensorBoard event files through Accelerate's ``TensorBoardTracker``."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from accelerate.tracking import TensorBoardTracker

from pa_tracking._tracker import TrackerCallback, check_tracker_installed

__all__ = ["TensorBoardCallback", "default_log_dir"]


def default_log_dir() -> str:
    """``runs/<month><day>_<hh>-<mm>-<ss>_<host name>``, the folder ``torch.utils.tensorboard.SummaryWriter``
    writes to when given none."""
    return os.path.join("runs", f"{datetime.now():%b%d_%H-%M-%S}_{socket.gethostname()}")


class TensorBoardCallback(TrackerCallback):
    """Write a pa Trainer's runs as TensorBoard event files (catalogue name ``tensorboard``).

    Everything :class:`~pa_tracking.TrackerCallback` describes is written to one folder per
    training run, ``log_dir``; view it with ``tensorboard --logdir runs``. The run config goes to
    TensorBoard's HPARAMS tab and to an ``hparams.yml``, both in a time-stamped sub-folder, as
    Accelerate's tracker writes them. A run resumed from a training state writes to the same
    folder and hides the points the interrupted run logged after the state was saved
    (TensorBoard's ``purge_step``), so no step appears twice. ``evaluate()`` after ``train()``
    writes its metrics to the training run's folder, at the last training step.

    Needs ``pip install "pa-tracking[tensorboard]"``.

    :param log_dir: the run's folder; by default ``runs/<date>_<time>_<host>`` (chosen when
        training starts), as ``torch.utils.tensorboard`` does.
    :param config: hyperparameters to log with the run config.
    :param log_every_n_updates: optimizer updates between two logs of the running loss and
        learning rates; None: at epoch ends only.
    :param log_learning_rates: log each parameter group's learning rate.
    :param writer_kwargs: further ``SummaryWriter`` arguments (``flush_secs``, ``max_queue``...).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        log_every_n_updates: int | None = 50,
        log_learning_rates: bool = True,
        **writer_kwargs: Any,
    ) -> None:
        check_tracker_installed("tensorboard", type(self).__name__)
        super().__init__(
            "tensorboard", config=config, log_every_n_updates=log_every_n_updates, log_learning_rates=log_learning_rates
        )
        self.log_dir = os.fspath(log_dir) if log_dir is not None else None
        self.writer_kwargs = writer_kwargs

    @property
    def run_dir(self) -> str | None:
        """The folder of the current (or last) run's event files, once training has started."""
        return self._run["log_dir"] if self._run else None

    def _create_tracker(self, resuming: bool) -> TensorBoardTracker:
        if self._run is None:
            self._run = {"log_dir": os.path.abspath(self.log_dir or default_log_dir())}
        kwargs = dict(self.writer_kwargs)
        if resuming:  # hide what the interrupted run logged after its state was saved
            kwargs["purge_step"] = self._num_updates + 1
        parent, name = os.path.split(self._run["log_dir"])
        return TensorBoardTracker(name, parent, **kwargs)
