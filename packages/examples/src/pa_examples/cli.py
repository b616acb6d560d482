"""The `pa-examples` command: `list` the examples, `run NAME [options]` one of them.

Examples are found through the `pa.examples` entry-point group, so other distributions can add
theirs: an entry point `name = "package.module:main"` naming a `main(argv)` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pa_core import _plugins


def _summary(entry: _plugins.PluginEntry) -> str:
    try:
        main = entry.load()
    except _plugins.PluginError as error:
        return f"(cannot be loaded: {error})"
    module = sys.modules.get(main.__module__)
    doc = (module.__doc__ if module else None) or main.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pa-examples` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    examples = _plugins.entries(_plugins.EXAMPLES_GROUP)
    parser = argparse.ArgumentParser(prog="pa-examples", description="Runnable examples for pa.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="name and one line for every installed example")
    run = sub.add_parser("run", help="run an example: pa-examples run NAME [its options] (NAME --help lists them)")
    run.add_argument("name", choices=sorted(examples))
    if len(argv) >= 2 and argv[0] == "run" and argv[1] in examples:
        result = examples[argv[1]].load()(argv[2:])
        return 0 if result is None or not isinstance(result, int) else result
    args = parser.parse_args(argv)
    if args.command == "list":
        width = max((len(name) for name in examples), default=0)
        for name, entry in sorted(examples.items()):
            print(f"{name:<{width}}  {_summary(entry)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
