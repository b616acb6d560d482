"""Benchmarks pa against plain PyTorch, a hand-written Accelerate loop, pytorch-accelerated and Lightning.

    python benchmarks/run.py [--quick] [--out DIR] [--loops pa,lightning,...]

Workloads (one torch thread, CPU, data in memory):
    W1  overhead-bound: a 32->32->2 MLP at batch 32; a step costs tens of microseconds of compute, so the loop's own
        per-step Python work is what shows
    W2  compute-bound: a 512->1024->1024->10 MLP at batch 256, ~30 ms per step on a 2-core CPU
    W3  evaluation: the W1 model over 128 batches under no_grad (each framework's evaluate/validate)

How steps are timed: the model calls a clock at the start of every forward pass, i.e. once per step in every loop.
A run's step time is the mean interval between consecutive forward passes within an epoch, after the first
WARMUP_STEPS steps of each epoch (epoch boundaries excluded). The loops run interleaved: each round runs every loop
once in a fresh random order, and each loop's time is divided by the plain loop's time of the same round; medians
and quartiles are taken over the rounds. Time to first step is from the framework's train()/fit()/evaluate() call to
the first forward pass: in this process after warm-up runs ("warm"), and in fresh processes ("cold").

Also measured: Python function calls per steady-state step (sys.setprofile "call" events over 32 steps in the middle
of an epoch; deterministic apart from progress-bar refreshes), import time in fresh processes, and the peak memory
of a fresh process running one W1 training run.

Frameworks that are not installed are reported as such and skipped. Results: results.json and chart.png in --out
(default benchmarks/results/). See benchmarks/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loops import BASELINE, LOOPS, Loop, Stamped  # noqa: E402

HERE = Path(__file__).resolve().parent
WARMUP_STEPS = 5
CALLS_WINDOW = (20, 52)  # forward passes between which calls are counted: 32 steps in the middle of an epoch
IMPORTS = ("torch", "accelerate", "pa_core", "pytorch_accelerated", "lightning.pytorch")
DISTRIBUTIONS = ("torch", "accelerate", "pa-core", "pa-callbacks", "pytorch-accelerated", "lightning", "pluggy")


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    sizes: tuple[int, ...]  # layer widths: input, hidden..., classes
    batch_size: int
    steps_per_epoch: int
    epochs: int
    evaluate: bool
    rounds: int
    warmup: int = WARMUP_STEPS

    def make_model(self, clock) -> nn.Module:
        layers: list[nn.Module] = []
        for width_in, width_out in zip(self.sizes, self.sizes[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        return Stamped(nn.Sequential(*layers[:-1]), clock)

    def make_data(self) -> TensorDataset:
        generator = torch.Generator().manual_seed(0)
        n = self.batch_size * self.steps_per_epoch
        inputs = torch.randn(n, self.sizes[0], generator=generator)
        return TensorDataset(inputs, torch.randint(0, self.sizes[-1], (n,), generator=generator))


W2_SIZES = (512, 1024, 1024, 10)


def workloads(quick: bool) -> list[Workload]:
    def rounds(full: int, short: int) -> int:
        return short if quick else full

    return [
        Workload("W1", "overhead-bound: 32->32->2 MLP, batch 32", (32, 32, 2), 32, 64, 2, False, rounds(30, 3)),
        Workload(
            "W2", "compute-bound: 512->1024->1024->10 MLP, batch 256", W2_SIZES, 256, 16, 1, False, rounds(30, 2), 2
        ),
        Workload("W3", "evaluation: the W1 model, batch 32, no_grad", (32, 32, 2), 32, 128, 1, True, rounds(30, 3)),
    ]


# ------------------------------------------------------------------------------------------------
# One run of one loop
# ------------------------------------------------------------------------------------------------


class Clock:
    """Called by the model at the start of every forward pass: records when each step starts."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())


class CallCounter(Clock):
    """Counts Python function calls (by top-level package) between two forward passes."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop
        self.by_package: Counter[str] = Counter()
        self._package_of: dict[str, str] = {}

    def tick(self) -> None:
        n = len(self.stamps)
        super().tick()
        if n == self.start:
            sys.setprofile(self._profile)
        elif n == self.stop:
            sys.setprofile(None)

    def _profile(self, frame, event, arg) -> None:
        if event == "call":
            filename = frame.f_code.co_filename
            package = self._package_of.get(filename)
            if package is None:
                package = self._package_of[filename] = _package(filename)
            self.by_package[package] += 1

    @property
    def per_step(self) -> float:
        return sum(self.by_package.values()) / (self.stop - self.start)


KNOWN_PACKAGES = (
    "pa_core",
    "pa_callbacks",
    "pytorch_accelerated",
    "lightning",
    "accelerate",
    "torch",
    "tqdm",
    "pluggy",
)


def _package(filename: str) -> str:
    parts = Path(filename).parts
    for name in KNOWN_PACKAGES:
        if name in parts:
            return name
    if filename == str(HERE / "loops.py") or filename == __file__:
        return "benchmark"
    return "other"


@dataclass
class Run:
    started: float
    stamps: list[float]


@contextlib.contextmanager
def quiet():
    """Progress bars and messages go to /dev/null (the frameworks still produce them)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def run_once(loop: Loop, work: Workload, data: TensorDataset, clock: Clock | None = None) -> Run:
    clock = clock or Clock()
    torch.manual_seed(0)
    model = work.make_model(clock.tick)
    started = []
    gc.collect()
    with quiet():
        if work.evaluate:
            loop.evaluate(model, data, work.batch_size, lambda: started.append(time.perf_counter()))
        else:
            loop.train(model, data, work.batch_size, work.epochs, lambda: started.append(time.perf_counter()))
    expected = work.steps_per_epoch * (1 if work.evaluate else work.epochs)
    if len(clock.stamps) != expected:
        raise RuntimeError(f"{loop.name} on {work.key}: {len(clock.stamps)} forward passes, expected {expected}")
    return Run(started[0], clock.stamps)


def step_time(run: Run, work: Workload) -> float:
    """Mean time per step within epochs, after the first ``work.warmup`` steps of each."""
    spe, total, count = work.steps_per_epoch, 0.0, 0
    for first in range(0, len(run.stamps), spe):
        total += run.stamps[first + spe - 1] - run.stamps[first + work.warmup]
        count += spe - 1 - work.warmup
    return total / count


# ------------------------------------------------------------------------------------------------
# Interleaved, paired rounds
# ------------------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    median = statistics.median(values)
    return {"median": median, "q1": q1, "q3": q3, "min": values[0], "max": values[-1], "n": len(values)}


def measure(work: Workload, loops: list[Loop], rng: random.Random) -> dict:
    loops = [loop for loop in loops if work.evaluate is False or loop.evaluate is not None]
    loops = [loop for loop in loops if not (loop.overhead_only and work.key != "W1")]
    data = make_data_cached(work)
    for loop in loops:  # warm-up: first-call costs (lazy imports, allocator) are not steady-state
        run_once(loop, work, data)
    steps: dict[str, list[float]] = {loop.name: [] for loop in loops}
    first: dict[str, list[float]] = {loop.name: [] for loop in loops}
    for _ in range(work.rounds):
        order = loops[:]
        rng.shuffle(order)
        for loop in order:
            run = run_once(loop, work, data)
            steps[loop.name].append(step_time(run, work))
            first[loop.name].append(run.stamps[0] - run.started)
    result = {}
    for loop in loops:
        name = loop.name
        entry = {"step_s": summary(steps[name]), "first_step_s": summary(first[name])}
        for reference in (BASELINE, "accelerate"):
            if reference in steps:
                ratios = [mine / theirs for mine, theirs in zip(steps[name], steps[reference])]
                entry[f"ratio_vs_{reference}"] = summary(ratios)
        result[name] = entry
    steps_per_run = work.steps_per_epoch * (1 if work.evaluate else work.epochs)
    return {"title": work.title, "rounds": work.rounds, "steps_per_run": steps_per_run, "loops": result}


_data_cache: dict[str, TensorDataset] = {}


def make_data_cached(work: Workload) -> TensorDataset:
    if work.key not in _data_cache:
        _data_cache[work.key] = work.make_data()
    return _data_cache[work.key]


def calls_per_step(work: Workload, loops: list[Loop]) -> dict:
    result = {}
    for loop in loops:
        if (work.evaluate and loop.evaluate is None) or loop.overhead_only:
            continue
        counter = CallCounter(*CALLS_WINDOW)
        try:
            run_once(loop, work, make_data_cached(work), counter)
        finally:
            sys.setprofile(None)
        result[loop.name] = {"total": counter.per_step, "by_package": _per_step(counter)}
    return result


def _per_step(counter: CallCounter) -> dict[str, float]:
    steps = counter.stop - counter.start
    return {name: count / steps for name, count in counter.by_package.most_common()}


# ------------------------------------------------------------------------------------------------
# Fresh processes: import time, cold time to first step, peak memory
# ------------------------------------------------------------------------------------------------


def import_times(repeats: int) -> dict:
    """``python -X importtime -c "import X"`` in fresh processes, interleaved; the first pass warms the file cache."""
    modules = [m for m in IMPORTS if importlib.util.find_spec(m.split(".")[0]) is not None]
    times: dict[str, list[float]] = {m: [] for m in modules}
    extra: list[float] = []  # self time of the modules pa_core imports that accelerate does not
    for repeat in range(repeats + 1):
        self_times = {}
        for module in modules:
            out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True)
            if out.returncode:
                raise RuntimeError(f"import {module} failed:\n{out.stderr.decode()}")
            self_times[module] = _parse_importtime(out.stderr.decode(), module)
            if repeat:
                times[module].append(self_times[module][module] / 1e6)
        if repeat and "pa_core" in modules and "accelerate" in modules:
            pa, acc = self_times["pa_core"], self_times["accelerate"]
            extra.append(sum(us for name, us in pa.items() if name not in acc and name != "pa_core") / 1e6)
    result = {m: summary(t) for m, t in times.items()}
    if extra:
        result["pa_core - accelerate"] = summary([p - a for p, a in zip(times["pa_core"], times["accelerate"])])
        result["modules pa_core adds"] = summary(extra)
    return result


def _parse_importtime(stderr: str, module: str) -> dict[str, int]:
    """Module name -> self time in microseconds, except ``module`` itself -> its cumulative time."""
    times = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, cumulative_us, name = (part.strip() for part in line[len("import time:") :].split("|"))
            times[name] = int(cumulative_us) if name == module else int(self_us)
    return times


def fresh_process_runs(loops: list[Loop], repeats: int) -> dict:
    result = {}
    for loop in loops:
        runs = []
        for _ in range(repeats):
            command = [sys.executable, __file__, "--child", loop.name]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"{loop.name} in a fresh process failed:\n{out.stderr[-3000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        result[loop.name] = {key: summary([r[key] for r in runs]) for key in runs[0]}
    return result


def child(name: str) -> None:
    """In a fresh process: import the framework, then one W1 training run; print what it cost."""
    loop = next(loop for loop in LOOPS if loop.name == name)
    if loop.requires:
        importlib.import_module(loop.requires)
    work = workloads(quick=True)[0]
    data = work.make_data()
    rss_before = _memory_status("VmRSS")
    run = run_once(loop, work, data)
    peak = _memory_status("VmHWM")  # this process's peak resident memory (ru_maxrss would include the parent's)
    tracemalloc.start()  # a second run, traced: the Python objects a framework allocates while training
    run_once(loop, work, data)
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    result = {
        "first_step_s": run.stamps[0] - run.started,
        "peak_rss_mb": peak / 2**20,
        "rss_growth_in_run_mb": (peak - rss_before) / 2**20,
        "python_heap_peak_mb": python_peak / 2**20,
    }
    print(json.dumps(result))


def _memory_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def _fmt(s: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{s['median'] * scale:.{digits}f} [{s['q1'] * scale:.{digits}f}-{s['q3'] * scale:.{digits}f}]"


def print_report(results: dict) -> None:
    meta = results["meta"]
    print(f"\n{meta['date']}  {meta['machine']['cpu']}, {meta['machine']['cpus']} CPUs, one torch thread")
    print(f"load average before/after: {meta['load_before']} / {meta['load_after']}; wall time {meta['wall_s']:.0f} s")
    print("medians [first-third quartile] over interleaved rounds; ratios are paired with plain in the same round\n")
    for key, work in results["workloads"].items():
        print(f"{key} {work['title']}  ({work['rounds']} rounds, {work['steps_per_run']} steps per run)")
        print(f"  {'loop':<28}{'step (us)':<24}{'vs plain':<20}{'vs accelerate':<20}{'train() to 1st step (ms)'}")
        for name, entry in work["loops"].items():
            vs_acc = _fmt(entry["ratio_vs_accelerate"]) if "ratio_vs_accelerate" in entry else "-"
            print(
                f"  {name:<28}{_fmt(entry['step_s'], 1e6, 1):<24}{_fmt(entry['ratio_vs_plain']):<20}{vs_acc:<20}"
                f"{_fmt(entry['first_step_s'], 1e3, 1)}"
            )
        print()
    for key, calls in results["calls_per_step"].items():
        print(f"Python calls per steady-state step, {key}:")
        for name, entry in calls.items():
            parts = ", ".join(f"{p} {n:.0f}" for p, n in entry["by_package"].items() if n >= 1)
            print(f"  {name:<28}{entry['total']:>7.0f}   ({parts})")
        print()
    print("Fresh process, one W1 run (median [quartiles]):")
    header = f"{'train() to 1st step (ms)':<28}{'peak RSS (MB)':<16}{'RSS growth in run':<20}Python heap peak (MB)"
    print(f"  {'loop':<28}{header}")
    for name, entry in results["fresh_process"].items():
        print(
            f"  {name:<28}{_fmt(entry['first_step_s'], 1e3, 1):<28}{entry['peak_rss_mb']['median']:<16.0f}"
            f"{entry['rss_growth_in_run_mb']['median']:<20.1f}{entry['python_heap_peak_mb']['median']:.2f}"
        )
    print("\nImport time in a fresh process, python -X importtime (ms):")
    for module, entry in results["imports"].items():
        print(f"  {module:<28}{_fmt(entry, 1e3, 0):<24}min {entry['min'] * 1e3:.0f}")
    if results["not_installed"]:
        print(f"\nnot installed, skipped: {', '.join(results['not_installed'])}")


def chart(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = list(results["workloads"])
    names = list(results["workloads"][keys[0]]["loops"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, ys, errors = [], [], [[], []]
        for k, key in enumerate(keys):
            entry = results["workloads"][key]["loops"].get(name)
            if entry:
                r = entry["ratio_vs_plain"]
                xs.append(k + (i - (len(names) - 1) / 2) * width)
                ys.append(r["median"])
                errors[0].append(r["median"] - r["q1"])
                errors[1].append(r["q3"] - r["median"])
        left.bar(xs, ys, width, yerr=errors, capsize=2, label=name)
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_xticks(range(len(keys)), [f"{k}\n{results['workloads'][k]['title'].split(':')[0]}" for k in keys])
    left.set_ylabel("step time / plain PyTorch (median, IQR)")
    left.legend(fontsize=8)
    calls = results["calls_per_step"].get("W1", {})
    right.barh(list(calls), [c["total"] for c in calls.values()], color="gray")
    right.invert_yaxis()
    right.set_xlabel("Python calls per step (W1)")
    meta = results["meta"]
    fig.suptitle(f"pa benchmarks, {meta['date'][:10]}, {meta['machine']['cpu']}, 1 torch thread", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ------------------------------------------------------------------------------------------------


def setup() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("PA_DISABLE_PLUGIN_AUTOLOAD", "1")  # measure pa itself, not plugins installed nearby
    warnings.simplefilter("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: checks that everything runs (~1 minute)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where results.json and chart.png go")
    parser.add_argument("--loops", help="comma-separated subset of: " + ", ".join(loop.name for loop in LOOPS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup()
    if args.child:
        child(args.child)
        return

    wanted = set(args.loops.split(",")) | {BASELINE} if args.loops else {loop.name for loop in LOOPS}
    unknown = wanted - {loop.name for loop in LOOPS}
    if unknown:
        parser.error(f"unknown loops: {', '.join(sorted(unknown))}")
    chosen = [loop for loop in LOOPS if loop.name in wanted]
    loops = [loop for loop in chosen if loop.installed]
    not_installed = [loop.name for loop in chosen if not loop.installed]
    for name in not_installed:
        print(f"{name}: not installed, skipped")

    start = time.monotonic()
    results: dict = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "machine": machine(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
        },
        "workloads": {},
        "calls_per_step": {},
    }
    rng = random.Random(0)
    for work in workloads(args.quick):
        print(f"{work.key}: {work.rounds} interleaved rounds ...", flush=True)
        results["workloads"][work.key] = measure(work, loops, rng)
        if work.key in ("W1", "W3"):
            results["calls_per_step"][work.key] = calls_per_step(work, loops)
    print("fresh processes: first step, memory, import time ...", flush=True)
    results["fresh_process"] = fresh_process_runs(
        [loop for loop in loops if not loop.overhead_only], 1 + 2 * (not args.quick)
    )
    results["imports"] = import_times(2 if args.quick else 7)
    results["not_installed"] = not_installed
    results["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["wall_s"] = time.monotonic() - start

    print_report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    drew = chart(results, args.out / "chart.png")
    print(
        f"\nwrote {args.out / 'results.json'}"
        + (f" and {args.out / 'chart.png'}" if drew else " (no matplotlib: no chart)")
    )


if __name__ == "__main__":
    main()
