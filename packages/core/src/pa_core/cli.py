"""The ``pa`` command: ``pa plugins``, ``pa state inspect|latest FOLDER``, ``pa --version``, and
subcommands that other distributions add through the ``pa.commands`` entry-point group
(``pa plot`` from pa-callbacks).

A ``pa.commands`` entry point names a function ``main(argv: list[str]) -> int | None``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pa_core import hookspecs, plugins
from pa_core.__about__ import __version__

COMMANDS_GROUP = "pa.commands"


def _implemented_hooks(obj: object) -> list[str]:
    if isinstance(obj, type):
        names = [n for n in dir(obj) if n in hookspecs.HOOK_NAMES]
        marker = f"{hookspecs.PROJECT_NAME}_impl"
        from pa_core.callbacks import TrainerCallback

        if issubclass(obj, TrainerCallback):
            return [n for n in names if getattr(obj, n) is not getattr(TrainerCallback, n)]
        return [n for n in names if hasattr(getattr(obj, n), marker)]
    return [n for n in hookspecs.HOOK_NAMES if hasattr(obj, n)]


def list_plugins(load: bool = True) -> list[dict[str, object]]:
    """Every installed pa entry point: name, group, distribution, version and (when
    ``load``) the hooks it implements or the error that loading it raised."""
    rows: list[dict[str, object]] = []
    for group in (*plugins.GROUPS, COMMANDS_GROUP):
        for name, entry in sorted(plugins.entries(group).items()):
            row: dict[str, object] = {
                "name": name,
                "group": group,
                "distribution": entry.distribution,
                "version": entry.version,
                "value": entry.value,
            }
            if load and group in (plugins.CALLBACKS_GROUP, plugins.PLUGINS_GROUP):
                try:
                    row["hooks"] = _implemented_hooks(entry.load())
                except plugins.PluginError as exc:
                    row["error"] = str(exc)
            rows.append(row)
    return rows


def _print_plugins() -> int:
    rows = list_plugins()
    if not rows:
        print("No pa plugins are installed. pip install pa-callbacks for the built-in callbacks.")
        return 0
    failed = 0
    for group in (*plugins.GROUPS, COMMANDS_GROUP):
        group_rows = [r for r in rows if r["group"] == group]
        if not group_rows:
            continue
        print(f"{group}:")
        for row in group_rows:
            print(f"  {row['name']:<24} {row['distribution']} {row['version']}  ({row['value']})")
            if "hooks" in row:
                print(f"  {'':<24} hooks: {', '.join(row['hooks']) or '(none)'}")  # type: ignore[arg-type]
            if "error" in row:
                failed += 1
                print(f"  {'':<24} ERROR: {row['error']}")
    autoload_off = plugins.DISABLE_AUTOLOAD_ENV
    print(
        f"\nAutoload of {plugins.PLUGINS_GROUP}: set {autoload_off}=1 to turn it off, "
        f"{plugins.DISABLE_PLUGINS_ENV}=a,b to skip some."
    )
    return 1 if failed else 0


def _state_command(action: str, folder: str) -> int:
    """``pa state inspect FOLDER`` / ``pa state latest FOLDER``."""
    from pa_core._serialization import CheckpointError
    from pa_core.training_state import is_training_state, latest_training_state, read_training_state

    latest = latest_training_state(folder)
    if action == "latest":
        if latest is None:
            print(f"No complete training state in {folder!r}.", file=sys.stderr)
            return 1
        print(latest)
        return 0
    path = Path(folder)
    if is_training_state(path) or path.with_name(path.name + ".old").is_dir() or latest is None:
        targets = [path]
    else:  # a folder of states (SaveTrainingStateCallback's save_dir): each, the newest last
        targets = sorted(
            (p for p in path.iterdir() if p.is_dir() and is_training_state(p)), key=lambda p: (p == latest, p.name)
        )
    status = 0
    for index, target in enumerate(targets):
        try:
            info = read_training_state(target)
        except CheckpointError as error:
            print(error, file=sys.stderr)
            status = 1
            continue
        if index:
            print()
        print(info.describe())
        if len(targets) > 1 and target == latest:
            print("  (the newest complete state here: what latest_training_state returns)")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pa`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = plugins.entries(COMMANDS_GROUP)
    parser = argparse.ArgumentParser(prog="pa", description="pa: PyTorch training loops with plugins.")
    parser.add_argument("--version", action="store_true", help="show the versions of the installed pa distributions")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("plugins", help="list installed callbacks, plugins, examples and commands")
    state = sub.add_parser("state", help="describe training states (inspect FOLDER) or find the newest (latest FOLDER)")
    state.add_argument("action", choices=("inspect", "latest"))
    state.add_argument("folder", help="a training-state folder, or a folder of them")
    for name, entry in sorted(extra.items()):
        sub.add_parser(name, help=f"(from {entry.distribution})", add_help=False)
    if argv and argv[0] in extra:
        return extra[argv[0]].load()(argv[1:]) or 0
    args = parser.parse_args(argv)
    if args.version:
        print(f"pa-core {__version__}")
        for dist in plugins._distributions():
            name = dist.metadata["Name"]
            if name.startswith("pa-") and name != "pa-core":
                print(f"{name} {dist.version}")
        return 0
    if args.command == "plugins":
        return _print_plugins()
    if args.command == "state":
        return _state_command(args.action, args.folder)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
