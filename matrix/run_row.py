"""Run the hardware-agnostic suite (matrix/suite) under one row of the matrix.

    python matrix/run_row.py ROW [--suite PATH] [-- PYTEST_ARGS...]

Launches pytest in every process exactly as a user would launch a training script, and exits
with the launch's status. Run it inside an environment with pa-core and pytest installed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rows import CONFIGS, ROWS, Row, missing_hardware  # noqa: E402

from pa_core.testing import free_port, torchrun_command  # noqa: E402

SUITE = Path(__file__).parent / "suite"
TIMEOUT_S = 900


def _pytest_args(suite: Path, extra: list[str]) -> list[str]:
    return ["-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider", *extra]


def _accelerate(config: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config), *args]


def _config_int(config: str, key: str) -> int:
    """A whole-number setting of an Accelerate config file in matrix/configs."""
    return int(re.search(rf"^\s*{key}:\s*(\d+)", (CONFIGS / config).read_text(), re.M).group(1))


def launch(row: Row, suite: Path, extra: list[str], work: Path) -> int:
    env = {**os.environ, "PA_MATRIX_DIR": str(work), "TMPDIR": str(work)}
    if row.launcher == "torchrun-deepspeed":
        # Two processes under torchrun, made DeepSpeed runs by pa-deepspeed's callback with the
        # ZeRO stage of each config file (the callback sizes the engine from train()'s arguments).
        for config in row.configs:
            stage = str(_config_int(config, "zero_stage"))
            command = torchrun_command(*_pytest_args(suite, extra))
            run_env = {
                **env,
                "PA_MATRIX_DIR": str(work / config),
                "PA_MATRIX_DEEPSPEED": "1",
                "PA_MATRIX_ZERO_STAGE": stage,
            }
            status = subprocess.run(command, env=run_env, timeout=TIMEOUT_S).returncode
            if status:
                return status
        return 0
    if row.launcher == "accelerate":
        for config in row.configs:
            env["PA_MATRIX_DIR"] = str(work / config)
            status = subprocess.run(
                _accelerate(config, "--main_process_port", str(free_port()), *_pytest_args(suite, extra)),
                env=env,
                timeout=TIMEOUT_S,
            ).returncode
            if status:
                return status
        return 0
    if row.launcher == "torchrun":
        command = torchrun_command(*_pytest_args(suite, extra))
        return subprocess.run(command, env=env, timeout=TIMEOUT_S).returncode
    if row.launcher == "two-node":
        port = str(free_port())
        processes = []
        for machine_rank in (0, 1):
            node_env = {**env, "PA_MATRIX_NODES": "2", "PA_MATRIX_NODE_DIR": str(work / f"machine{machine_rank}")}
            command = _accelerate(
                row.configs[0],
                "--machine_rank",
                str(machine_rank),
                "--main_process_port",
                port,
                *_pytest_args(suite, extra),
            )
            processes.append(subprocess.Popen(command, env=node_env))
        deadline = time.monotonic() + TIMEOUT_S
        statuses = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in processes]
        return next((s for s in statuses if s), 0)
    if row.launcher == "notebook":
        # Every GPU where there are GPUs, else the config file's number of (CPU) processes.
        configured = _config_int(row.configs[0], "num_processes")
        code = (
            "import sys, pytest\n"
            "from accelerate import notebook_launcher\n"
            "def run():\n"
            f"    assert pytest.main({_pytest_args(suite, extra)[2:]!r}) == 0\n"
            "import torch\n"
            f"notebook_launcher(run, num_processes=torch.cuda.device_count() or {configured})\n"
        )
        env["OMP_NUM_THREADS"] = "1"  # the processes are forked: OpenMP threads would not survive it
        return subprocess.run([sys.executable, "-c", code], env=env, timeout=TIMEOUT_S).returncode
    raise ValueError(f"unknown launcher {row.launcher!r}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", choices=sorted(ROWS))
    parser.add_argument("--suite", type=Path, default=SUITE, help="the suite to run (default: matrix/suite)")
    args = parser.parse_args(argv)
    row = ROWS[args.row]
    reason = missing_hardware(row)
    if reason:
        print(f"SKIPPED: {reason}")
        return 0
    with tempfile.TemporaryDirectory(prefix=f"pa-matrix-{row.name}-") as work:
        started = time.monotonic()
        status = launch(row, args.suite, extra, Path(work))
        print(f"matrix row {row.name}: {'passed' if status == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
        return status


if __name__ == "__main__":
    raise SystemExit(main())
