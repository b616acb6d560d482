"""The test matrix: one session per distribution (installing only that distribution and what
it declares), a session for the cross-package tests with everything installed, and the
hardware rows. `nox -l` lists them; `nox` runs the default set.

Every install is constrained by constraints.txt, which pins torch to the CPU build on
machines without a GPU (see README, "Running the tests").
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
TEST_TOOLS = ("pytest", "numpy")

CORE = "./packages/core"
CALLBACKS = "./packages/callbacks"
WANDB = "./packages/integrations/wandb"
TORCHMETRICS = "./packages/integrations/torchmetrics"
DEEPSPEED = "./packages/integrations/deepspeed"
EXAMPLES = "./packages/examples"
FIXTURES = ("./tests/fixtures/pa-fixture-plugin", "./tests/fixtures/pa-fixture-rival")

nox.options.sessions = ["core", "callbacks", "wandb", "torchmetrics", "examples", "integration"]
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
def examples(session: nox.Session) -> None:
    """pa-examples with what it depends on."""
    _install(session, CORE, CALLBACKS, WANDB, TORCHMETRICS, EXAMPLES)
    _pytest(session, "packages/examples/tests")


@nox.session
def integration(session: nox.Session) -> None:
    """Cross-package tests: every distribution plus the fixture third-party plugins installed."""
    _install(session, CORE, f"{CALLBACKS}[plot]", WANDB, TORCHMETRICS, EXAMPLES, *FIXTURES)
    _pytest(session, "tests")
