"""Is pluggy's own hook call as fast as pa's direct dispatch? Measures both, the same callbacks either way.

pa's CallbackHandler lets pluggy register and order callbacks and then, for hooks without wrappers, calls the
ordered implementations itself (``CallbackHandler._direct_dispatch = True``); with it False every event goes
through pluggy's ``hook.on_x(...)``. tests/test_dispatch.py checks the two call the same callbacks in the same
order with the same error notes; this script measures what each costs.

1. Per event: ``call_event("on_train_step_end", ...)`` with 0, 1, 3 and 5 callbacks implementing it (hookimpl
   style and upstream style), median of repeated ``timeit`` runs.
2. Python calls per training step (does not depend on the machine's load): 20 steady-state steps of a tiny
   classifier with pa's default callbacks, counted by package.
3. Per training step: the benchmark's W1 workload (a 32->32->2 MLP at batch 32, so the loop's own Python work
   decides the step time) with pa's default callbacks, interleaved rounds of both dispatch modes, median step
   time and the median of the per-round ratio pluggy / direct.

    python benchmarks/dispatch.py [--rounds 15]

Run it on a quiet machine (check ``uptime``); the ratio of interleaved rounds is more trustworthy than times.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import timeit
from collections import Counter

import torch
from torch import nn

from pa_core import DEFAULT_CALLBACKS, Trainer, TrainerCallback, hookimpl
from pa_core.callbacks import CallbackHandler
from pa_core.testing import make_classification_dataset, tiny_classifier

STEP_KWARGS = {"batch": None, "batch_output": {"loss": None, "batch_size": 32}, "step": 0}


class NewStyle:
    @hookimpl
    def on_train_step_end(self, batch_output):
        pass


class Upstream(TrainerCallback):
    def on_train_step_end(self, trainer, **kwargs):
        pass


def _callbacks(count: int) -> list:
    # Distinct classes: a callback class can be added once.
    made = []
    for i in range(count):
        base = NewStyle if i % 2 == 0 else Upstream
        made.append(type(f"{base.__name__}{i}", (base,), {})())
    return made


def per_event(repeats: int = 7, number: int = 20000) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    trainer = object()
    for count in (0, 1, 3, 5):
        row = {}
        for mode in ("direct", "pluggy"):
            handler = CallbackHandler(_callbacks(count))
            handler._direct_dispatch = mode == "direct"
            handler._rebuild()

            def call(handler=handler):
                handler.call_event("on_train_step_end", trainer, **STEP_KWARGS)

            times = timeit.repeat(call, number=number, repeat=repeats)
            row[mode] = statistics.median(times) / number * 1e6  # microseconds per event
        results[f"{count} callback(s)"] = row
    return results


def calls_per_step(direct: bool) -> dict[str, float]:
    """Python function calls per steady-state training step (steps 10 to 30), by package."""
    counts: Counter[str] = Counter()
    steps = [0]

    def profile(frame, event, arg):
        if event == "call":
            name = frame.f_code.co_filename
            package = next((p for p in ("pluggy", "pa_core", "pa_callbacks") if f"/{p}/" in name), "other")
            counts[package] += 1

    class Window:
        @hookimpl
        def on_train_step_start(self):
            steps[0] += 1
            if steps[0] == 10:
                sys.setprofile(profile)
            elif steps[0] == 30:
                sys.setprofile(None)

    CallbackHandler._direct_dispatch = direct
    try:
        model = tiny_classifier()
        trainer = Trainer(
            model,
            nn.CrossEntropyLoss(),
            torch.optim.SGD(model.parameters(), lr=0.1),
            callbacks=[Window(), *DEFAULT_CALLBACKS],
        )
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            trainer.train(make_classification_dataset(num_samples=4 * 40), num_epochs=1, per_device_batch_size=4)
    finally:
        sys.setprofile(None)
        CallbackHandler._direct_dispatch = True
    counts.pop("other", None)  # torch and the standard library: the same in both modes
    return {package: count / 20 for package, count in sorted(counts.items())}


class Clock(nn.Module):
    """The W1 network, recording the time at the start of every forward pass."""

    def __init__(self, stamps: list[float]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
        self.stamps = stamps

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.stamps.append(time.perf_counter())
        return self.net(inputs)


def one_run(direct: bool, data) -> float:
    """Median step time (microseconds) of one W1 run: 2 epochs of 64 steps, first 5 steps of each dropped."""
    CallbackHandler._direct_dispatch = direct
    try:
        stamps: list[float] = []
        model = Clock(stamps)
        trainer = Trainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            trainer.train(data, num_epochs=2, per_device_batch_size=32)
    finally:
        CallbackHandler._direct_dispatch = True
    intervals = []
    for epoch in range(2):
        epoch_stamps = stamps[epoch * 64 : (epoch + 1) * 64]
        intervals += [b - a for a, b in zip(epoch_stamps[5:], epoch_stamps[6:])]
    return statistics.median(intervals) * 1e6


def per_step(rounds: int) -> dict[str, float]:
    torch.set_num_threads(1)
    data = make_classification_dataset(num_samples=64 * 32, num_features=32)
    one_run(True, data), one_run(False, data)  # warm-up, not counted
    direct, pluggy, ratios = [], [], []
    for index in range(rounds):
        order = (True, False) if index % 2 == 0 else (False, True)
        times = {mode: one_run(mode, data) for mode in order}
        direct.append(times[True])
        pluggy.append(times[False])
        ratios.append(times[False] / times[True])
    return {
        "direct_us": statistics.median(direct),
        "pluggy_us": statistics.median(pluggy),
        "ratio_pluggy_over_direct": statistics.median(ratios),
        "ratio_q1": statistics.quantiles(ratios, n=4)[0] if len(ratios) > 1 else ratios[0],
        "ratio_q3": statistics.quantiles(ratios, n=4)[2] if len(ratios) > 1 else ratios[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved W1 rounds per mode (default: 15)")
    args = parser.parse_args()
    os.environ.setdefault("PA_DISABLE_PLUGIN_AUTOLOAD", "1")
    print(f"load average before: {os.getloadavg()}")
    print("Per on_train_step_end event (microseconds, median):")
    for label, row in per_event().items():
        print(f"  {label:14s} direct {row['direct']:6.2f}   pluggy {row['pluggy']:6.2f}")
    for direct in (True, False):
        print(f"Python calls per step, {'direct' if direct else 'pluggy'}: {calls_per_step(direct)}")
    step = per_step(args.rounds)
    print(f"W1 step with the default callbacks ({args.rounds} interleaved rounds, median):")
    print(f"  direct {step['direct_us']:.1f} us   pluggy {step['pluggy_us']:.1f} us")
    print(f"  pluggy / direct: {step['ratio_pluggy_over_direct']:.3f} [{step['ratio_q1']:.3f}, {step['ratio_q3']:.3f}]")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
