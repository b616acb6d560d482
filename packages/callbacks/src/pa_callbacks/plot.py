"""``pa plot``: draw the curves of a metrics file written by :class:`~pa_callbacks.MetricsFileCallback`.

::

    pa plot metrics.jsonl -o curves.png
    pa plot metrics.jsonl -o curves.png --metrics train_loss eval_loss_epoch --log-y

Every numeric metric is drawn against the optimizer step: losses on one panel, other metrics on
a second. Needs matplotlib (``pip install "pa-callbacks[plot]"``), imported only when plotting.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "plot_metrics", "read_metrics_file"]

#: Fields of every line that are not metrics.
RECORD_FIELDS = frozenset({"kind", "epoch", "step", "elapsed"})


def read_metrics_file(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """The ``(step, value)`` points of every numeric metric in a metrics file, sorted by step.

    A later line for the same metric and step replaces an earlier one (a resumed run rewrites
    the steps after its state). A last line cut short by a killed run is skipped.

    :raises ValueError: for a line that is not JSON (other than a cut-short last line), naming it.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    points: dict[str, dict[float, float]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                continue  # the last line of a run that was killed while writing it
            raise ValueError(f"{path}, line {number}: not a JSON object ({exc.msg}): {line[:80]!r}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
            continue
        step = record["step"]
        for name, value in record.items():
            if name not in RECORD_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
                points.setdefault(name, {})[step] = value
    return {name: sorted(by_step.items()) for name, by_step in sorted(points.items())}


def plot_metrics(
    curves: dict[str, list[tuple[float, float]]], output: str | Path, title: str | None = None, log_y: bool = False
) -> None:
    """Draw ``curves`` (from :func:`read_metrics_file`) and save the figure to ``output``.

    :raises ImportError: when matplotlib is not installed, saying how to install it.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('pa plot needs matplotlib: pip install "pa-callbacks[plot]"') from exc

    losses = {name: pts for name, pts in curves.items() if "loss" in name}
    others = {name: pts for name, pts in curves.items() if "loss" not in name}
    panels = [group for group in (losses, others) if group]
    figure = Figure(figsize=(8, 4 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, group, label in zip(axes, panels, ("loss" if losses else "value", "value")):
        for name, pts in group.items():
            steps, values = zip(*pts)
            ax.plot(steps, values, label=name, marker="o" if len(pts) <= 50 else None, markersize=3)
        if log_y and all(v > 0 for pts in group.values() for _, v in pts if math.isfinite(v)):
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        figure.suptitle(title)
    figure.savefig(output, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pa plot`` (a ``pa.commands`` entry point); returns the exit status."""
    parser = argparse.ArgumentParser(prog="pa plot", description="Plot a metrics file written by MetricsFileCallback.")
    parser.add_argument("metrics_file", type=Path, help="the JSON-lines file, e.g. metrics.jsonl")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("curves.png"), help="image to write (default: %(default)s)"
    )
    parser.add_argument("--metrics", nargs="+", metavar="NAME", help="plot only these metrics")
    parser.add_argument("--title", help="figure title (default: the file name)")
    parser.add_argument("--log-y", action="store_true", help="logarithmic y axis (when every value is positive)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    if not args.metrics_file.is_file():
        print(f"pa plot: {args.metrics_file} does not exist or is not a file.", file=sys.stderr)
        return 2
    try:
        curves = read_metrics_file(args.metrics_file)
    except ValueError as exc:
        print(f"pa plot: {exc}", file=sys.stderr)
        return 2
    if args.metrics:
        missing = sorted(set(args.metrics) - set(curves))
        if missing:
            print(
                f"pa plot: no values for {', '.join(missing)} in {args.metrics_file}; it has: "
                f"{', '.join(curves) or 'none'}.",
                file=sys.stderr,
            )
            return 2
        curves = {name: curves[name] for name in args.metrics}
    if not curves:
        print(f"pa plot: {args.metrics_file} holds no metric values to plot.", file=sys.stderr)
        return 1
    try:
        plot_metrics(curves, args.output, title=args.title or args.metrics_file.name, log_y=args.log_y)
    except ImportError as exc:
        print(f"pa plot: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {args.output} ({', '.join(curves)})")
    return 0
