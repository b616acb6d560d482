"""Print the distributions installed in the running environment that the named requirements do not need.

    python tools/prune_env.py pa-callbacks[plot] pytest numpy

The nox sessions reuse their virtual environments between runs (`nox -r`, the default in noxfile.py); the
session uninstalls what this prints (tools/nox_packaging.py), which makes a reused environment as clean as a
fresh one: only the named requirements, what they declare (transitively, markers and extras honoured), and
pip's own tools stay. A dependency that a distribution stopped declaring is removed, so its tests fail instead
of passing on a leftover. It prints names only (one per line, nothing when all is needed), and uninstalls
nothing itself: an environment made by uv has no pip, so the session uninstalls with the tool it installs with.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ALWAYS_KEPT = {"pip", "setuptools", "wheel"}


def needed(roots: list[str]) -> tuple[set[str], set[str]]:
    """(every installed distribution, those the ``roots`` requirements need), by canonical name."""
    installed = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()}
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in map(Requirement, roots)]
    seen: set[tuple[str, frozenset[str]]] = set()
    keep: set[str] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        keep.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return installed, keep


def main(roots: list[str]) -> int:
    installed, keep = needed(roots)
    for name in sorted(installed - keep - ALWAYS_KEPT):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
