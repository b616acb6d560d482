"""Fail when the running environment holds a CUDA build of torch (the nvidia-* packages that come with one).

    python tools/check_torch.py

The nox sessions run it after every install on machines without a GPU (tools/nox_install.py): there, a CUDA
build means an install escaped constraints.txt or did not see the CPU wheel, and cost about 2 GB.
"""

from __future__ import annotations

import sys
from importlib import metadata


def cuda_packages() -> list[str]:
    """The installed distributions whose names start with ``nvidia-``."""
    names = {d.metadata["Name"] for d in metadata.distributions()}
    return sorted(name for name in names if name.lower().startswith("nvidia-"))


def main() -> int:
    found = cuda_packages()
    if not found:
        return 0
    try:
        torch = f"torch {metadata.version('torch')}"
    except metadata.PackageNotFoundError:
        torch = "something"
    print(
        f"check_torch: {torch} came with CUDA packages ({', '.join(found[:3])}, ...) on a machine without a GPU; "
        "every install must use constraints.txt and see the CPU wheel of torch (tools/nox_install.py says how)"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
