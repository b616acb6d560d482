"""The ``pa-examples`` command: ``list`` the installed examples, ``run NAME [options]`` one of them.

    pa-examples list
    pa-examples run digits --help
    pa-examples run digits --epochs 10

Examples are found through the ``pa.examples`` entry-point group, so any distribution can add
its own: an entry point ``name = "package.module:main"`` naming a function ``main(argv)`` that
parses its own options (``argv`` is the list of arguments after the name) and whose module
docstring starts with a one-line summary. ``pa examples ...`` runs this command too.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from collections.abc import Sequence

from pa_core import plugins

__all__ = ["main", "summary"]


def summary(entry: plugins.PluginEntry) -> str:
    """The example module's one-line summary (its docstring's first paragraph), read without importing it."""
    module_name = entry.value.split(":", 1)[0].strip()
    try:
        spec = importlib.util.find_spec(module_name)
        source = spec.loader.get_source(module_name) if spec is not None and spec.loader is not None else None
        doc = ast.get_docstring(ast.parse(source)) if source else None
    except (ImportError, SyntaxError, ValueError) as error:
        return f"(cannot be read: {type(error).__name__}: {error})"
    if doc is None:  # no readable source (e.g. a compiled module): import it
        try:
            main = entry.load()
        except plugins.PluginError as error:
            return f"(cannot be loaded: {error})"
        doc = getattr(sys.modules.get(main.__module__), "__doc__", None) or main.__doc__
    if not doc or not doc.strip():
        return "(no description)"
    return " ".join(doc.strip().split("\n\n")[0].split())  # the first paragraph, on one line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pa-examples`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    examples = plugins.entries(plugins.EXAMPLES_GROUP)
    parser = argparse.ArgumentParser(
        prog="pa-examples",
        description="Runnable examples for pa.",
        epilog="Each example has its own options: pa-examples run NAME --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run}")
    commands.add_parser("list", help="name and one line for every installed example")
    run = commands.add_parser("run", help="run an example: pa-examples run NAME [its options]")
    run.add_argument("name", metavar="NAME", help=f"one of: {', '.join(sorted(examples)) or '(none installed)'}")
    run.add_argument("options", nargs=argparse.REMAINDER, help="the example's own options (NAME --help lists them)")
    args = parser.parse_args(argv)

    if args.command == "list":
        if not examples:
            print("No examples are installed (pip install pa-examples).")
            return 0
        width = max(len(name) for name in examples)
        for name, entry in sorted(examples.items()):
            print(f"{name:<{width}}  {summary(entry)}")
        return 0

    entry = examples.get(args.name)
    if entry is None:
        parser.exit(2, f"pa-examples: no example named {args.name!r}; installed: {', '.join(sorted(examples))}.\n")
    result = entry.load()(args.options)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    raise SystemExit(main())
