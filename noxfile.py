"""The test matrix. `nox -l` lists the sessions; `nox` runs the default set; `nox -t quick` runs the quick loop
(lint, pa-core's and pa-callbacks' tests, the cpu row: a few minutes).

- build: every distribution's sdist and wheel into dist/, checked (tools/nox_packaging.py).
- one session per distribution of tools/distributions.py (core, callbacks, ...): that distribution installed from
  its wheel with only what it declares, its tests run against the install.
- integration: every wheel plus two fixture third-party plugins, the cross-package tests in tests/.
- the CPU rows of the hardware matrix (matrix/rows.py), sharing one environment with pa-core's wheel.
- lint and docs (tools/nox_docs.py).

Environments are made with uv where it is installed, else with virtualenv and pip (tools/nox_install.py), and
every install is constrained by constraints.txt, which keeps torch on the CPU build on machines without a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "matrix"))
sys.path.insert(0, str(ROOT))
from rows import ROWS, missing_hardware  # noqa: E402

from tools import nox_bench, nox_docs, nox_install, nox_packaging  # noqa: E402
from tools.distributions import DISTRIBUTIONS, TEST_TOOLS  # noqa: E402

nox.needs_version = ">=2025.2.9"  # venv_backend="uv|virtualenv", requires=, tags=
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox_install.cache_bytecode()

FIXTURES = (str(ROOT / "tests/fixtures/pa-fixture-plugin"), str(ROOT / "tests/fixtures/pa-fixture-rival"))
CPU_ROWS = [name for name, row in ROWS.items() if not row.gpus]
# `nox -t quick`: what a contributor runs before pushing a change to pa-core or pa-callbacks.
QUICK = {"lint", "core", "callbacks", "cpu"}

nox.options.sessions = [
    "lint",
    "build",
    *(dist.session for dist in DISTRIBUTIONS.values()),
    "integration",
    "docs",
    *CPU_ROWS,
]


def _tags(name: str) -> list[str]:
    return ["quick"] if name in QUICK else []


# ----------------------------------------------------------------------------------------
# Documentation and static checks (tools/nox_docs.py, docs/README.md)
# ----------------------------------------------------------------------------------------


@nox.session(tags=_tags("lint"))
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the repository; mypy over pa-core."""
    nox_docs.lint(session)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built in strict mode into site/ (a public name without a docstring fails it)."""
    nox_docs.docs(session)


# ----------------------------------------------------------------------------------------
# What ships: the wheels, and each distribution tested from its wheel (tools/nox_packaging.py)
# ----------------------------------------------------------------------------------------


@nox.session
def build(session: nox.Session) -> None:
    """sdist and wheel of every distribution into dist/, checked by tools/check_dists.py and twine."""
    nox_packaging.build(session)


def _distribution_session(name: str) -> None:
    dist = DISTRIBUTIONS[name]

    def test(session: nox.Session) -> None:
        nox_packaging.test(session, dist)

    test.__doc__ = f"{name} from its wheel with only what it declares; its tests ({dist.tests})."
    nox.session(name=dist.session, requires=["build"], tags=_tags(dist.session))(test)


for _name in DISTRIBUTIONS:
    _distribution_session(_name)


@nox.session(requires=["build"])
def integration(session: nox.Session) -> None:
    """Cross-package tests (tests/): every distribution's wheel plus the fixture third-party plugins."""
    nox_packaging.install_wheels(session, *DISTRIBUTIONS.values(), also=(*TEST_TOOLS, "hatchling", *FIXTURES))
    nox_packaging.pytest(session, "tests")


@nox.session(default=False)
def lowest(session: nox.Session) -> None:
    """pa-core's tests with the oldest accelerate and pluggy it allows (torch stays at constraints.txt)."""
    nox_packaging.lowest(session)


# ----------------------------------------------------------------------------------------
# The hardware matrix: the suite in matrix/suite under each configuration of matrix/configs,
# launched as a user would. All rows share one environment (.nox/matrix-env).
# ----------------------------------------------------------------------------------------

MATRIX_ENV = ROOT / ".nox" / "matrix-env"


def _matrix_session(row_name: str) -> None:
    row = ROWS[row_name]

    def run_row(session: nox.Session) -> None:
        reason = missing_hardware(row)
        if reason:
            session.skip(reason)
        python = nox_install.shared_env(session, MATRIX_ENV)
        dists = [DISTRIBUTIONS[name] for name in row.distributions]
        nox_packaging.install_wheels(session, *dists, also=TEST_TOOLS, python=python)
        env = {key: value for dist in dists for key, value in dist.env.items()}
        session.run(python, "matrix/run_row.py", row_name, "--", *session.posargs, env=env, external=True)

    run_row.__doc__ = f"matrix row: {row.description} ({row.launcher}; configs {', '.join(row.configs)})"
    nox.session(name=row_name, venv_backend="none", requires=["build"], tags=_tags(row_name))(run_row)


for _row in ROWS:
    _matrix_session(_row)


# ----------------------------------------------------------------------------------------
# Benchmarks (tools/nox_bench.py, benchmarks/README.md)
# ----------------------------------------------------------------------------------------


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """pa against plain PyTorch, Accelerate, pytorch-accelerated and Lightning (`nox -s bench -- --quick`)."""
    nox_bench.bench(session)
