"""Small models, datasets and a recording callback for testing pa and pa plugins.

Everything here is tiny and deterministic, so a test can train a real model in well under a
second on a CPU::

    from pa_core import Trainer
    from pa_core.testing import RecordingCallback, make_classification_dataset, tiny_classifier

    recorder = RecordingCallback()
    model = tiny_classifier()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                      callbacks=[MyPlugin(), recorder])
    trainer.train(make_classification_dataset(), num_epochs=2)
    assert recorder.count("on_train_epoch_end") == 2
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import TensorDataset

from pa_core import hookspecs
from pa_core.callbacks import _forward_by_keyword

__all__ = [
    "CountHostSyncs",
    "ProcessTree",
    "RecordingCallback",
    "free_port",
    "torchrun_command",
    "run_on_processes",
    "run_process_tree",
    "make_classification_dataset",
    "make_regression_dataset",
    "make_index_dataset",
    "tiny_classifier",
    "tiny_regressor",
]


def make_regression_dataset(
    num_samples: int = 64, num_features: int = 4, noise: float = 0.01, seed: int = 0
) -> TensorDataset:
    """``(x, y)`` pairs with ``y = x @ w + 0.5 + noise``, ``y`` of shape ``(num_samples, 1)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, num_features, generator=generator)
    weights = torch.linspace(-1.0, 1.0, num_features).unsqueeze(1)
    y = x @ weights + 0.5 + noise * torch.randn(num_samples, 1, generator=generator)
    return TensorDataset(x, y)


def make_classification_dataset(
    num_samples: int = 64, num_features: int = 4, num_classes: int = 2, seed: int = 0
) -> TensorDataset:
    """Well-separated Gaussian clusters: ``(x, label)`` with integer labels in ``range(num_classes)``.

    The cluster centres are fixed; ``seed`` draws the samples, so datasets with different
    seeds come from the same distribution (use one for training, another for evaluation).
    """
    centres = 3.0 * torch.randn(num_classes, num_features, generator=torch.Generator().manual_seed(1234))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % num_classes
    x = centres[labels] + torch.randn(num_samples, num_features, generator=generator)
    return TensorDataset(x, labels)


def make_index_dataset(num_samples: int = 10, num_features: int = 1) -> TensorDataset:
    """``(x, index)`` where every feature of ``x`` equals the sample's index, so a test can
    see exactly which samples a data loader produced."""
    index = torch.arange(num_samples)
    return TensorDataset(index.float().unsqueeze(1).repeat(1, num_features), index)


def tiny_regressor(num_features: int = 4, seed: int = 0) -> nn.Module:
    """A linear layer mapping ``num_features`` to 1, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Linear(num_features, 1)


def tiny_classifier(num_features: int = 4, num_classes: int = 2, hidden: int = 8, seed: int = 0) -> nn.Module:
    """A two-layer MLP classifier, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class RecordingCallback:
    """Records every event it receives, with its arguments, in ``events``.

    ``events`` is a list of ``(event_name, kwargs)`` in the order they fired; ``kwargs``
    holds every argument of the hook except ``trainer``.
    """

    def __init__(self, events: tuple[str, ...] = hookspecs.EVENT_NAMES) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        for name in events:
            setattr(self, name, hookspecs.hookimpl(_forward_by_keyword(self._recorder(name), name)))

    def _recorder(self, name: str) -> Any:
        def record(trainer: Any, **kwargs: Any) -> None:
            self.events.append((name, kwargs))

        return record

    def names(self) -> list[str]:
        """The event names in the order they fired."""
        return [name for name, _ in self.events]

    def count(self, name: str) -> int:
        """How many times ``name`` fired."""
        return sum(1 for event, _ in self.events if event == name)

    def of(self, name: str) -> list[dict[str, Any]]:
        """The arguments of every ``name`` event, in order."""
        return [kwargs for event, kwargs in self.events if event == name]


def run_on_processes(function: Callable[..., Any], *args: Any, num_processes: int = 2) -> None:
    """Run ``function(*args)`` in ``num_processes`` real CPU processes joined over gloo.

    Each process starts from a clean Accelerate state (the processes are forked, so they
    would otherwise inherit the single-process state of the calling test process) and with
    one intra-op thread. An exception in any process is raised here as
    ``torch.multiprocessing.ProcessRaisedException``. Write results to files to check them.
    """
    from accelerate.launchers import debug_launcher

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise RuntimeError(
            "run_on_processes forks this process, and CUDA (with autograd's device threads) does not survive a "
            "fork once a GPU has been used here. Call it before any GPU work, or launch a script with torchrun."
        )
    debug_launcher(functools.partial(_run_in_fresh_process, function, args), num_processes=num_processes)


def _run_in_fresh_process(function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    import os

    from accelerate.state import AcceleratorState, GradientState

    # One machine: the local rank is the global rank, as torchrun would set it.
    os.environ["LOCAL_RANK"] = str(torch.distributed.get_rank())
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    torch.set_num_threads(1)
    function(*args)


#: Operators that read a tensor's value back to the host: on a GPU each one waits for the device.
HOST_SYNC_OPS = frozenset({"aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.item.default"})


class CountHostSyncs(TorchDispatchMode):
    """Counts, while active, the operations that bring a tensor's value back to the host.

    Use it to check that a callback adds no per-step synchronisation: count over runs of
    different lengths and compare::

        with CountHostSyncs() as counter:
            trainer.train(data, num_epochs=1)
        print(counter.count)
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if str(func) in HOST_SYNC_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``torchrun --master_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(*args: str, num_processes: int = 2) -> list[str]:
    """The command that runs ``args`` (a script and its options, or ``-m module ...``) on
    ``num_processes`` local processes with torchrun, on a free port; for ``subprocess.run``."""
    import sys

    port = str(free_port())
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(num_processes),
        "--master_port",
        port,
        *args,
    ]


#: The environment variable that marks every process started by a :class:`ProcessTree`.
PROCESS_TREE_VARIABLE = "PA_TEST_PROCESS_TREE"


class ProcessTree:
    """A command started with every process it starts traceable, so a test can signal the
    workers of a launcher and kill everything it started, even processes that left the launcher's
    session (torchrun starts its workers in sessions of their own) or outlived it.

    Each process started inherits a unique ``PA_TEST_PROCESS_TREE`` value in its environment;
    :meth:`pids` finds them by it (on Linux, through ``/proc``). Use it as a context manager:
    whatever is left is killed on leaving, whether the test passed or not::

        with ProcessTree(torchrun_command("train.py"), stdout=subprocess.PIPE, text=True) as tree:
            tree.wait_for(lambda: (out / "ready").exists(), timeout=60)
            tree.signal(signal.SIGUSR1, tree.pids(exclude_root=True))   # the workers, not torchrun
            output = tree.communicate(timeout=60)

    :param command: the command, as for ``subprocess.Popen``.
    :param env: its environment (default: this process's).
    :param popen_kwargs: more ``subprocess.Popen`` arguments (``stdout``, ``cwd``, ``text`` ...).
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None, **popen_kwargs: Any) -> None:
        self.tag = uuid.uuid4().hex
        environment = dict(os.environ if env is None else env)
        environment[PROCESS_TREE_VARIABLE] = self.tag
        self.command = command
        self.process = subprocess.Popen(command, env=environment, start_new_session=True, **popen_kwargs)

    def __enter__(self) -> ProcessTree:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.kill()

    @property
    def returncode(self) -> int | None:
        """The first process's exit status (None while it runs)."""
        return self.process.poll()

    def pids(self, exclude_root: bool = False) -> list[int]:
        """Every live process of the tree (the first one included unless ``exclude_root``)."""
        marker = f"{PROCESS_TREE_VARIABLE}={self.tag}".encode()
        found = []
        try:
            entries = os.listdir("/proc")
        except OSError:  # no /proc: the first process's group is all that can be found
            return [] if exclude_root or self.process.poll() is not None else [self.process.pid]
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if marker not in handle.read().split(b"\0"):
                        continue
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue  # a zombie: already dead
            except OSError:
                continue
            pid = int(entry)
            if not (exclude_root and pid == self.process.pid):
                found.append(pid)
        return sorted(found)

    def signal(self, signum: int, pids: list[int] | None = None) -> None:
        """Send ``signum`` to ``pids`` (default: the first process only)."""
        for pid in pids if pids is not None else [self.process.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str = "the condition") -> None:
        """Wait until ``condition()`` is true; kill the tree and fail if the first process ends
        first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                output = self.communicate(timeout=10)
                status = self.process.returncode
                raise AssertionError(f"{self.command} ended (status {status}) before {what}:\n{output}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{what} did not happen within {timeout} s; the processes were killed")
            time.sleep(0.05)

    def communicate(self, timeout: float) -> str:
        """Wait for the first process to end and return its output (if piped); on timeout kill
        the whole tree and raise ``subprocess.TimeoutExpired``."""
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            output, _ = self.process.communicate()
            raise subprocess.TimeoutExpired(self.command, timeout, output=output) from None
        return output if output is not None else ""

    def kill(self) -> None:
        """SIGKILL every process of the tree (the first one is stopped first, so that it
        starts no new ones), and reap the first."""
        if self.process.poll() is None:
            self.signal(signal.SIGSTOP)
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            self.signal(signal.SIGKILL, pids)
            time.sleep(0.02)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def run_process_tree(command: list[str], timeout: float, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """``subprocess.run(command, capture_output=True, text=True)`` in a :class:`ProcessTree`:
    on timeout every process it started is killed and ``subprocess.TimeoutExpired`` raised;
    leftovers are killed in any case. Returns a ``subprocess.CompletedProcess``."""
    with ProcessTree(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as tree:
        try:
            stdout, stderr = tree.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            tree.kill()
            stdout, stderr = tree.process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
        return subprocess.CompletedProcess(command, tree.process.returncode, stdout, stderr)
