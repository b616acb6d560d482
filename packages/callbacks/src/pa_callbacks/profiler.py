"""Where the time goes: ``torch.profiler`` over a window of optimizer updates."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pa_callbacks._common import check_positive_int
from pa_core import TrainerCallback

if TYPE_CHECKING:
    from torch.profiler import profile

    from pa_core import Trainer

__all__ = ["ProfilerCallback"]


class ProfilerCallback(TrainerCallback):
    """Profiles a window of optimizer updates with ``torch.profiler`` (catalogue name ``profiler``).

    The profiler starts with ``train()`` and steps after every optimizer update: it skips
    ``wait`` updates, warms up for ``warmup`` and records ``active`` updates, ``repeat`` times.
    Each recorded window is written to ``output_dir`` by ``torch.profiler.tensorboard_trace_handler``
    as ``rank<R>.<time>.pt.trace.json``: a Chrome trace, which https://ui.perfetto.dev and
    ``chrome://tracing`` open, in the layout TensorBoard's profiler plugin reads
    (``tensorboard --logdir OUTPUT_DIR`` with ``torch-tb-profiler`` installed).

    When training ends, the operators that took the most time by themselves (self time, on the
    device when it is a GPU) in the last window are printed as a table. By default only the world
    main process profiles; with ``all_processes=True`` every process does, each writing its own
    files.

    :param output_dir: the folder for the traces.
    :param wait: updates to skip before each window.
    :param warmup: updates to profile without recording before each window (the profiler's
        start-up cost lands there).
    :param active: updates to record in each window.
    :param repeat: number of windows (0: windows until training ends).
    :param all_processes: profile on every process, not only the world main process.
    :param record_shapes: record the input shapes of each operator.
    :param profile_memory: record memory allocations.
    :param with_stack: record the Python source of each operator (bigger traces).
    :param row_limit: operators in the printed table (0: print none).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str] = "profiler",
        wait: int = 1,
        warmup: int = 1,
        active: int = 3,
        repeat: int = 1,
        all_processes: bool = False,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        row_limit: int = 15,
    ) -> None:
        owner = type(self).__name__
        for name, value in (("wait", wait), ("warmup", warmup), ("repeat", repeat), ("row_limit", row_limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{owner}({name}={value!r}) is not accepted; {name} must be 0 or a positive integer.")
        check_positive_int(owner, "active", active)
        self.output_dir = Path(output_dir)
        self.wait, self.warmup, self.active, self.repeat = wait, warmup, active, repeat
        self.all_processes = all_processes
        self.record_shapes, self.profile_memory, self.with_stack = record_shapes, profile_memory, with_stack
        self.row_limit = row_limit
        #: The trace files written so far, one per recorded window.
        self.traces: list[Path] = []
        self._profiler: profile | None = None
        self._last_window: profile | None = None
        self._worker = "rank0"
        self._sort_by = "self_cpu_time_total"

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        if not (self.all_processes or trainer.is_world_process_zero):
            return
        from torch.profiler import ProfilerActivity, profile, schedule  # imported when used: ~8 ms

        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        self._worker = f"rank{rank}"
        activities = [ProfilerActivity.CPU]
        self._sort_by = "self_cpu_time_total"
        if trainer.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
            self._sort_by = "self_device_time_total"
        self._profiler = profile(
            activities=activities,
            schedule=schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=self.repeat),
            on_trace_ready=self._write_trace,
            record_shapes=self.record_shapes,
            profile_memory=self.profile_memory,
            with_stack=self.with_stack,
        )
        self._profiler.start()

    def on_train_update_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if self._profiler is not None:
            self._profiler.step()

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        if self._profiler is None:
            return
        self._stop()
        if not self.traces:
            window = self.wait + self.warmup + self.active
            warnings.warn(
                f"ProfilerCallback recorded nothing: training ended before the first profiling window was complete "
                f"(wait={self.wait} + warmup={self.warmup} + active={self.active} = {window} optimizer updates). "
                "Lower wait, warmup or active.",
                UserWarning,
                stacklevel=2,
            )
        elif self.row_limit and self._last_window is not None:
            table = self._last_window.key_averages().table(sort_by=self._sort_by, row_limit=self.row_limit)
            trainer.print(f"Top operators by self time (profiled on {self._worker}; traces in {self.output_dir}):")
            trainer.print(table)

    def on_exception(self, trainer: Trainer, **kwargs: Any) -> None:
        if self._profiler is not None:
            self._stop()

    def _stop(self) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.stop()  # type: ignore[union-attr]

    def _write_trace(self, profiler: profile) -> None:
        from torch.profiler import tensorboard_trace_handler

        before = set(self.output_dir.glob("*.pt.trace.json"))
        tensorboard_trace_handler(str(self.output_dir), worker_name=self._worker)(profiler)
        self.traces += sorted(set(self.output_dir.glob("*.pt.trace.json")) - before)
        self._last_window = profiler
