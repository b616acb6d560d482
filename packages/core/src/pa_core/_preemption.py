"""Stopping cleanly when a cluster scheduler or Ctrl-C sends a signal.

The first preemption signal (``Trainer.preemption_signals``: SIGTERM and SIGINT by default,
SIGUSR1/SIGUSR2 for SLURM's ``--signal``) only sets a flag. The Trainer looks at it at *poll
sites* (after each optimizer update and after each evaluation step) and at *agreement points*
(the end of each epoch and of each run). When it acts, every process stops at the same place,
saves a training state if asked, and exits with status 128 + the signal number. A second
signal is handled the default way at once (the same signal again within ``REPEAT_WINDOW_S``
seconds counts as the first: schedulers and launchers both deliver it).

In a multi-process run the processes must stop at the same place, or the collective save that
follows would not match. Every process passes the same poll sites in the same order (pa runs
the same number of steps on every process), so a poll site has the same index everywhere:

- a process that received a signal at poll ``c`` publishes "stop at poll c + 2" in
  torch.distributed's key-value store, and every process checks for that key at each poll
  (no collective, no device synchronisation). Processes that are kept together by a
  collective between two polls (the gradient all-reduce of each update, a ``gather`` in an
  evaluation hook) are never more than one poll apart, so all of them see the key in time; a
  process that is further ahead has passed no collective the others still wait in, and stops
  at its next poll;
- at the end of each epoch and of the run the processes agree with one small all-reduce,
  which also catches a signal that arrived after the last poll.

A signal that arrives after the last agreement is delivered again when the run's context
ends, so it is never swallowed.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["TrainingPreempted"]

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: A repeat of the first signal within this many seconds is the same request, not a second one:
#: on a cluster the scheduler signals every process of a job step while the launcher (torchrun,
#: accelerate launch) forwards the signal it received to its workers as well.
REPEAT_WINDOW_S = 3.0
_RUN_IDS = itertools.count()  # the same sequence on every process: runs start in the same order


class TrainingPreempted(SystemExit):
    """Training (or evaluation) stopped because the process received a preemption signal.

    A ``SystemExit`` with the conventional status ``128 + signal number`` (143 for SIGTERM,
    130 for SIGINT, 138 for SIGUSR1), so an uncaught one ends the script with that status and
    no traceback.
    """

    def __init__(self, signal_number: int, state_dir: str | None, epoch: int | None, num_updates: int) -> None:
        super().__init__(128 + signal_number)
        self.signal_number, self.state_dir = signal_number, state_dir
        self.epoch, self.num_updates = epoch, num_updates  # epoch is None when evaluate() was stopped

    def __str__(self) -> str:
        name = signal.Signals(self.signal_number).name
        if self.epoch is None:
            return f"Evaluation stopped by {name}."
        where = f"in epoch {self.epoch} after {self.num_updates} optimizer updates"
        if self.state_dir:
            return (
                f"Training stopped by {name} {where}. The training state was saved to {self.state_dir!r}; "
                f"continue with trainer.train(..., resume_from={self.state_dir!r})."
            )
        return f"Stopped by {name} {where}. No training state was saved (trainer.preemption_save_dir is not set)."


class StopRequested(BaseException):
    """Unwinds the Trainer's loop to the run's top level when it must stop for a preemption
    signal (a BaseException, so that no ``except Exception`` in a callback can swallow it)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def check_signals(signals: Iterable[Any] | int | str) -> tuple[signal.Signals, ...]:
    """``signals`` (one signal, or several: numbers, ``signal.Signals`` or names such as
    ``"SIGUSR1"``) as a tuple of ``signal.Signals``; a clear error for one that cannot be caught."""
    if isinstance(signals, (int, str)):
        signals = (signals,)
    checked = []
    for value in signals:
        try:
            signum = signal.Signals[value] if isinstance(value, str) else signal.Signals(value)
        except (ValueError, TypeError, KeyError):
            raise ValueError(
                f"Trainer.preemption_signals holds {value!r}, which is not a signal; use e.g. signal.SIGTERM, "
                "signal.SIGINT or signal.SIGUSR1."
            ) from None
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"Trainer.preemption_signals holds {signum.name}, which no program can catch.")
        checked.append(signum)
    return tuple(checked)


class SignalWatcher:
    """Records preemption signals while a run is in progress (a context manager)."""

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS, group: Any = None) -> None:
        self.signals = check_signals(signals)
        self.group = group
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}
        self._store: Any = None
        self._key = f"pa/stop/{next(_RUN_IDS)}"
        self._polls = 0
        self._published = False
        self._stop_at: int | None = None
        self._received: tuple[int, float] | None = None  # this process's first signal and when

    def __enter__(self) -> SignalWatcher:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self._store = dist.distributed_c10d._get_default_store()
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        self._restore()
        # Keep no reference to the store after the run: one outliving the process group is
        # destroyed at interpreter exit with its threads still running, which aborts the process.
        self._store = None
        if self.signal_number is not None and exc_type is None:
            os.kill(os.getpid(), self.signal_number)  # never swallow a signal the run did not act on

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._received is not None:  # this process's second signal: act on it now
            first, received_at = self._received
            if signum == first and now - received_at < REPEAT_WINDOW_S:
                return  # the same signal delivered twice (by the scheduler and by the launcher)
            self._restore()
            os.kill(os.getpid(), signum)
            return
        self._received = (signum, now)
        if self.signal_number is None:  # (it may be known already from another process)
            self.signal_number = signum

    def poll(self) -> int | None:
        """The signal to stop for at this poll site, or None to go on (cheap: no collective)."""
        self._polls += 1
        if self._store is None:
            return self.signal_number
        if self.signal_number is not None and not self._published:
            self._published = True
            if not self._store.check([self._key]):
                self._store.set(self._key, f"{self._polls + 2}:{self.signal_number}")
        if self._stop_at is None and self._store.check([self._key]):
            self._read_key()
        if self._stop_at is not None and self._polls >= self._stop_at:
            return self.signal_number
        return None

    def agree(self) -> int | None:
        """The signal every process stops for here, or None (collective on several processes)."""
        if self._store is None:
            return self.signal_number
        if self._stop_at is None and self._store.check([self._key]):
            self._read_key()
        flag = torch.tensor([self.signal_number or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        self.signal_number = int(flag) or None
        return self.signal_number

    def _read_key(self) -> None:
        stop_at, signum = self._store.get(self._key).decode().split(":")
        self._stop_at, self.signal_number = int(stop_at), self.signal_number or int(signum)
