"""Start your own pa plugin package from a template: a pyproject, one module, a README and tests.

The template, ``pa-epoch-timer``, is a complete distribution. Its callback records how long each
epoch takes; its ``pyproject.toml`` publishes it in the ``pa.callbacks`` catalogue (so a Trainer
can name it: ``callbacks=[..., "epoch-timer"]``) and adds a runnable example to
``pa-examples list``; a commented-out ``pa.plugins`` entry shows how a plugin would add itself
to every Trainer instead.

Without options this prints where the template is and what it holds; ``--to DIR`` writes a
ready-to-install copy to DIR:

    pa-examples run plugin-template --to my-plugin
    pip install -e my-plugin
    pa plugins                            # epoch-timer is listed under pa.callbacks
    pa-examples run epoch-timer-demo
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["copy_template", "main", "template_files", "template_root"]

TEMPLATE_NAME = "pa-epoch-timer"
#: The template's files are stored with this suffix, so that neither build tools nor test runners
#: mistake the copy inside pa-examples for a real project; ``--to`` writes them without it.
SUFFIX = ".tmpl"


def template_root() -> Traversable:
    """The folder of the template inside the installed pa-examples."""
    return resources.files("pa_examples") / "templates" / TEMPLATE_NAME


def template_files(folder: Traversable | None = None, prefix: str = "") -> dict[str, str]:
    """Every file of the template: its path in a copy (``/``-separated, suffix removed) -> its text."""
    folder = template_root() if folder is None else folder
    files: dict[str, str] = {}
    for item in sorted(folder.iterdir(), key=lambda item: item.name):
        if item.is_dir():
            if item.name != "__pycache__":
                files.update(template_files(item, f"{prefix}{item.name}/"))
        elif item.name.endswith(SUFFIX):
            files[prefix + item.name[: -len(SUFFIX)]] = item.read_text(encoding="utf-8")
    return files


def copy_template(destination: str | Path) -> list[Path]:
    """Write the template to ``destination`` (which must not exist or be empty); return the files."""
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise SystemExit(f"{destination} already exists and is not empty; choose a new folder for --to.")
    written = []
    for relative_path, text in template_files().items():
        path = destination / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> Path | None:
    """Show the template, or copy it with ``--to``; return the copy's folder (or None)."""
    parser = argparse.ArgumentParser(prog="pa-examples run plugin-template", description=__doc__.splitlines()[0])
    parser.add_argument("--to", metavar="DIR", help="write a copy of the template to this new folder")
    parser.add_argument("--fast", action="store_true", help="accepted for symmetry with the other examples")
    args = parser.parse_args(argv)

    if args.to is None:
        print(f"The {TEMPLATE_NAME} plugin template is in {template_root()} (files stored with a {SUFFIX} suffix):")
        for relative_path in template_files():
            print(f"  {relative_path}")
        print("\nWrite a ready-to-use copy with: pa-examples run plugin-template --to DIR")
        return None

    destination = Path(args.to)
    written = copy_template(destination)
    print(f"Wrote the {TEMPLATE_NAME} plugin template to {destination}:")
    for path in written:
        print(f"  {path.relative_to(destination).as_posix()}")
    next_steps = [
        (f"pip install -e {destination}", "install it (editable) next to pa"),
        ("pa plugins", "epoch-timer is listed under pa.callbacks"),
        ("pa-examples run epoch-timer-demo", "its example, found through the pa.examples entry point"),
        (f"pip install -e '{destination}[test]' && pytest {destination}", "its tests"),
    ]
    width = max(len(command) for command, _ in next_steps)
    print("\nNext:")
    for command, explanation in next_steps:
        print(f"  {command:<{width}}  # {explanation}")
    print("Then rename it and write your own hooks (see its README and pa_core.hookspecs).")
    return destination


if __name__ == "__main__":
    main()
