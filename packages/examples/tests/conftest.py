"""Helpers for pa-examples' tests: run an example as ``pa-examples run NAME`` would, in this process
or in a new one, from a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from pa_core import plugins


@pytest.fixture
def run_example(tmp_path, monkeypatch, capsys) -> Callable[..., tuple[Any, str]]:
    """``run_example("digits", "--fast")`` -> (what its main returned, what it printed), run in
    this process from a temporary working folder."""
    monkeypatch.chdir(tmp_path)

    def run(name: str, *argv: str) -> tuple[Any, str]:
        main = plugins.entries("pa.examples")[name].load()
        capsys.readouterr()
        result = main(list(argv))
        return result, capsys.readouterr().out

    return run


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """``run_python("-m", "pa_examples.cli", "list")`` runs Python in a new process and returns the
    CompletedProcess (text output); with ``check=True`` (the default) a failure fails the test with
    the end of the output."""

    def run(
        *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300, cwd: Any = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        if check and result.returncode != 0:
            stderr = [line for line in result.stderr.splitlines() if "step/s" not in line]
            pytest.fail(
                f"python {' '.join(args)} exited with {result.returncode}\nstdout:\n{result.stdout[-2000:]}\n"
                "stderr:\n" + "\n".join(stderr[-60:]),
                pytrace=False,
            )
        return result

    return run
