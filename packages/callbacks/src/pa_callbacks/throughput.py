"""How fast a run trains: samples, batches and updates per second, tokens per second, model FLOPs
utilisation and peak memory, recorded in the run history."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from pa_callbacks._common import check_positive_int
from pa_core import TrainerCallback

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["ThroughputCallback", "peak_memory_bytes"]

_MIB = 2**20


def peak_memory_bytes(device: torch.device) -> int | None:
    """The peak memory of this process: on a CUDA device, the most memory tensors have taken on it
    (``torch.cuda.max_memory_allocated``); elsewhere the process's peak resident memory
    (``resource.getrusage``), or None where that is not available (Windows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class _Totals:
    """Counts since training started: samples (all of this process's batches), batches, updates,
    and seconds spent training (evaluation excluded)."""

    def __init__(self, samples: Any = 0, batches: int = 0, updates: int = 0, seconds: float = 0.0) -> None:
        self.samples, self.batches, self.updates, self.seconds = samples, batches, updates, seconds

    def copy(self) -> _Totals:
        return _Totals(self.samples, self.batches, self.updates, self.seconds)


class ThroughputCallback(TrainerCallback):
    """Measures how fast training goes and records it in the run history (catalogue name ``throughput``),
    so the metric lines, the metrics file, ``pa plot`` and every tracker show it.

    At each training epoch's end it records, over the epoch's training (evaluation time excluded):

    - ``samples_per_second_epoch``: samples of every process per second (the whole run's rate);
    - ``batches_per_second_epoch``: batches per second on each process;
    - ``seconds_per_update_epoch``: seconds per optimizer update;
    - ``tokens_per_second_epoch`` when ``tokens_per_sample`` is given;
    - ``model_tflops_per_second_epoch`` when ``flops_per_sample`` is given, and ``mfu_epoch``,
      the model FLOPs utilisation (achieved FLOP/s over the devices' peak), when
      ``peak_flops_per_device`` is given too;
    - ``peak_memory_mib``: the highest peak memory of any process since training started, in MiB:
      memory allocated on a CUDA device, else the process's peak resident memory.

    With ``log_every_n_updates=N`` it also records the same figures, without the ``_epoch`` suffix,
    over each window of N optimizer updates.

    Samples are counted from ``batch_output["batch_size"]`` of each training step (kept as given,
    so a tensor stays on the device); the counts of all processes are summed, and on CUDA the
    device is synchronised, only when figures are recorded: nothing is read back per step.

    :param log_every_n_updates: also record figures every N optimizer updates; None (the
        default): at epoch ends only.
    :param tokens_per_sample: tokens in one training sample (for ``tokens_per_second``).
    :param flops_per_sample: model FLOPs to train on one sample, forward and backward (about
        6 x parameters x tokens for a transformer).
    :param peak_flops_per_device: each device's peak FLOP/s at the precision used (for ``mfu``).
    """

    def __init__(
        self,
        log_every_n_updates: int | None = None,
        tokens_per_sample: int | None = None,
        flops_per_sample: float | None = None,
        peak_flops_per_device: float | None = None,
    ) -> None:
        owner = type(self).__name__
        check_positive_int(owner, "log_every_n_updates", log_every_n_updates, allow_none=True)
        check_positive_int(owner, "tokens_per_sample", tokens_per_sample, allow_none=True)
        for name, value in (("flops_per_sample", flops_per_sample), ("peak_flops_per_device", peak_flops_per_device)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(
                    f"{owner}({name}={value!r}) is not accepted; {name} must be a positive number or None."
                )
        self.log_every_n_updates = log_every_n_updates
        self.tokens_per_sample = tokens_per_sample
        self.flops_per_sample = flops_per_sample
        self.peak_flops_per_device = peak_flops_per_device
        self._totals = _Totals()
        self._window_start = _Totals()
        self._epoch_start = _Totals()
        self._clock_started: float | None = None  # when the running stretch of training time began

    # -- the clock: runs during training epochs, stops for evaluation --------------------------

    def _start_clock(self) -> None:
        if self._clock_started is None:
            self._clock_started = time.perf_counter()

    def _stop_clock(self) -> None:
        if self._clock_started is not None:
            self._totals.seconds += time.perf_counter() - self._clock_started
            self._clock_started = None

    def _now(self, trainer: Trainer) -> _Totals:
        """The totals up to this moment, after the device has finished the work queued so far."""
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        now = self._totals.copy()
        if self._clock_started is not None:
            now.seconds += time.perf_counter() - self._clock_started
        return now

    # -- hooks ---------------------------------------------------------------------------------

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._totals, self._clock_started = _Totals(), None
        self._window_start = _Totals()
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)

    def on_train_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._epoch_start = self._now(trainer)
        self._start_clock()

    def on_train_step_end(self, trainer: Trainer, batch_output: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._totals.samples += batch_output["batch_size"]  # type: ignore[index]
        self._totals.batches += 1

    def on_train_update_end(self, trainer: Trainer, num_updates: int = 0, **kwargs: Any) -> None:
        self._totals.updates += 1
        every = self.log_every_n_updates
        if every is not None and num_updates % every == 0:
            now = self._now(trainer)
            self._record(trainer, now, self._window_start, suffix="")
            self._window_start = now

    def on_eval_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        self._stop_clock()

    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool = False, **kwargs: Any) -> None:
        if is_intermediate:  # training goes on
            self._start_clock()

    def on_train_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        now = self._now(trainer)
        self._stop_clock()
        self._record(trainer, now, self._epoch_start, suffix="_epoch")

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        self._stop_clock()

    # -- figures -------------------------------------------------------------------------------

    def _record(self, trainer: Trainer, now: _Totals, start: _Totals, suffix: str) -> None:
        """Record the figures between ``start`` and ``now``; called at the same moment on every process."""
        samples = now.samples - start.samples
        memory = peak_memory_bytes(trainer.device)
        num_processes = trainer.run_config.num_processes
        if num_processes > 1:  # the run's samples, and the highest peak memory of any process
            stats = torch.tensor([[float(samples), float(memory or 0)]], dtype=torch.float64, device=trainer.device)
            gathered = trainer.gather(stats)
            samples, memory = gathered[:, 0].sum().item(), int(gathered[:, 1].max().item()) or None
        else:
            samples = float(samples)
        seconds, batches, updates = (
            now.seconds - start.seconds,
            now.batches - start.batches,
            now.updates - start.updates,
        )
        history = trainer.run_history
        if seconds > 0 and batches > 0:
            samples_per_second = samples / seconds
            history.update_metric(f"samples_per_second{suffix}", samples_per_second)
            history.update_metric(f"batches_per_second{suffix}", batches / seconds)
            if updates > 0:
                history.update_metric(f"seconds_per_update{suffix}", seconds / updates)
            if self.tokens_per_sample is not None:
                history.update_metric(f"tokens_per_second{suffix}", samples_per_second * self.tokens_per_sample)
            if self.flops_per_sample is not None:
                flops_per_second = samples_per_second * self.flops_per_sample
                history.update_metric(f"model_tflops_per_second{suffix}", flops_per_second / 1e12)
                if self.peak_flops_per_device is not None:
                    history.update_metric(
                        f"mfu{suffix}", flops_per_second / (self.peak_flops_per_device * num_processes)
                    )
        if memory is not None:
            history.update_metric("peak_memory_mib", memory / _MIB)
