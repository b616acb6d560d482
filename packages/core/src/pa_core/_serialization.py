"""Saving that never leaves a torn file, and loading that never runs code from a file."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeCheckpointError", "atomic_save", "replace_directory", "safe_load"]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A file holds pickled objects that pa will not load, because loading them could run code."""


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then move it into place.

    A process killed at any moment leaves either the previous file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def safe_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors, numbers, strings and containers.

    Raises :class:`UnsafeCheckpointError`, naming what was found, for anything else.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"Refusing to load {os.fspath(path)!r}: it contains pickled objects other than tensors and plain "
            f"containers, and loading them could run code. What was found: {str(exc).splitlines()[0]}. "
            "If you created this file and trust it, load it yourself with "
            "torch.load(path, weights_only=False) and pass the parts you need to load_state_dict()."
        ) from exc


def replace_directory(new_dir: Path, final_dir: Path) -> None:
    """Move a completely written ``new_dir`` to ``final_dir``, replacing any previous one.

    The previous directory is only removed once the new one is in place.
    """
    old_dir = final_dir.with_name(final_dir.name + ".old")
    if old_dir.exists():
        shutil.rmtree(old_dir)
    if final_dir.exists():
        os.replace(final_dir, old_dir)
    os.replace(new_dir, final_dir)
    if old_dir.exists():
        shutil.rmtree(old_dir)
