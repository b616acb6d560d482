"""Saving that never leaves a torn file, and loading that never runs code from a file.

Every file pa loads goes through :func:`load_file`, and every way loading can fail ends in one
exception type, :class:`CheckpointError`, whose message names the file, says what is wrong with
it and what to do. The checks of what a loaded file holds (a checkpoint, an optimizer state, a
training-state folder) are functions here too, so each loader calls the same ones.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "UnsafeCheckpointError",
    "atomic_save",
    "check_checkpoint",
    "check_optimizer_state",
    "load_file",
    "load_model_state",
    "replace_directory",
    "safe_load",
]

# Parameter-group flags that torch adds over its versions and fills in itself when an older
# optimizer state is loaded: a state without them is not from another kind of optimizer.
_VERSION_FLAGS = frozenset({"foreach", "fused", "differentiable", "maximize", "capturable", "decoupled_weight_decay"})


class CheckpointError(Exception):
    """A file pa was asked to load cannot be used.

    The message names the file, says what is wrong with it and what to do. ``path`` holds the
    file (or folder) concerned.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None

    def __reduce__(self) -> tuple[Any, ...]:  # keep ``path`` across processes
        return (type(self), (self.args[0] if self.args else "", self.path))


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The file or training-state folder to load does not exist (also a ``FileNotFoundError``)."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
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


# ----------------------------------------------------------------------------------------
# Loading one file
# ----------------------------------------------------------------------------------------


def load_file(
    path: str | os.PathLike[str],
    what: str = "file",
    map_location: Any = "cpu",
    *,
    loader: Callable[..., Any] | None = None,
) -> Any:
    """``torch.load`` restricted to tensors, numbers, strings and containers (``weights_only``).

    :param path: the file to load.
    :param what: what the file is, for messages ("checkpoint", "optimizer state", ...).
    :param map_location: passed to the loader.
    :param loader: the loading function, called as ``loader(path, map_location=...,
        weights_only=True)``; ``torch.load`` by default (training-state files use Accelerate's
        loader, which also admits the NumPy random state).
    :raises CheckpointNotFoundError: when there is no such file.
    :raises UnsafeCheckpointError: when the file holds objects that loading could turn into code.
    :raises CheckpointError: for a folder, an empty, truncated or damaged file, or a file that
        ``torch.save`` did not write; the message says which, and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"Cannot load the {what} {os.fspath(path)!r}: there is no such file.", path)
    if path.is_dir():
        raise CheckpointError(
            f"Cannot load the {what} {os.fspath(path)!r}: it is a folder, not a file.{_folder_hint(path)}", path
        )
    load = loader or torch.load
    try:
        return load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise _explain_load_failure(path, what, exc) from exc


def safe_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """:func:`load_file` for a file of no particular kind (kept for existing callers)."""
    return load_file(path, "file", map_location)


def _folder_hint(path: Path) -> str:
    from pa_core.training_state import TRAINER_STATE_FILE

    if (path / TRAINER_STATE_FILE).is_file():
        return (
            " It holds a training state written by Trainer.save_training_state: load it with "
            "trainer.load_training_state(path), or continue its run with trainer.train(..., resume_from=path)."
        )
    return " Pass the path of the file inside it."


def _explain_load_failure(path: Path, what: str, exc: Exception) -> CheckpointError:
    name = os.fspath(path)
    detail = _first_line(exc)
    found = ""
    if isinstance(exc, pickle.UnpicklingError):
        found = _unsafe_detail(exc) if "Unsupported global" in str(exc) else _pickled_globals(path)
    if found:
        return UnsafeCheckpointError(
            f"Refusing to load the {what} {name!r}: it contains pickled objects other than tensors, numbers and "
            f"plain containers, and loading them could run code. What was found: {found}. If you "
            "created this file and trust it, load it yourself with torch.load(path, weights_only=False) and pass "
            "the parts you need to load_state_dict().",
            path,
        )
    size = path.stat().st_size
    if size == 0:
        return CheckpointError(
            f"Cannot load the {what} {name!r}: the file is empty (0 bytes), so it was never written completely "
            "(the process that saved it was killed, or the disk was full). Use an earlier copy, or save it again.",
            path,
        )
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return CheckpointError(
            f"Cannot load the {what} {name!r}: it starts like a file written by torch.save but cannot be read "
            f"({type(exc).__name__}: {detail}); it is truncated or damaged ({size} bytes), for example by an "
            "interrupted copy or a full disk. Use an earlier copy, or save it again.",
            path,
        )
    if len(head) > 8 and head[8:9] == b"{":
        return CheckpointError(
            f"Cannot load the {what} {name!r}: it is a safetensors file, not one written by torch.save. Load it "
            "with safetensors.torch.load_file(path) and pass the result to model.load_state_dict().",
            path,
        )
    return CheckpointError(
        f"Cannot load the {what} {name!r}: it is not a file written by torch.save (it starts with {head[:8]!r}, "
        f"and loading it failed with {type(exc).__name__}: {detail}). Check the path.",
        path,
    )


def _first_line(exc: BaseException) -> str:
    """The informative part of a loader's message: its first sentence, or for torch's restricted
    unpickler the reason it gives (its advice to load without restriction is not pa's)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return "no message"
    for index, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error") or "WeightsUnpickler error" in line:
            reason = line.split("WeightsUnpickler error:", 1)[-1].strip()
            return reason or (lines[index + 1] if index + 1 < len(lines) else line)
    return lines[0].split(". ")[0].rstrip(".")


def _pickled_globals(path: Path) -> str:
    """The classes and functions a pickle file refers to, read without unpickling it ("" when
    there are none or the file cannot be parsed). torch's restricted loader stops at the first
    opcode it does not support (plain ``pickle.dump`` files use some) before it sees them."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        found, strings = [], []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif opcode.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle we can read: no verdict
        return ""
    unsafe = sorted({g for g in found if not g.startswith(("torch.", "collections.OrderedDict"))})
    return ", ".join(f"GLOBAL {g}" for g in unsafe)


def _unsafe_detail(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            return line.strip().split(". Please use")[0]
    return _first_line(exc)


# ----------------------------------------------------------------------------------------
# What a checkpoint file holds
# ----------------------------------------------------------------------------------------


def check_checkpoint(content: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that ``content`` (loaded from ``path``) is a checkpoint written by
    ``Trainer.save_checkpoint``, and return it.

    :raises CheckpointError: for a plain ``model.state_dict()`` file (saying to use
        ``model.load_state_dict``), a dict without ``model_state_dict``, or anything else.
    """
    name = os.fspath(path)
    if not isinstance(content, dict):
        raise CheckpointError(
            f"Cannot load the checkpoint {name!r}: it holds a {type(content).__name__}, not the dict that "
            "Trainer.save_checkpoint writes. Load it with torch.load(path, weights_only=True) and use its content "
            "yourself.",
            path,
        )
    if "model_state_dict" in content:
        return content
    if content and all(isinstance(value, torch.Tensor) for value in content.values()):
        example = next(iter(content))
        raise CheckpointError(
            f"Cannot load the checkpoint {name!r}: it holds a plain state dict ({len(content)} tensors, such as "
            f"{example!r}), as written by torch.save(model.state_dict(), path), not a checkpoint written by "
            "Trainer.save_checkpoint. Load it into the model with "
            "model.load_state_dict(torch.load(path, weights_only=True)).",
            path,
        )
    keys = sorted(map(str, content))[:8]
    raise CheckpointError(
        f"Cannot load the checkpoint {name!r}: it has no 'model_state_dict' entry (its keys: {keys}), so it was not "
        "written by Trainer.save_checkpoint. Load it with torch.load(path, weights_only=True) and pass the model's "
        "weights to model.load_state_dict().",
        path,
    )


def load_model_state(model: torch.nn.Module, state: Any, path: str | os.PathLike[str]) -> None:
    """``model.load_state_dict(state)``, failing with a :class:`CheckpointError` that names ``path``
    when the weights do not fit the model (other keys or shapes)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"The model weights in {os.fspath(path)!r} do not fit this model ({type(model).__name__}): "
            f"{str(exc).strip()} The file was saved from a different model; build the model it was saved from "
            "(same architecture and sizes) before loading it.",
            path,
        ) from exc


def check_optimizer_state(
    optimizer: Any,
    state: Any,
    path: str | os.PathLike[str],
    skip_hint: str | None = "load_checkpoint(path, load_optimizer=False)",
) -> None:
    """Check that an optimizer state loaded from ``path`` fits ``optimizer`` before it is loaded.

    torch loads a state of another kind of optimizer without complaint (an SGD state into Adam)
    and the run then fails at its first step (``KeyError: 'betas'``). This compares the parameter
    groups: their number and sizes, and their hyperparameters (the keys of each group).

    :param skip_hint: how the caller can do without the optimizer state, for the message
        (None when it cannot).
    :raises CheckpointError: naming the file, what differs, and the optimizer types.
    """
    skip = f", or do not load the optimizer state ({skip_hint})" if skip_hint else ""
    name = os.fspath(path)
    if not (isinstance(state, dict) and isinstance(state.get("param_groups"), list) and "state" in state):
        found = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"Cannot load the optimizer state in {name!r}: it is not an optimizer.state_dict() (found {found}).",
            path,
        )
    current_type = _optimizer_type_name(optimizer)
    saved_groups, groups = state["param_groups"], optimizer.param_groups
    saved_sizes = [len(group.get("params", ())) for group in saved_groups]
    sizes = [len(group["params"]) for group in groups]
    if saved_sizes != sizes:
        raise CheckpointError(
            f"The optimizer state in {name!r} does not fit this optimizer: it has {len(saved_sizes)} parameter "
            f"group(s) of {saved_sizes} parameters, this {current_type} has {len(sizes)} of {sizes}. It was saved "
            "for a different model or different parameter groups; create the optimizer over the same "
            f"parameters{skip}.",
            path,
        )
    hyperparameters = _all_torch_hyperparameters()
    for index, (saved, group) in enumerate(zip(saved_groups, groups)):
        saved_keys = {key for key in saved if key != "params"}
        keys = {key for key in group if key != "params"}
        defaults = set(getattr(_unwrapped_optimizer(optimizer), "defaults", None) or keys)
        missing = sorted((defaults & keys) - saved_keys - _VERSION_FLAGS)
        foreign = sorted((saved_keys & hyperparameters) - keys)
        if not missing and not foreign:
            continue
        saved_type = _guess_optimizer_type(saved_keys)
        parts = []
        if foreign:
            parts.append(f"has {', '.join(foreign)}")
        if missing:
            parts.append(f"lacks {', '.join(missing)}, which this {current_type} needs")
        state_keys = _first_state_keys(state)
        held = f" (and its per-parameter state holds {', '.join(state_keys)})" if state_keys else ""
        fix = (
            f"Create the Trainer with {saved_type}, as the state was saved with"
            if saved_type
            else ("Create the Trainer with the optimizer type the state was saved with")
        )
        by = f"a {saved_type}" if saved_type else "another kind of optimizer"
        raise CheckpointError(
            f"The optimizer state in {name!r} was saved by {by}, not by a {current_type}: its parameter group "
            f"{index} {' and '.join(parts)}{held}. Loaded, it would fail at the first optimizer step. {fix}{skip}.",
            path,
        )


def _unwrapped_optimizer(optimizer: Any) -> Any:
    inner = getattr(optimizer, "optimizer", None)  # Accelerate's AcceleratedOptimizer wraps the real one
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def _optimizer_type_name(optimizer: Any) -> str:
    cls = type(_unwrapped_optimizer(optimizer))
    module = "torch.optim" if cls.__module__.startswith("torch.optim") else cls.__module__
    return f"{module}.{cls.__qualname__}"


@cache
def _torch_optimizer_keys() -> dict[str, frozenset[str]]:
    """The parameter-group keys of every optimizer in torch.optim, by class name."""
    keys = {}
    for name in dir(torch.optim):
        cls = getattr(torch.optim, name)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
            continue
        make: Any = cls  # each class has its own constructor arguments; the parameters alone suffice here
        try:
            group = make([torch.zeros(2, 2, requires_grad=True)]).param_groups[0]
        except Exception:  # an optimizer that needs arguments we cannot guess
            continue
        keys[name] = frozenset(key for key in group if key != "params")
    return keys


def _all_torch_hyperparameters() -> frozenset[str]:
    return frozenset().union(*_torch_optimizer_keys().values())


def _guess_optimizer_type(saved_keys: set[str]) -> str | None:
    """The torch.optim classes whose hyperparameters best match ``saved_keys`` ("torch.optim.Adam
    or torch.optim.AdamW"), or None when none matches."""
    saved = (saved_keys & _all_torch_hyperparameters()) - _VERSION_FLAGS
    scores: dict[str, float] = {}
    for name, keys in _torch_optimizer_keys().items():
        core = keys - _VERSION_FLAGS
        if core <= saved_keys:
            scores[name] = len(core) / len(core | saved)
    if not scores:
        return None
    best = max(scores.values())
    return " or ".join(f"torch.optim.{name}" for name, score in scores.items() if score == best)


def _first_state_keys(state: dict[str, Any]) -> list[str]:
    per_parameter = state.get("state")
    if isinstance(per_parameter, dict) and per_parameter:
        first = next(iter(per_parameter.values()))
        if isinstance(first, dict):
            return sorted(map(str, first))
    return []


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
