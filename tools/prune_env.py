"""Uninstall every distribution in the running environment that the named requirements do not need.

    python tools/prune_env.py pa-callbacks pytest numpy

The nox sessions that test built wheels reuse their virtual environments between runs (installing torch
into a fresh one takes most of a minute); this makes a reused environment as clean as a fresh one: after it
runs, only the named requirements, what they declare (transitively, markers and extras honoured), and pip
itself are installed. A dependency that a distribution stopped declaring is removed, so its tests fail
instead of passing on a leftover.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ALWAYS_KEPT = {"pip", "setuptools", "wheel"}


def needed(roots: list[str]) -> tuple[set[str], set[str]]:
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
    extra = sorted(installed - keep - ALWAYS_KEPT)
    if extra:
        print(f"prune_env: uninstalling what {', '.join(roots)} do not need: {', '.join(extra)}")
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", *extra], check=True)
    else:
        print("prune_env: nothing to remove")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
