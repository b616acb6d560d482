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

import hashlib
import math
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
    from pa_core._trainer_base import TrainerBase

__all__ = [
    "TRAINER_STATE_FILE",
    "TrainingStateInfo",
    "is_epoch_boundary",
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
    """What a training-state folder says about itself (:func:`read_training_state`).

    ``epoch_step`` counts the steps (batches per process) of ``epoch`` done when the state was
    saved, out of ``epoch_length`` (None when unknown); ``train_done`` says the epoch's training
    part had finished (its evaluation may not have), ``epoch_done`` that the whole epoch had.
    """

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
    gradient_accumulation_steps: int | None = None
    train_done: bool = False
    epoch_length: int | None = None
    sized_data: bool = True

    @property
    def global_batch_size(self) -> int | None:
        """Samples per optimizer update over every process (None when a part of it is unknown)."""
        return _product(self.per_device_batch_size, self.world_size, self.gradient_accumulation_steps)

    @property
    def at_epoch_boundary(self) -> bool:
        """Whether the state can resume on another number of processes or batch size: it was
        saved at an epoch's start, after its training part, or at its end (see
        :func:`is_epoch_boundary`)."""
        return is_epoch_boundary(
            {
                "epoch_step": self.epoch_step,
                "epoch_length": self.epoch_length,
                "train_done": self.train_done,
                "epoch_done": self.epoch_done,
                "sized": self.sized_data,
            }
        )

    def describe(self) -> str:
        """A few readable lines, as ``pa state inspect`` prints them."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at)) if self.saved_at else "unknown"
        unknown = "unknown"

        def known(value: Any) -> Any:
            return value if value is not None else unknown

        of_length = f" of {self.epoch_length}" if self.epoch_length is not None else ""
        if self.epoch_done:
            where = "at its end"
        elif self.train_done:
            where = "after its training steps, before the end of its evaluation"
        elif self.epoch_step == 0:
            where = "at its start"
        else:
            where = f"after {self.epoch_step}{of_length} training steps"
        boundary = (
            "any number of processes (saved at an epoch boundary)"
            if self.at_epoch_boundary
            else f"{_processes(self.world_size) if self.world_size is not None else 'the same processes'} with "
            f"{known(self.per_device_batch_size)} samples per device only (saved in the middle of an epoch)"
        )
        lines = [
            f"training state {os.fspath(self.path)}",
            f"  saved:             {when} (format {self.format}, pa {self.pa_version or unknown})",
            f"  epoch:             {self.epoch} ({where})",
            f"  optimizer updates: {self.num_updates}",
            f"  world size:        {known(self.world_size)}",
            f"  per-device batch:  {known(self.per_device_batch_size)}",
            f"  accumulation:      {known(self.gradient_accumulation_steps)}",
            f"  global batch:      {known(self.global_batch_size)}",
            f"  resumes on:        {boundary}",
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
    (``Trainer.preemption_save_dir``) or by ``save_training_state``. A folder still being
    written, left half-written or half-deleted by a killed process, or missing any file it was
    saved with, is never returned. "Newest" is the time of saving recorded in the state.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = [folder, *(p for p in folder.iterdir() if p.is_dir())]
    newest: tuple[tuple[float, float], Path] | None = None
    for path in candidates:
        if path.name.endswith(PREVIOUS_SUFFIX) and path.with_name(path.name[: -len(PREVIOUS_SUFFIX)]).exists():
            continue  # NAME.old counts only when a save killed mid-swap left no NAME
        saved_at = _complete_state_time(path)
        if saved_at is not None and (newest is None or saved_at > newest[0]):
            newest = (saved_at, path)
    return newest[1] if newest is not None else None


def _complete_state_time(path: Path) -> tuple[float, float] | None:
    """When the complete training state at ``path`` was saved, or None if it is not one."""
    if not is_training_state(path):
        return None
    try:
        metadata = read_trainer_state(path)
        files = metadata.get("files")
        if files is not None and not all((path / name).is_file() for name in files):
            return None
        return float(metadata.get("saved_at") or 0.0), (path / TRAINER_STATE_FILE).stat().st_mtime
    except (CheckpointError, OSError, TypeError, ValueError):
        return None


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
        gradient_accumulation_steps=metadata.get("gradient_accumulation_steps"),
        train_done=bool(position.get("train_done", False)),
        epoch_length=position.get("epoch_length"),
        sized_data=bool(position.get("sized", True)),
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


def load_training_state_files(
    accelerator: Any,
    path: Path,
    optimizer: Any = None,
    *,
    restore_position: bool = True,
    run_config: Any = None,
    seed: int | None = None,
) -> tuple[dict[str, Any], Any]:
    """Check a training state, then restore Accelerate's part of it; return pa's metadata and
    this process's saved data position (or None).

    A state saved with another number of processes or per-device batch size (``run_config``
    says the current ones) resumes at an epoch boundary only (:func:`check_layout_change`); the
    metadata returned then has its position translated, the change is reported in one line and
    processes without a saved random state are re-seeded (:func:`reseed_unmapped_process`).
    """
    metadata = read_trainer_state(path)
    change = check_layout_change(path, metadata, accelerator, run_config, restore_position)
    check_training_state_files(path, metadata, optimizer=optimizer)
    accelerator.load_state(str(path))
    if change is None:
        position_file = path / data_position_file(accelerator.process_index)
        data_position = safe_load(position_file) if position_file.is_file() else None
        return metadata, data_position
    accelerator.print(change.message)
    saved_world = change.saved_world_size
    if saved_world is not None and accelerator.num_processes > saved_world:
        if accelerator.is_main_process:
            warnings.warn(
                f"The training state {os.fspath(path)!r} was saved on {_processes(saved_world)} and holds no random "
                f"state for process index {_index_range(saved_world, accelerator.num_processes)} of this run: its "
                "random generators are re-seeded deterministically from Trainer.seed, the process index and the "
                "optimizer updates done, so its random draws (dropout, augmentation) differ from those of a run that "
                "had this many processes throughout.",
                UserWarning,
                stacklevel=4,
            )
        if accelerator.process_index >= saved_world:
            reseed_unmapped_process(seed, accelerator.process_index, metadata["position"].get("num_updates", 0))
    if restore_position:
        metadata = {**metadata, "position": translate_position(metadata, change)}
    return metadata, None  # data positions are per process: meaningless on another layout


# ----------------------------------------------------------------------------------------
# Resuming on another number of processes (or another per-device batch size)
# ----------------------------------------------------------------------------------------


def is_epoch_boundary(position: dict[str, Any]) -> bool:
    """Whether a saved position (a training state's ``position``) is at an epoch boundary:
    where the samples already consumed do not depend on how they were split into batches and
    processes, so the run can continue with another number of processes or batch size.

    That is a state saved at an epoch's end (``epoch_done``), after its training steps
    (``train_done``: during its evaluation), before its first optimizer update
    (``epoch_step == 0``), or, for data with a length, at its last optimizer update (every
    process had then consumed its share: on N processes every process runs as many steps as the
    busiest one, the others stepping with empty batches, so the last update ends the epoch's
    data everywhere).
    """
    if position.get("epoch_done") or position.get("train_done"):
        return True
    step = position.get("epoch_step", position.get("batches_done", 0))
    if not step:
        return True
    length = position.get("epoch_length")
    return bool(position.get("sized", False)) and length is not None and step >= length


@dataclass(frozen=True)
class LayoutChange:
    """How the run resuming a training state differs from the one that saved it."""

    saved_world_size: int | None
    world_size: int
    saved_batch_size: int | None
    batch_size: int | None
    message: str


def check_layout_change(
    path: Path, metadata: dict[str, Any], accelerator: Any, run_config: Any, restore_position: bool = True
) -> LayoutChange | None:
    """None when the state was saved with this run's number of processes and per-device batch
    size; else the change, after checking the state can follow it.

    :raises CheckpointError: for a state saved in the middle of an epoch (with
        ``restore_position``), or one whose model or optimizer is sharded per process in a way
        that only loads on the same number of processes (DeepSpeed ZeRO).
    """
    world, saved_world = accelerator.num_processes, metadata.get("world_size")
    batch = getattr(run_config, "train_per_device_batch_size", None)
    saved_batch = metadata.get("per_device_batch_size")
    world_changed = saved_world is not None and saved_world != world
    batch_changed = saved_batch is not None and batch is not None and saved_batch != batch
    if not (world_changed or batch_changed):
        return None
    position = metadata.get("position", {})
    saved_as = f"{_processes(saved_world)} with {saved_batch} samples per device"
    now_as = f"{_processes(world)} with {batch} samples per device"
    if world_changed and any(_is_zero_shard(name) for name in metadata.get("files") or ()):
        raise CheckpointError(
            f"The training state {os.fspath(path)!r} was saved by DeepSpeed ZeRO on {_processes(saved_world)}: its "
            f"model and optimizer are split into one file per process, which DeepSpeed loads on "
            f"{_processes(saved_world)} only. Resume it on {_processes(saved_world)}, or convert it to plain weights "
            "with DeepSpeed's zero_to_fp32.py and start a new run from those.",
            path,
        )
    if restore_position and not is_epoch_boundary(position):
        step = position.get("epoch_step", 0)
        length = position.get("epoch_length")
        of_length = f" of {length}" if length is not None else ""
        raise CheckpointError(
            f"The training state {os.fspath(path)!r} was saved in the middle of epoch {metadata.get('epoch')} (after "
            f"{step}{of_length} training steps) on {saved_as}; this run has {now_as}. The position in an epoch is "
            "counted in per-process batches, so it resumes only with the layout it was saved with. Resume it on "
            f"{_processes(saved_world)} with per_device_batch_size={saved_batch}, or resume from a state saved at an "
            "epoch boundary (SaveTrainingStateCallback(save_every_n_epochs=1) writes one after every epoch; "
            "`pa state inspect FOLDER` says whether a state is one).",
            path,
        )
    ga = getattr(run_config, "gradient_accumulation_steps", None)
    saved_ga = metadata.get("gradient_accumulation_steps")
    saved_global = _product(saved_batch, saved_world, saved_ga)
    new_global = _product(batch, world, ga)
    breakdown = f"{batch} per device x {_processes(world)} x {ga} accumulation step{'' if ga == 1 else 's'}"
    if saved_global is None or new_global is None:
        sizes = f"global batch size {new_global} samples per optimizer update ({breakdown}), was unknown"
    elif saved_global == new_global:
        sizes = f"global batch size {new_global} samples per optimizer update ({breakdown}), unchanged"
    else:
        sizes = f"global batch size {saved_global} -> {new_global} samples per optimizer update ({breakdown})"
    message = (
        f"Resuming {os.fspath(path)!r}, saved on {saved_as}, on {now_as}: {sizes}; the learning rate and the "
        f"scheduler continue from optimizer update {position.get('num_updates', 0)} unchanged."
    )
    return LayoutChange(saved_world, world, saved_batch, batch, message)


def translate_position(metadata: dict[str, Any], change: LayoutChange) -> dict[str, Any]:
    """The saved position (at an epoch boundary) as the resuming run counts it.

    Only the case of a state saved at the last optimizer update of an epoch changes: its steps
    done become at least the number of steps the new layout's epoch has, so that the resumed
    run takes no more training steps in that epoch but still ends it (train loss, epoch-end
    hooks, evaluation).
    """
    position = dict(metadata["position"])
    step = position.get("epoch_step", 0)
    if position.get("epoch_done") or position.get("train_done") or not step:
        return position
    # Every sample of the epoch was consumed: at most step * world * batch samples exist, which
    # the new layout takes in at most this many steps (each process gets ceil(samples / (world * batch))).
    if None in (change.saved_world_size, change.saved_batch_size, change.batch_size):
        raise CheckpointError(f"Cannot translate the position {position} to another layout: sizes are unknown.")
    bound = step * change.saved_world_size * change.saved_batch_size  # type: ignore[operator]
    position["epoch_step"] = max(step, math.ceil(bound / (change.world_size * change.batch_size)))  # type: ignore[operator]
    return position


def reseed_unmapped_process(seed: int | None, process_index: int, num_updates: int) -> int:
    """Seed Python's, NumPy's and torch's random generators (every device's too) of a process
    that has no saved random state, from ``(seed, process_index, num_updates)``: the same
    numbers on every resume of the same state, different ones on every process. Returns the seed."""
    from accelerate.utils import set_seed

    digest = hashlib.sha256(f"pa-reseed/{seed}/{process_index}/{num_updates}".encode()).digest()
    new_seed = int.from_bytes(digest[:4], "little")
    set_seed(new_seed)
    return new_seed


def _product(*parts: int | None) -> int | None:
    return None if any(part is None for part in parts) else math.prod(parts)  # type: ignore[arg-type]


def _processes(count: int | None) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


def _index_range(start: int, stop: int) -> str:
    return str(start) if stop - start == 1 else f"{start} to {stop - 1}"


def _is_zero_shard(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith("zero_pp_rank_") or base.endswith("optim_states.pt")


def save_training_state(
    trainer: TrainerBase, output_dir: str | os.PathLike[str], checkpoint_kwargs: dict[str, Any] | None = None
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
        "gradient_accumulation_steps": config.gradient_accumulation_steps if config is not None else None,
        "run_history": trainer.run_history.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "callbacks": trainer.callback_handler.state_dict(),
        "checkpoint_kwargs": checkpoint_kwargs or {},
    }
    write_training_state(accelerator, output_dir, metadata, run.data_position)


def load_training_state(
    trainer: TrainerBase, input_dir: str | os.PathLike[str], restore_position: bool = True
) -> dict[str, Any]:
    """See :meth:`pa_core.Trainer.load_training_state`; returns pa's metadata."""
    path = find_training_state(input_dir, argument="input_dir")
    metadata, data_position = load_training_state_files(
        trainer.accelerator,
        path,
        trainer.optimizer,
        restore_position=restore_position,
        run_config=trainer.run_config,
        seed=trainer.seed,
    )
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
