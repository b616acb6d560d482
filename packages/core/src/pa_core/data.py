"""How pa feeds data to the loop.

- Data loader defaults: shuffled training batches, worker processes only where they help.
- Iterable datasets are split between processes by pa (Hugging Face ``datasets`` streams with
  their own ``split_dataset_by_node``, any other ``IterableDataset`` by keeping every N-th
  sample on each of N processes), and between DataLoader workers by the dataset itself:
  :func:`split_by_worker` does that for a dataset that does not.
- Every process runs the same number of steps in each epoch, so that collective calls (the
  gradient all-reduce, ``trainer.gather`` in a hook, a metric's sync) never wait for a process
  that has run out of data. A process whose data ends first runs the remaining steps with an
  *empty batch*: the structure of a real batch with zero rows (see :func:`empty_batch_like`).
  For map-style datasets the number of steps is known when the epoch starts; for iterable
  datasets the processes agree at every step, with one small all-gather on the host.
"""

from __future__ import annotations

import itertools
import os
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, TensorDataset, get_worker_info

__all__ = ["default_num_workers", "empty_batch_like", "is_empty_step", "split_by_worker"]


# ----------------------------------------------------------------------------------------
# Data loader arguments
# ----------------------------------------------------------------------------------------


def default_num_workers(dataset: Any) -> int:
    """DataLoader worker processes for ``dataset`` by default.

    None for data already in memory (a ``TensorDataset``, list or tuple: indexing takes
    microseconds, so workers only add start-up cost) and none for an ``IterableDataset`` that
    does not split its samples between workers (each worker would yield every sample). Other
    datasets get one worker per CPU available to each device, at most 8 (and, for a Hugging
    Face iterable dataset, at most one per shard).
    """
    if dataset is None or isinstance(dataset, (TensorDataset, list, tuple)):
        return 0
    if isinstance(dataset, IterableDataset) and not splits_between_workers(dataset):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(max(cpus // max(torch.cuda.device_count(), 1), 1), 8)
    shards = getattr(dataset, "n_shards", None)
    return min(workers, shards) if isinstance(shards, int) and shards > 0 else workers


def default_dataloader_kwargs(dataset: Any, batch_size: int, shuffle: bool, pin_memory: bool) -> dict[str, Any]:
    """The ``DataLoader`` arguments the Trainer uses unless told otherwise."""
    num_workers = default_num_workers(dataset)
    kwargs: dict[str, Any] = {
        "shuffle": shuffle,
        "pin_memory": pin_memory,
        "batch_size": batch_size,
        "num_workers": num_workers,
        # The loader's own generator (re-seeded each epoch by Accelerate's seedable sampler)
        # keeps an epoch's start from drawing on the global RNG, so a run resumed mid-epoch
        # replays the same random numbers (dropout, augmentation).
        "generator": torch.Generator(),
    }
    if num_workers:
        from pa_core.utils import worker_init_fn

        kwargs["worker_init_fn"] = worker_init_fn
        # Persistent workers keep their copy of an iterable dataset, and set_epoch would not reach it.
        kwargs["persistent_workers"] = not isinstance(dataset, IterableDataset)
    return kwargs


def merge_dataloader_kwargs(
    kwargs_name: str,
    defaults: dict[str, Any],
    overrides: dict[str, Any] | None,
    dataset: Any,
    preemption_signals: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The defaults updated with the user's arguments (``kwargs_name`` names them in errors)."""
    overrides = overrides or {}
    if isinstance(dataset, IterableDataset):
        for key in ("shuffle", "sampler", "batch_sampler"):
            if overrides.get(key):
                raise ValueError(
                    f"{kwargs_name} has {key}={overrides[key]!r}, but the dataset is an IterableDataset, which yields "
                    f"samples in its own order. Remove {key!r}; shuffle the stream itself instead (for example "
                    "datasets' IterableDataset.shuffle(seed=..., buffer_size=...))."
                )
    kwargs = {**defaults, **overrides}
    if "sampler" in kwargs or "batch_sampler" in kwargs or isinstance(dataset, IterableDataset):
        kwargs.pop("shuffle", None)
    if "batch_sampler" in kwargs:
        for key in ("batch_size", "drop_last"):
            kwargs.pop(key, None)
    if kwargs.get("num_workers"):
        kwargs["worker_init_fn"] = WorkerInit(kwargs.get("worker_init_fn"), preemption_signals)
    else:
        kwargs.pop("persistent_workers", None)
    return kwargs


class WorkerInit:
    """A DataLoader ``worker_init_fn`` that leaves preemption signals to the main process, then
    calls the user's own ``worker_init_fn``.

    A Ctrl-C in a terminal, or a cluster scheduler signalling every process of a job, reaches the
    workers too; a worker killed by it would end the run with "DataLoader worker exited
    unexpectedly" instead of the clean stop the main process is arranging.
    """

    def __init__(self, init_fn: Any, signals: tuple[int, ...]) -> None:
        self.init_fn: Any = init_fn.init_fn if isinstance(init_fn, WorkerInit) else init_fn
        self.signals = tuple(int(s) for s in signals)

    def __call__(self, worker_id: int) -> Any:
        for signum in self.signals:
            signal.signal(signum, signal.SIG_IGN)
        return self.init_fn(worker_id) if self.init_fn is not None else None


# ----------------------------------------------------------------------------------------
# Iterable datasets: splitting between DataLoader workers and processes
# ----------------------------------------------------------------------------------------


def split_by_worker(dataset: IterableDataset) -> IterableDataset:
    """Wrap an ``IterableDataset`` so that each DataLoader worker yields its share of it.

    Worker *i* of *n* keeps samples *i*, *i + n*, ... of the stream, so every sample is seen
    once whatever the number of workers. Use it for a dataset that does not split itself with
    ``torch.utils.data.get_worker_info()`` (a dataset that does must not be wrapped: each
    worker would then keep only part of its own share). Every worker still reads the whole
    stream; a dataset that splits by shards reads less.
    """
    if not isinstance(dataset, IterableDataset):
        raise TypeError(f"split_by_worker needs a torch IterableDataset, got {type(dataset).__name__}.")
    return _WorkerSplit(dataset)


class _Wrapper(IterableDataset):
    """An iterable dataset over another one, passing on its length, epoch and position."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(epoch)

    @property
    def is_stateful(self) -> bool:
        return is_stateful(self.dataset)


class _WorkerSplit(_Wrapper):
    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is None or info.num_workers == 1:
            return iter(self.dataset)
        return itertools.islice(iter(self.dataset), info.id, None, info.num_workers)

    def __len__(self) -> int:
        return len(self.dataset)


class _ProcessSplit(_Wrapper):
    """Samples ``rank``, ``rank + world``, ... of an iterable dataset (of each worker's share)."""

    def __init__(self, dataset: Any, rank: int, world: int) -> None:
        super().__init__(dataset)
        self.rank, self.world = rank, world
        self._consumed = 0  # samples of the inner stream read so far this epoch (for state_dict)

    def __iter__(self) -> Iterator[Any]:
        start, self._consumed = self._consumed, 0
        for index, sample in enumerate(iter(self.dataset), start=start):
            self._consumed = index + 1
            if index % self.world == self.rank:
                yield sample

    def __len__(self) -> int:
        total = len(self.dataset)
        return total // self.world + (1 if self.rank < total % self.world else 0)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.dataset.state_dict(), "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state["inner"])
        self._consumed = state["consumed"]


def _is_hf_iterable(dataset: Any) -> bool:
    return type(dataset).__module__.startswith("datasets.") and hasattr(dataset, "n_shards")


def splits_between_workers(dataset: Any) -> bool:
    """Whether ``dataset`` is known to give each DataLoader worker its own share."""
    return isinstance(dataset, _WorkerSplit) or _is_hf_iterable(dataset)


def is_stateful(obj: Any) -> bool:
    """Whether ``obj`` can save and restore its position (``state_dict``/``load_state_dict``)."""
    explicit = getattr(obj, "is_stateful", None)
    if isinstance(explicit, bool):
        return explicit
    if getattr(obj, "use_stateful_dataloader", None) is False:  # Accelerate's loaders: state_dict only if so
        return False
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def split_between_processes(dataset: Any, rank: int, world: int) -> Any:
    """This process's share of an iterable dataset on ``world`` processes."""
    if _is_hf_iterable(dataset):
        from datasets.distributed import split_dataset_by_node  # type: ignore[import-not-found]  # its own package

        return split_dataset_by_node(dataset, rank=rank, world_size=world)
    return _ProcessSplit(dataset, rank, world)


# Arguments a DataLoader keeps as attributes, to build the same loader over another dataset.
_LOADER_ARGUMENTS = (
    "batch_size",
    "drop_last",
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
    "snapshot_every_n_steps",  # torchdata's StatefulDataLoader
)


def _rebuild_loader(dataloader: DataLoader, dataset: Any) -> DataLoader:
    kwargs = {name: getattr(dataloader, name) for name in _LOADER_ARGUMENTS if hasattr(dataloader, name)}
    if not kwargs.get("num_workers"):
        kwargs.pop("prefetch_factor", None)
        kwargs["persistent_workers"] = False
    return type(dataloader)(dataset, **kwargs)


class StreamLoader:
    """An iterable-dataset loader as the Trainer uses it: this process's share, on the device.

    ``len()`` is the dataset's length divided between processes and batched (an estimate the
    epoch does not rely on); ``set_epoch`` reaches the dataset; ``state_dict`` is the loader's
    (torchdata's ``StatefulDataLoader``) or, without worker processes, the dataset's.
    """

    def __init__(self, dataloader: DataLoader, device: torch.device, dataset_length: int | None = None) -> None:
        self.dataloader, self.device = dataloader, device
        #: ``len()`` of the whole dataset (before it was split between processes), if it has one.
        self.dataset_length = dataset_length

    def __iter__(self) -> Iterator[Any]:
        from accelerate.utils import send_to_device

        non_blocking = bool(getattr(self.dataloader, "pin_memory", False))
        return (send_to_device(batch, self.device, non_blocking=non_blocking) for batch in self.dataloader)

    def __len__(self) -> int:
        return len(self.dataloader)

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.dataloader.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def _position_owner(self) -> Any:
        if is_stateful(self.dataloader):
            return self.dataloader
        if not self.dataloader.num_workers and is_stateful(self.dataloader.dataset):
            return self.dataloader.dataset
        return None

    @property
    def is_stateful(self) -> bool:
        return self._position_owner() is not None

    def state_dict(self) -> dict[str, Any]:
        return self._position_owner().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._position_owner().load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataloader", "device", "dataset_length"):  # not set yet, e.g. while unpickling
            raise AttributeError(name)
        return getattr(self.dataloader, name)


def prepare_stream_loader(dataloader: DataLoader, device: torch.device, rank: int, world: int) -> StreamLoader:
    """Split an iterable-dataset loader's data between processes and move its batches to ``device``."""
    dataset = dataloader.dataset
    if dataloader.num_workers > 1 and not splits_between_workers(dataset):
        warnings.warn(
            f"The {type(dataset).__name__} is read by {dataloader.num_workers} DataLoader workers, each with its own "
            "copy: unless its __iter__ splits the samples between workers (torch.utils.data.get_worker_info()), "
            "every sample is seen once per worker. Wrap it with pa_core.data.split_by_worker(dataset) if it does not "
            "split itself, or use num_workers=0.",
            UserWarning,
            stacklevel=4,
        )
    try:
        length: int | None = len(dataset)  # type: ignore[arg-type]
    except TypeError:  # no __len__ (or a wrapper around a dataset without one)
        length = None
    if world > 1:
        dataloader = _rebuild_loader(dataloader, split_between_processes(dataset, rank, world))
    return StreamLoader(dataloader, device, length)


def is_stream(dataloader: Any) -> bool:
    """Whether the loader's epoch ends when its data does (an iterable dataset, or no dataset at all)."""
    return isinstance(getattr(dataloader, "dataset", None), IterableDataset) or not hasattr(dataloader, "dataset")


# ----------------------------------------------------------------------------------------
# Empty batches and epochs of equal length on every process
# ----------------------------------------------------------------------------------------


def empty_batch_like(batch: Any) -> Any:
    """``batch`` with zero rows: every tensor sliced to ``[:0]``, containers rebuilt around them.

    A list or tuple of plain values (strings, numbers) is a column of the batch and becomes
    empty; other values are kept. This is the batch a process that has run out of data steps
    with while the others finish the epoch.
    """
    if isinstance(batch, torch.Tensor):
        return batch[:0]
    if isinstance(batch, dict):
        return type(batch)((key, empty_batch_like(value)) for key, value in batch.items())
    if isinstance(batch, (list, tuple)):
        if batch and all(isinstance(item, (str, bytes, int, float, bool)) for item in batch):
            return type(batch)()  # a column of plain values, one per row
        items = [empty_batch_like(item) for item in batch]
        if hasattr(batch, "_fields"):  # a namedtuple
            return type(batch)(*items)
        return type(batch)(items)
    return batch


def is_empty_step(batch_output: dict[str, Any]) -> bool:
    """Whether a step's ``batch_output`` is that of an empty batch: this process had no data
    for the step (``batch_size`` is 0; the loss is 0 and the model outputs have zero rows).

    Callbacks that update something per sample (a metric, a list of predictions) skip such
    steps; collective calls (``trainer.gather``) must still be made on them.
    """
    size = batch_output.get("batch_size")
    return isinstance(size, int) and not isinstance(size, bool) and size == 0


_END: Any = object()


def control_group() -> Any:
    """A process group for pa's small agreements between processes, on the host: the default
    group when it runs on gloo, else a new gloo group (reading a flag back from a GPU backend
    would synchronise the device). Collective: every process calls it, once per run."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


class EpochSteps:
    """The steps of one epoch over a prepared loader: ``for step, batch in EpochSteps(...)``.

    Every process runs the same steps. After each ``(step, batch)`` is produced, these
    attributes describe it: ``is_empty`` (this process has no data for it: ``batch`` has zero
    rows) and ``num_active`` (how many processes have data for it); ``last_step`` is the index of
    the epoch's last step once it is known (from the start for map-style data, one step ahead
    for iterable data).

    :param dataloader: the prepared loader of the whole epoch.
    :param start_step: steps already done this epoch (a run resumed mid-epoch); the loader
        given in ``resumed`` then yields the rest of this process's batches.
    :param track_position: note the loader's position (``state_dict()``) after each batch, for
        a training state saved at the next update (training epochs of data that can save it).
    """

    def __init__(
        self,
        dataloader: Any,
        num_processes: int,
        group: Any = None,
        start_step: int = 0,
        resumed: Any = None,
        track_position: bool = True,
    ) -> None:
        self.dataloader = dataloader
        self.num_processes, self.group = num_processes, group
        self.start_step = start_step
        self.iterable = resumed if resumed is not None else dataloader
        self.is_empty, self.num_active = False, num_processes
        self.last_step: int | None = None
        self.num_real_steps = 0  # steps with data on this process in this pass
        self.ran_out = False  # every process read to the end of its data (not stopped early)
        self.position: Any = None  # the loader's state_dict() after the current step's batch
        self.template: Any = None  # this process's empty batch
        self._stateful = track_position and is_stateful(self.iterable)
        self._steps: Any = None
        self._batches: Any = None
        self._streaming = is_stream(dataloader)
        self._lengths: list[int] = []
        if not self._streaming:  # every process's number of batches, known up front
            own_length = len(dataloader)
            self._lengths = self._all_gather([own_length])[:, 0].tolist() if num_processes > 1 else [own_length]
            self.last_step = max(self._lengths) - 1

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        self._batches = iter(self.iterable)
        if self._streaming:
            self._steps = self._streamed()
        elif self.num_processes == 1:  # the common case, kept free of per-step Python calls
            self._steps = enumerate(self._batches, start=self.start_step)
        else:
            self._steps = self._sized()
        return self._steps

    def close(self) -> None:
        """Stop reading: the loader's iterator, and the worker processes it may hold, are let go
        (a run that ends early, by an exception or a signal, must not leave them running)."""
        from pa_core._accelerate_shims import shut_down_workers

        for iterator in (self._steps, self._batches):
            close = getattr(iterator, "close", None)
            if callable(close):
                close()
        shut_down_workers(self._batches)
        self._steps = self._batches = None

    # -- map-style data: the number of steps is known --------------------------------------

    def _sized(self) -> Iterator[tuple[int, Any]]:
        lengths = self._lengths
        own_length, total = lengths[dist.get_rank()], max(lengths)
        needs_template = any(length <= self.start_step for length in lengths) and total > self.start_step
        batches = self._batches
        for step in range(self.start_step, total):
            batch = next(batches, _END) if step < own_length else _END
            self.is_empty = batch is _END
            if not self.is_empty and self.template is None:
                self.template = empty_batch_like(batch)
            if needs_template and step == self.start_step:
                self._share_template(source=lengths.index(total))
            self.num_active = sum(1 for length in lengths if length > step)
            yield step, (self.template if self.is_empty else batch)

    # -- iterable data: the processes agree at each step -----------------------------------

    def _streamed(self) -> Iterator[tuple[int, Any]]:
        batches = self._batches
        upcoming = next(batches, _END)
        step = self.start_step
        while True:
            current = upcoming
            if current is not _END:
                self.num_real_steps += 1
                if self.template is None:
                    self.template = empty_batch_like(current)
                if self._stateful:
                    self.position = self.iterable.state_dict()  # before the next batch is read ahead
            upcoming = next(batches, _END) if current is not _END else _END
            if self.num_processes == 1:
                if current is _END:
                    self.ran_out = True
                    return
                is_last = upcoming is _END
            else:
                flags = self._all_gather([current is not _END, upcoming is not _END, self.template is not None])
                has_data, has_more, has_template = flags[:, 0], flags[:, 1], flags[:, 2]
                self.num_active = int(has_data.sum())
                if not self.num_active:
                    self.ran_out = True
                    return
                self.is_empty, is_last = current is _END, not bool(has_more.any())
                if bool(((has_data == 0) & (has_template == 0)).any()):
                    self._share_template(source=int(has_template.nonzero()[0]))
            if is_last:
                self.last_step = step
            yield step, (self.template if self.is_empty else current)
            step += 1

    # -- collectives on the host -----------------------------------------------------------

    def _all_gather(self, values: list[Any]) -> torch.Tensor:
        mine = torch.tensor([int(v) for v in values], dtype=torch.int64)
        gathered = [torch.empty_like(mine) for _ in range(self.num_processes)]
        dist.all_gather(gathered, mine, group=self.group)
        return torch.stack(gathered)

    def _share_template(self, source: int) -> None:
        """Give every process the empty batch of process ``source`` (collective)."""
        from accelerate.utils import send_to_device

        device = _batch_device(self.template)
        holder = [send_to_device(self.template, "cpu") if dist.get_rank() == source else None]
        dist.broadcast_object_list(holder, src=source, group=self.group)
        if self.template is None:
            self.template = send_to_device(holder[0], device or _default_device())


def _batch_device(batch: Any) -> torch.device | None:
    if isinstance(batch, torch.Tensor):
        return batch.device
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        device = _batch_device(item)
        if device is not None:
            return device
    return None


def _default_device() -> torch.device:
    from accelerate.state import PartialState

    return PartialState().device


def any_process(flag: bool, group: Any = None) -> bool:
    """Whether ``flag`` is true on any process (collective: every process calls it)."""
    value = torch.tensor([int(flag)], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value)


def warn_if_length_was_wrong(steps: EpochSteps, num_samples: int, metric: str) -> None:
    """After an epoch of an iterable dataset read to its end: warn when its ``__len__`` was not
    the number of samples every process read together (the epoch followed the data)."""
    loader = steps.dataloader
    expected = getattr(loader, "dataset_length", None) if isinstance(loader, StreamLoader) else None
    if expected is None or not steps.ran_out or steps.start_step or loader.drop_last or num_samples == expected:
        return
    workers = loader.num_workers
    hint = (
        f" It is read by {workers} DataLoader workers: unless its __iter__ splits the samples between them, each "
        "worker yields them all (pa_core.data.split_by_worker does the split)."
        if workers > 1 and num_samples > expected
        else ""
    )
    warnings.warn(
        f"The iterable dataset behind {metric} says it has {expected} samples (__len__), but the epoch had "
        f"{num_samples}; the epoch followed the data, and anything sized from the length (placeholders, progress "
        f"totals) was off.{hint}",
        UserWarning,
        stacklevel=4,
    )


def global_num_batches(dataloader: Any, num_processes: int, group: Any = None) -> int | None:
    """Batches per epoch on the process with the most (the steps every process runs); None
    when the loader has no length. Collective when ``num_processes > 1``."""
    try:
        length = len(dataloader)
    except TypeError:
        length = -1
    if num_processes > 1:
        mine = torch.tensor([length], dtype=torch.int64)
        gathered = [torch.empty_like(mine) for _ in range(num_processes)]
        dist.all_gather(gathered, mine, group=group)
        lengths = [int(t) for t in gathered]
        length = -1 if min(lengths) < 0 else max(lengths)
    return None if length < 0 else length


def rest_of_epoch(accelerator: Any, dataloader: Any, steps_done: int, data_position: Any) -> Any:
    """The loader of an epoch resumed after ``steps_done`` steps, or None when the data cannot
    continue mid-epoch (an iterable dataset that cannot restore its position: with a warning,
    the epoch starts again)."""
    from pa_core.utils import DataLoaderSlice

    if not is_stream(dataloader):
        if isinstance(dataloader, DataLoaderSlice):  # a limited loader stays limited
            rest = accelerator.skip_first_batches(dataloader.dl, steps_done)
            return DataLoaderSlice(rest, max(dataloader.slice_size - steps_done, 0))
        return accelerator.skip_first_batches(dataloader, steps_done)
    if data_position is not None and is_stateful(dataloader):
        dataloader.load_state_dict(data_position)
        return dataloader
    warnings.warn(
        "Resuming in the middle of an epoch, but the training data is an iterable dataset that cannot save its "
        "position, so the epoch starts again from its beginning. (A dataset with state_dict()/load_state_dict() "
        "read without DataLoader workers, or a torchdata StatefulDataLoader, resumes exactly.)",
        UserWarning,
        stacklevel=5,
    )
    return None


def gather_rows(accelerator: Any, tensor: Any, padding_value: Any = None) -> Any:
    """``accelerator.gather(tensor)`` for tensors whose first dimension differs between processes:
    exactly the rows each process had, process 0's first (padding is used for the transfer only).
    Dicts, lists and tuples of tensors are gathered entry by entry. Tensors whose other
    dimensions differ between processes are refused on every process, naming the shapes."""
    if isinstance(tensor, dict):
        return type(tensor)((key, gather_rows(accelerator, value, padding_value)) for key, value in tensor.items())
    if isinstance(tensor, (list, tuple)) and not hasattr(tensor, "_fields"):
        return type(tensor)(gather_rows(accelerator, value, padding_value) for value in tensor)
    if accelerator.num_processes == 1 or not isinstance(tensor, torch.Tensor):
        return accelerator.gather(tensor)
    if tensor.ndim > _MAX_GATHER_DIMS:
        raise ValueError(f"trainer.gather handles tensors of at most {_MAX_GATHER_DIMS} dimensions, got {tensor.ndim}.")
    shape = [tensor.ndim, *tensor.shape] + [-1] * (_MAX_GATHER_DIMS - tensor.ndim)
    shapes = accelerator.gather(torch.tensor([shape], device=tensor.device)).tolist()
    described = [tuple(dims[1 : 1 + dims[0]]) for dims in shapes]
    if len({(dims[0], *dims[2:]) for dims in shapes}) > 1:
        raise ValueError(
            f"trainer.gather needs tensors that differ at most in their first dimension on every process; the "
            f"processes hold shapes {described}. Pad the other dimensions to a common size first (for example "
            "with accelerator.pad_across_processes(tensor, dim=1))."
        )
    if tensor.ndim == 0:
        return accelerator.gather(tensor)
    sizes = [dims[0] for dims in described]
    rows = max(sizes)
    if min(sizes) == rows:
        return accelerator.gather(tensor)
    fill = 0 if padding_value is None else padding_value
    padding = tensor.new_full((rows - tensor.shape[0], *tensor.shape[1:]), fill)
    gathered = accelerator.gather(torch.cat([tensor, padding]))
    return torch.cat([gathered[rank * rows : rank * rows + size] for rank, size in enumerate(sizes)])


_MAX_GATHER_DIMS = 8
