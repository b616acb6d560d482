"""Stopping cleanly when a cluster scheduler or Ctrl-C sends SIGTERM or SIGINT.

The first signal only sets a flag; the Trainer looks at it after each optimizer update, so
every process stops at the same update, saves a training state if asked, and exits. A second
signal is handled the default way at once (SIGINT raises ``KeyboardInterrupt``, SIGTERM ends
the process).

In a multi-process run the processes must stop at the same update, or the collective save
that follows would mismatch. They agree through torch.distributed's key-value store, not
through a collective: a process that received a signal publishes "stop after update n + 2";
every process checks for that key after each update. Data-parallel processes are never more
than one update apart (each update waits for the gradient all-reduce), so everyone sees the
key before reaching that update. No tensor is read back from a device.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
from types import FrameType
from typing import Any

import torch.distributed as dist

__all__ = ["TrainingPreempted"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_RUN_IDS = itertools.count()  # the same sequence on every process: runs start in the same order


class TrainingPreempted(SystemExit):
    """Training stopped because the process received SIGTERM or SIGINT.

    A ``SystemExit`` with the conventional status ``128 + signal number`` (143 for SIGTERM,
    130 for SIGINT), so an uncaught one ends the script with that status and no traceback.
    """

    def __init__(self, signal_number: int, state_dir: str | None, epoch: int, num_updates: int) -> None:
        super().__init__(128 + signal_number)
        self.signal_number, self.state_dir = signal_number, state_dir
        self.epoch, self.num_updates = epoch, num_updates

    def __str__(self) -> str:
        name = signal.Signals(self.signal_number).name
        where = f"in epoch {self.epoch} after {self.num_updates} optimizer updates"
        if self.state_dir:
            return (
                f"Training stopped by {name} {where}. The training state was saved to {self.state_dir!r}; "
                f"continue with trainer.train(..., resume_from={self.state_dir!r})."
            )
        return (
            f"Training stopped by {name} {where}. No training state was saved: set "
            "trainer.preemption_save_dir to have one written when this happens."
        )


class SignalWatcher:
    """Records SIGTERM/SIGINT while a run is in progress (a context manager)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}
        self._store: Any = None
        self._key = f"pa/stop/{next(_RUN_IDS)}"
        self._published = False
        self._stop_after: int | None = None

    def __enter__(self) -> SignalWatcher:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self._store = dist.distributed_c10d._get_default_store()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._restore()
        # Keep no reference to the store after the run: one outliving the process group is
        # destroyed at interpreter exit with its threads still running, which aborts the process.
        self._store = None

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:  # the second signal: act on it now
            self._restore()
            os.kill(os.getpid(), signum)
            return
        self.signal_number = signum

    def poll(self, num_updates: int) -> int | None:
        """The signal to stop for after update ``num_updates``, or None to go on."""
        if self._store is None:
            return self.signal_number
        if self.signal_number is not None and not self._published:
            self._published = True
            if not self._store.check([self._key]):
                self._store.set(self._key, f"{num_updates + 2}:{self.signal_number}")
        if self._stop_after is None and self._store.check([self._key]):
            stop_after, signum = self._store.get(self._key).decode().split(":")
            self._stop_after, self.signal_number = int(stop_after), self.signal_number or int(signum)
        if self._stop_after is not None and num_updates >= self._stop_after:
            return self.signal_number
        return None
