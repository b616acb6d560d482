"""The training-state folder: what ``Trainer.save_training_state`` writes and
``train(resume_from=...)`` reads, in one place.

A training state is a folder holding:

- what Accelerate's ``save_state`` writes: the model (``model.safetensors``, or sharded files
  for FSDP and DeepSpeed), the optimizer (``optimizer.bin``), the gradient scaler, the data
  samplers and one ``random_states_<rank>.pkl`` per process;
- ``pa_data_position_<rank>.pt`` per process, when the training data is an iterable dataset
  that can save its position;
- ``pa_trainer_state.pt``, pa's metadata: format version, when it was saved, the world size and
  per-device batch size it was saved with, the epoch and position in it, the run history, the
  scheduler and callback states and the user's ``checkpoint_kwargs``. It is written last, so a
  folder that has it is complete.

A folder is written under a temporary name (``<name>.incomplete``) and renamed into place when
every process has finished, so a reader never sees half of one. A save killed while swapping
an older state out leaves that older state in ``<name>.old``, which readers fall back on.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pa_core._serialization import (
    CheckpointError,
    CheckpointNotFoundError,
    _first_line,
    atomic_save,
    check_optimizer_state,
    load_file,
    replace_directory,
    safe_load,
)
from pa_core.tracking import sum_over_processes

if TYPE_CHECKING:
    from pa_core.trainer import Trainer

__all__ = [
    "TRAINER_STATE_FILE",
    "TrainingStateInfo",
    "latest_training_state",
    "read_training_state",
]

#: 1: round one (no world size); 2: world size, batch size, time, train_done, data positions.
FORMAT_VERSION = 2
#: pa's own file in a training-state folder: epoch, step, run history, scheduler and callback states.
TRAINER_STATE_FILE = "pa_trainer_state.pt"

# What each file of a training state holds, for messages (Accelerate's names, then pa's).
_STATE_FILE_KINDS = (
    ("model", "model weights"),
    ("pytorch_model", "model weights"),
    ("optimizer", "optimizer state"),
    ("random_states", "random-number-generator state"),
    ("scaler", "gradient-scaler state"),
    ("scheduler", "scheduler state"),
    ("sampler", "sampler state"),
    ("dl_state_dict", "data-loader state"),
    ("custom_checkpoint", "custom object state"),
    (TRAINER_STATE_FILE.split(".")[0], "trainer state file"),
)


INCOMPLETE_SUFFIX = ".incomplete"
PREVIOUS_SUFFIX = ".old"


def data_position_file(rank: int) -> str:
    """The file holding process ``rank``'s position in an iterable training dataset."""
    return f"pa_data_position_{rank}.pt"


@dataclass(frozen=True)
class TrainingStateInfo:
    """What a training-state folder says about itself (:func:`read_training_state`)."""

    path: Path
    format: int
    epoch: int
    num_updates: int
    epoch_step: int
    epoch_done: bool
    world_size: int | None
    per_device_batch_size: int | None
    saved_at: float | None
    pa_version: str | None
    checkpoint_kwargs: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def describe(self) -> str:
        """A few readable lines, as ``pa state inspect`` prints them."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at)) if self.saved_at else "unknown"
        where = "at the end of the epoch" if self.epoch_done else f"after {self.epoch_step} steps of it"
        unknown = "unknown"
        lines = [
            f"training state {os.fspath(self.path)}",
            f"  saved:             {when} (format {self.format}, pa {self.pa_version or unknown})",
            f"  epoch:             {self.epoch} ({where})",
            f"  optimizer updates: {self.num_updates}",
            f"  world size:        {self.world_size if self.world_size is not None else unknown}",
            f"  per-device batch:  {self.per_device_batch_size if self.per_device_batch_size is not None else unknown}",
        ]
        if self.checkpoint_kwargs:
            lines.append(f"  checkpoint_kwargs: {self.checkpoint_kwargs}")
        lines.append("  files:             " + ", ".join(self.files))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Finding and reading
# ----------------------------------------------------------------------------------------


def is_training_state(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete training-state folder."""
    return (Path(path) / TRAINER_STATE_FILE).is_file() and not Path(path).name.endswith(INCOMPLETE_SUFFIX)


def find_training_state(path: str | os.PathLike[str], argument: str = "resume_from") -> Path:
    """The complete training state at ``path``, or the previous one kept in ``path.old`` when a
    save was killed while swapping the folders. ``argument`` names the caller's parameter in errors."""
    path = Path(path)
    if is_training_state(path):
        return path
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    if not path.exists() and is_training_state(previous):
        warnings.warn(
            f"{os.fspath(path)!r} is missing because a save was interrupted; using the previous complete state in "
            f"{os.fspath(previous)!r}.",
            UserWarning,
            stacklevel=3,
        )
        return previous
    if path.is_dir() and latest_training_state(path) is not None:
        hint = f" It holds training states: pass resume_from=latest_training_state({os.fspath(path)!r})."
    elif path.with_name(path.name + INCOMPLETE_SUFFIX).exists():
        hint = " Only an incomplete save of it exists (the process was stopped while saving)."
    else:
        hint = ""
    what = "does not exist" if not path.exists() else f"has no {TRAINER_STATE_FILE} in it"
    raise CheckpointNotFoundError(
        f"{argument}={os.fspath(path)!r} is not a training state written by Trainer.save_training_state (the "
        f"folder {what}).{hint or ' Pass a folder written by save_training_state, or None to start a new run.'}",
        path,
    )


def latest_training_state(folder: str | os.PathLike[str]) -> Path | None:
    """The newest complete training state in ``folder`` (the folder itself or one directly in
    it), or None when there is none, so that one line serves a first start and every restart::

        trainer.train(..., resume_from=latest_training_state("training_states"))

    States are those written by ``SaveTrainingStateCallback``, by a preemption stop
    (``Trainer.preemption_save_dir``) or by ``save_training_state``; a folder still being
    written (or left half-written by a killed process) is never returned. "Newest" is the time
    of saving recorded in the state.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = [folder, *(p for p in folder.iterdir() if p.is_dir())]
    complete = [p for p in candidates if is_training_state(p)]
    for path in candidates:  # a save killed mid-swap leaves only the previous state, in NAME.old
        if path.name.endswith(PREVIOUS_SUFFIX) and is_training_state(path):
            if not path.with_name(path.name[: -len(PREVIOUS_SUFFIX)]).exists():
                complete.append(path)
    if not complete:
        return None
    return max(complete, key=_saved_at)


def _saved_at(path: Path) -> tuple[float, float]:
    try:
        saved_at = float(read_trainer_state(path).get("saved_at") or 0.0)
    except (CheckpointError, OSError):
        saved_at = 0.0
    return saved_at, (path / TRAINER_STATE_FILE).stat().st_mtime


def read_training_state(path: str | os.PathLike[str]) -> TrainingStateInfo:
    """Describe a training-state folder without loading its weights."""
    path = find_training_state(path, argument="path")
    metadata = read_trainer_state(path)
    position = metadata.get("position", {})
    return TrainingStateInfo(
        path=path,
        format=metadata.get("format", 1),
        epoch=metadata["epoch"],
        num_updates=position.get("num_updates", 0),
        epoch_step=position.get("epoch_step", position.get("batches_done", 0)),
        epoch_done=bool(position.get("epoch_done", False)),
        world_size=metadata.get("world_size"),
        per_device_batch_size=metadata.get("per_device_batch_size"),
        saved_at=metadata.get("saved_at"),
        pa_version=metadata.get("pa_version"),
        checkpoint_kwargs=dict(metadata.get("checkpoint_kwargs") or {}),
        files=tuple(sorted(p.name for p in path.iterdir())),
    )


# ----------------------------------------------------------------------------------------
# Checking a folder before it is loaded
# ----------------------------------------------------------------------------------------

_REQUIRED_TRAINER_STATE = ("position", "run_history", "scheduler", "callbacks")


def read_trainer_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check pa's own file of a training state (:data:`TRAINER_STATE_FILE`).

    :raises CheckpointError: when it cannot be loaded, or lacks a part pa needs.
    """
    path = Path(directory) / TRAINER_STATE_FILE
    metadata = load_file(path, "trainer state file")
    if not isinstance(metadata, dict):
        raise CheckpointError(
            f"The trainer state file {os.fspath(path)!r} holds a {type(metadata).__name__}, not the dict "
            "Trainer.save_training_state writes; the folder was not written by pa. Use another training state.",
            path,
        )
    missing = [key for key in _REQUIRED_TRAINER_STATE if key not in metadata]
    if missing:
        raise CheckpointError(
            f"The trainer state file {os.fspath(path)!r} lacks {', '.join(missing)}, which Trainer.save_training_state "
            "always writes; the file was replaced or written by something else. Use another training state.",
            path,
        )
    return metadata


def list_state_files(directory: str | os.PathLike[str]) -> list[str]:
    """Every file under ``directory`` as a sorted relative POSIX path: what a training state is
    made of, recorded when it is saved so that a missing file is named when it is loaded."""
    root = Path(directory)
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def check_training_state_files(
    directory: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    optimizer: Any = None,
) -> None:
    """Check a training-state folder before Accelerate loads it.

    Every file the state was saved with (``metadata["files"]``) must be there; without that
    record (states saved before pa recorded it), a model weights file must be. Every pickled file
    is loaded with the same restricted loader Accelerate uses (Accelerate would quietly skip an
    RNG file it cannot load, and loads custom checkpoint files without restriction), the
    safetensors files' headers are read, and, given ``optimizer``, the optimizer state is checked
    with :func:`check_optimizer_state`.

    :raises CheckpointError: naming the file that is missing, unsafe, damaged or of another
        optimizer type.
    """
    directory = Path(directory)
    _check_complete(directory, (metadata or {}).get("files"))
    from accelerate.utils import load as accelerate_load

    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        what = _describe_state_file(path.name)
        if path.suffix in (".bin", ".pkl", ".pt") and path.name != TRAINER_STATE_FILE:
            content = load_file(path, what, loader=accelerate_load)
            if optimizer is not None and path.name == "optimizer.bin":
                check_optimizer_state(optimizer, content, path, skip_hint=None)
        elif path.suffix == ".safetensors":
            _check_safetensors(path, what)


def _check_complete(directory: Path, files: Iterable[str] | None) -> None:
    if files is not None:
        missing = [name for name in files if not (directory / name).exists()]
        if missing:
            described = "; ".join(f"{name} ({_describe_state_file(Path(name).name)})" for name in missing[:5])
            raise CheckpointError(
                f"The training state in {os.fspath(directory)!r} is incomplete: {described} "
                f"{'is' if len(missing) == 1 else 'are'} missing, though the state was saved with "
                f"{'it' if len(missing) == 1 else 'them'}. The folder was changed or copied partly after it was "
                "saved; copy it again, or use another training state.",
                directory,
            )
        return
    names = [path.name for path in directory.iterdir()]
    has_weights = any(
        (name.startswith(("model", "pytorch_model")) and name.endswith((".safetensors", ".bin")))
        or (directory / name).is_dir()
        for name in names
    )
    if not has_weights:
        raise CheckpointError(
            f"The training state in {os.fspath(directory)!r} is incomplete: it has no model weights file "
            "(model.safetensors, as Trainer.save_training_state writes it). The folder was changed or copied "
            "partly after it was saved; copy it again, or use another training state.",
            directory,
        )


def _check_safetensors(path: Path, what: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"Cannot load the {what} {os.fspath(path)!r}: the safetensors file is truncated or damaged "
            f"({_first_line(exc)}; {path.stat().st_size} bytes), for example by an interrupted copy or a full disk. "
            "Copy it again, or use another training state.",
            path,
        ) from exc


def _describe_state_file(name: str) -> str:
    for prefix, description in _STATE_FILE_KINDS:
        if name.startswith(prefix):
            return description
    return "file"


# ----------------------------------------------------------------------------------------
# Writing and loading (used by the Trainer)
# ----------------------------------------------------------------------------------------


def write_training_state(
    accelerator: Any, output_dir: str | os.PathLike[str], metadata: dict[str, Any], data_position: Any = None
) -> Path:
    """Write a complete training state to ``output_dir`` (collective: call on every process)."""
    from pa_core.__about__ import __version__

    final_dir = Path(output_dir)
    tmp_dir = final_dir.with_name(final_dir.name + INCOMPLETE_SUFFIX)
    if accelerator.is_main_process and tmp_dir.exists():
        shutil.rmtree(tmp_dir)  # left by a save that was killed
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp_dir))
    if data_position is not None:
        atomic_save(data_position, tmp_dir / data_position_file(accelerator.process_index))
    metadata = {
        "format": FORMAT_VERSION,
        "saved_at": time.time(),
        "pa_version": __version__,
        "world_size": accelerator.num_processes,
        **metadata,
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        metadata["files"] = list_state_files(tmp_dir)  # so that a file lost later is named on loading
        atomic_save(metadata, tmp_dir / TRAINER_STATE_FILE)  # last: its presence marks a complete state
        replace_directory(tmp_dir, final_dir)
    accelerator.wait_for_everyone()
    return final_dir


def load_training_state_files(accelerator: Any, path: Path, optimizer: Any = None) -> tuple[dict[str, Any], Any]:
    """Check a training state, then restore Accelerate's part of it; return pa's metadata and
    this process's saved data position (or None)."""
    metadata = read_trainer_state(path)
    check_training_state_files(path, metadata, optimizer=optimizer)
    accelerator.load_state(str(path))
    position_file = path / data_position_file(accelerator.process_index)
    data_position = safe_load(position_file) if position_file.is_file() else None
    return metadata, data_position


def save_training_state(
    trainer: Trainer, output_dir: str | os.PathLike[str], checkpoint_kwargs: dict[str, Any] | None = None
) -> None:
    """See :meth:`pa_core.Trainer.save_training_state` (collective: every process calls it)."""
    run, accelerator = trainer.run_state, trainer.accelerator
    position = run.position()
    # The epoch's partial loss, summed over processes and restored on the main process only.
    total, position["loss_count"] = sum_over_processes(accelerator, position["loss_total"], position["loss_count"])
    position["loss_total"] = torch.tensor(total)
    config = trainer.run_config
    metadata = {
        "epoch": trainer.run_history.current_epoch,
        "first_epoch": run.first_epoch,
        "position": position,
        "per_device_batch_size": config.train_per_device_batch_size if config is not None else None,
        "run_history": trainer.run_history.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "callbacks": trainer.callback_handler.state_dict(),
        "checkpoint_kwargs": checkpoint_kwargs or {},
    }
    write_training_state(accelerator, output_dir, metadata, run.data_position)


def load_training_state(
    trainer: Trainer, input_dir: str | os.PathLike[str], restore_position: bool = True
) -> dict[str, Any]:
    """See :meth:`pa_core.Trainer.load_training_state`; returns pa's metadata."""
    path = find_training_state(input_dir, argument="input_dir")
    metadata, data_position = load_training_state_files(trainer.accelerator, path, trainer.optimizer)
    if metadata.get("scheduler") is not None and trainer.scheduler is not None:
        trainer.scheduler.load_state_dict(metadata["scheduler"])
    if not restore_position:
        return metadata
    run = trainer.run_state
    trainer.run_history.load_state_dict(metadata["run_history"])
    trainer.callback_handler.load_state_dict(metadata["callbacks"])
    run.restore_position(metadata["position"], trainer.device)
    run.data_position = data_position
    # The resumed run ends where the interrupted one would have: num_epochs counted from the
    # epoch that run started with (which may be after 1 when it kept an earlier run's history).
    run.first_epoch = metadata.get("first_epoch", 1)
    if trainer.run_config is not None:
        run.last_epoch = run.first_epoch - 1 + trainer.run_config.num_epochs
    if not trainer.accelerator.is_main_process:  # the saved partial loss is the sum over processes
        run.forget_partial_loss()
    if run.epoch_done:  # saved at an epoch's end: continue with the next epoch
        trainer.run_history._increment_epoch()
        run.start_epoch()
    return metadata
