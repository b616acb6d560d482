"""The documentation and lint sessions, registered in noxfile.py (both run in the default `nox` run).

    nox -s docs     tools/check_docstrings.py, then `mkdocs build --strict` into site/
    nox -s lint     ruff check, ruff format --check (the whole repository), mypy on pa-core

Neither needs pa installed to read the sources: the docs are built by griffe reading the files, and ruff reads
files. mypy does need what pa-core imports (torch, accelerate, pluggy), so the lint session installs pa-core's
dependencies, torch from constraints.txt.

Versions: docs/requirements.txt gives the documentation tools' ranges and docs/constraints.txt their exact
versions (with every dependency); LINT_TOOLS pins ruff and mypy exactly, since a new release of either can flag or
reformat code that passed before. Bump them on purpose, in one commit with the fixes they ask for.
"""

from __future__ import annotations

import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from tools import nox_install

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
SITE = ROOT / "site"
DOCS_REQUIREMENTS = ("-r", str(ROOT / "docs" / "requirements.txt"), "-c", str(ROOT / "docs" / "constraints.txt"))
LINT_TOOLS = ("ruff==0.17.6", "mypy==2.4.1")


def docs(session) -> None:
    """Build the documentation site in strict mode: a public name without a docstring, a broken link or
    cross-reference, or a docstring that cannot be rendered fails the session."""
    nox_install.install(session, *DOCS_REQUIREMENTS)
    session.run("python", str(TOOLS / "check_docstrings.py"), str(ROOT))
    started = time.monotonic()
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--clean",
        "--config-file",
        str(ROOT / "mkdocs.yml"),
        "--site-dir",
        str(SITE),
        env={"NO_MKDOCS_2_WARNING": "1"},  # Material's banner about its end of life (docs/index.md)
    )
    session.log(f"site built in {time.monotonic() - started:.1f} s: {SITE / 'index.html'}")


def core_dependencies() -> list[str]:
    """The requirements pa-core declares, for mypy to check pa-core's sources against."""
    with open(ROOT / "packages" / "core" / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def lint(session) -> None:
    """ruff (lint rules and formatting) over the repository, and mypy over pa-core (configuration: the root
    pyproject.toml)."""
    nox_install.install(session, *LINT_TOOLS, *core_dependencies())
    session.run("ruff", "check", str(ROOT))
    session.run("ruff", "format", "--check", str(ROOT))
    session.run("mypy", "--config-file", str(ROOT / "pyproject.toml"), *session.posargs)
