"""The test matrix: one session per distribution (installing only that distribution and what
it declares), a session for the cross-package tests with everything installed, and the
hardware rows. `nox -l` lists them; `nox` runs the default set.

Every install is constrained by constraints.txt, which pins torch to the CPU build on
machines without a GPU (see README, "Running the tests").
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "matrix"))
from rows import ROWS, missing_hardware  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tools import nox_bench, nox_docs, nox_packaging  # noqa: E402

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
TEST_TOOLS = ("pytest", "numpy")

CORE = "./packages/core"
CALLBACKS = "./packages/callbacks"
WANDB = "./packages/integrations/wandb"
TORCHMETRICS = "./packages/integrations/torchmetrics"
DEEPSPEED = "./packages/integrations/deepspeed"
TRACKING = "./packages/integrations/tracking"
TRACKERS = f"{TRACKING}[tensorboard,mlflow]"  # pa-tracking with the trackers its tests read back
EXAMPLES = "./packages/examples"
FIXTURES = ("./tests/fixtures/pa-fixture-plugin", "./tests/fixtures/pa-fixture-rival")

nox.options.sessions = [
    "lint",
    "docs",
    "core",
    "callbacks",
    "wandb",
    "torchmetrics",
    "deepspeed",
    "tracking",
    "examples",
    "integration",
    "build",
    "wheels",
    "cpu",
    "cpu-bf16",
    "cpu-2proc",
    "cpu-notebook",
    "cpu-2node",
    "deepspeed-cpu",
]
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session, *packages: str) -> None:
    session.install(*CONSTRAINTS, *TEST_TOOLS, *packages)


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run("python", "-m", "pytest", *paths, *session.posargs, env={"WANDB_SILENT": "true"})


@nox.session
def core(session: nox.Session) -> None:
    """pa-core alone: proves the Trainer works without any other pa distribution."""
    _install(session, CORE)
    _pytest(session, "packages/core/tests")


@nox.session
def callbacks(session: nox.Session) -> None:
    """pa-callbacks with pa-core (and matplotlib for `pa plot`)."""
    _install(session, CORE, f"{CALLBACKS}[plot]")
    _pytest(session, "packages/callbacks/tests")


@nox.session
def wandb(session: nox.Session) -> None:
    """pa-wandb with pa-core, W&B in offline mode."""
    _install(session, CORE, WANDB, "psutil")
    _pytest(session, "packages/integrations/wandb/tests")


@nox.session
def torchmetrics(session: nox.Session) -> None:
    """pa-torchmetrics with pa-core."""
    _install(session, CORE, TORCHMETRICS)
    _pytest(session, "packages/integrations/torchmetrics/tests")


@nox.session
def deepspeed(session: nox.Session) -> None:
    """pa-deepspeed with pa-core; DeepSpeed built without pre-compiled ops."""
    if not (ROOT / DEEPSPEED / "src/pa_deepspeed/__init__.py").exists():
        session.skip("pa-deepspeed is not in this checkout yet")
    session.env["DS_BUILD_OPS"] = "0"
    _install(session, CORE, DEEPSPEED, "transformers")
    _pytest(session, "packages/integrations/deepspeed/tests")


@nox.session
def tracking(session: nox.Session) -> None:
    """pa-tracking with pa-core and its TensorBoard and MLflow extras (MLflow on a SQLite store)."""
    _install(session, CORE, TRACKERS)
    _pytest(session, "packages/integrations/tracking/tests")


@nox.session
def examples(session: nox.Session) -> None:
    """pa-examples with what it depends on."""
    _install(
        session, CORE, CALLBACKS, WANDB, TORCHMETRICS, f"{TRACKING}[tensorboard]", f"{EXAMPLES}[streaming]", "hatchling"
    )
    _pytest(session, "packages/examples/tests")


@nox.session
def integration(session: nox.Session) -> None:
    """Cross-package tests: every distribution plus the fixture third-party plugins installed."""
    _install(session, CORE, f"{CALLBACKS}[plot]", WANDB, TORCHMETRICS, TRACKERS, EXAMPLES, *FIXTURES, "hatchling")
    _pytest(session, "tests")


# ----------------------------------------------------------------------------------------
# The hardware matrix: the suite in matrix/suite under each configuration of matrix/configs,
# launched as a user would. All rows share one environment (.nox/matrix-env).
# ----------------------------------------------------------------------------------------

MATRIX_ENV = ROOT / ".nox" / "matrix-env"


def _matrix_python(session: nox.Session, extra: tuple[str, ...]) -> str:
    python = MATRIX_ENV / "bin" / "python"
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(MATRIX_ENV), external=True)
    session.run(str(python), "-m", "pip", "install", "--quiet", *CONSTRAINTS, *TEST_TOOLS, CORE, *extra, external=True)
    return str(python)


def _matrix_session(row_name: str) -> None:
    row = ROWS[row_name]

    def run_row(session: nox.Session) -> None:
        reason = missing_hardware(row)
        if reason:
            session.skip(reason)
        extra = (DEEPSPEED, *row.needs) if row_name.startswith("deepspeed") else row.needs
        if row_name.startswith("deepspeed"):
            session.env["DS_BUILD_OPS"] = "0"
        python = _matrix_python(session, extra)
        session.run(python, "matrix/run_row.py", row_name, "--", *session.posargs, external=True)

    run_row.__doc__ = f"matrix row: {row.description} ({row.launcher}; configs {', '.join(row.configs)})"
    nox.session(name=row_name, venv_backend="none")(run_row)


for _row in ROWS:
    _matrix_session(_row)


# ----------------------------------------------------------------------------------------
# Packaging (tools/nox_packaging.py)
# ----------------------------------------------------------------------------------------


@nox.session
def build(session: nox.Session) -> None:
    """sdist and wheel of every distribution into dist/, checked by tools/check_dists.py and twine."""
    nox_packaging.build(session)


@nox.session
@nox.parametrize("dist", list(nox_packaging.DISTRIBUTIONS), ids=list(nox_packaging.DISTRIBUTIONS))
def wheels(session: nox.Session, dist: str) -> None:
    """Each distribution installed from its wheel with only what it declares; its tests run against it."""
    nox_packaging.wheels(session, dist)


@nox.session(default=False)
def lowest(session: nox.Session) -> None:
    """pa-core's tests with the oldest accelerate and pluggy it allows (torch stays at constraints.txt)."""
    nox_packaging.lowest(session)


# ----------------------------------------------------------------------------------------
# Benchmarks (tools/nox_bench.py, benchmarks/README.md)
# ----------------------------------------------------------------------------------------


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """pa against plain PyTorch, Accelerate, pytorch-accelerated and Lightning (`nox -s bench -- --quick`)."""
    nox_bench.bench(session)


# ----------------------------------------------------------------------------------------
# Documentation and static checks (tools/nox_docs.py, docs/README.md)
# ----------------------------------------------------------------------------------------


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built in strict mode into site/ (a public name without a docstring fails it)."""
    nox_docs.docs(session)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the repository; mypy over pa-core."""
    nox_docs.lint(session)
