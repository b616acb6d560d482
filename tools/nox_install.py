"""How the nox sessions install packages: with uv where it is installed, else with pip, always constrained by
constraints.txt, and never with a CUDA build of torch on a machine without a GPU.

uv makes a session's environment in seconds: it downloads each file once into its cache (shared by every session,
every run and every clone on the machine) and links the files into each environment, where pip unpacks torch
again for each session. Two settings make uv work here as pip does:

- UV_FIND_LINKS: uv does not read pip's configuration, so it does not see the folders pip's ``find-links`` names
  (on this machine /opt/wheels, set in ~/.config/pip/pip.conf and PIP_FIND_LINKS, holds the CPU build of torch).
  Without them uv takes torch 2.13.0 from the index, a CUDA build with about 2 GB of nvidia packages.
  uv_settings() hands pip's find-links (and index-url, if one is configured) to uv unless UV_FIND_LINKS /
  UV_DEFAULT_INDEX are already set.
- Bytecode: pip compiles every module it installs; uv compiles nothing unless UV_COMPILE_BYTECODE=1, which costs
  as much (30 s of CPU for the examples' environment here, 35 s of wall time for DeepSpeed's with transformers).
  This machine sets PYTHONDONTWRITEBYTECODE=1, so without either every new Python process compiled torch again
  (``import torch`` twice as slow). cache_bytecode() lets Python cache the bytecode of what it imports instead:
  the first import in a new environment compiles only the modules it uses (about 5 s of CPU for torch,
  accelerate, pa, scikit-learn, torchmetrics and wandb), later imports read the cache.

After every install, tools/check_torch.py refuses a CUDA build of torch on a machine without a GPU.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nox

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(ROOT / "matrix"))
from rows import gpu_count  # noqa: E402

CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
# Where pip reads a setting for `pip install`, first place first: PIP_* variables, then the [install] and
# [global] sections of its configuration files.
PIP_SECTIONS = (":env:", "install", "global")


def parse_pip_config(listing: str) -> dict[str, str]:
    """pip's settings for ``pip install`` from what ``pip config list`` prints (``global.find-links='/opt/wheels'``
    lines), each from the place pip would take it: ``{"find-links": "/opt/wheels", ...}``."""
    found: dict[tuple[str, str], str] = {}
    for line in listing.splitlines():
        match = re.fullmatch(r"(.+?)\.([\w-]+)='(.*)'", line.strip())
        if match:
            found[match.group(1), match.group(2)] = match.group(3)
    settings: dict[str, str] = {}
    for section in reversed(PIP_SECTIONS):
        settings.update({key: value for (where, key), value in found.items() if where == section})
    return settings


@functools.cache
def pip_settings() -> dict[str, str]:
    """pip's settings on this machine (parse_pip_config), read by running ``pip config list``."""
    try:
        command = [sys.executable, "-m", "pip", "config", "list"]
        listing = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_pip_config(listing)


def uv_settings(pip: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The UV_* variables that make uv install from where pip does (see the module docstring), given pip's
    settings and the environment (whose own UV_* settings win)."""
    settings = {"UV_BUILD_CONSTRAINT": CONSTRAINTS[1]}
    if "UV_FIND_LINKS" not in environ and pip.get("find-links"):
        settings["UV_FIND_LINKS"] = ",".join(pip["find-links"].split())
    if not {"UV_DEFAULT_INDEX", "UV_INDEX_URL"} & set(environ) and pip.get("index-url"):
        settings["UV_DEFAULT_INDEX"] = pip["index-url"]
    return settings


def cache_bytecode() -> None:
    """Let Python, in every session, cache the bytecode of the modules it imports (see the module docstring)."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _uv() -> tuple[bool, str]:
    """Whether nox found uv, and the command that runs it (nox looks on PATH and next to itself)."""
    import nox.virtualenv

    return nox.virtualenv.HAS_UV, nox.virtualenv.UV


def uses_uv(session: nox.Session, python: str | None = None) -> bool:
    """Whether installs go through uv: in the session's environment when nox made it with uv, in a shared
    environment (``python``) when uv is installed."""
    return _uv()[0] if python else session.venv_backend == "uv"


def pip(session: nox.Session, command: str, *args: str, python: str | None = None, **kwargs) -> str | bool | None:
    """Run ``pip COMMAND ARGS`` against the session's environment, or against the environment of ``python``:
    ``uv pip`` where uv installs, else ``python -m pip``. Keyword arguments go to session.run_install, so
    ``nox -R`` (reuse the environment, install nothing) skips it."""
    if uses_uv(session, python):
        target = ("--python", python) if python else ()
        env = {**uv_settings(pip_settings(), os.environ), **kwargs.pop("env", {})}
        return session.run_install(_uv()[1], "pip", command, *target, *args, env=env, external=True, **kwargs)
    return session.run_install(python or "python", "-m", "pip", command, *args, external=True, **kwargs)


def install(session: nox.Session, *args: str, python: str | None = None, env: dict[str, str] | None = None) -> None:
    """Install ``args`` (requirements, wheel files, project folders, pip options) with constraints.txt, then check
    torch. Both pip and uv build a project folder again at every install."""
    quiet = () if uses_uv(session, python) else ("--quiet",)
    pip(session, "install", *quiet, *CONSTRAINTS, *args, python=python, env=env or {})
    check_torch(session, python)


def uninstall(session: nox.Session, *names: str, python: str | None = None) -> None:
    """Uninstall the named distributions where they are installed (names that are not are skipped)."""
    if names:
        flags = () if uses_uv(session, python) else ("--yes", "--quiet")
        pip(session, "uninstall", *flags, *names, python=python, silent=True)


def check_torch(session: nox.Session, python: str | None = None) -> None:
    """Fail if the environment holds a CUDA build of torch and this machine has no GPU."""
    if not gpu_count():
        session.run_install(python or "python", str(TOOLS / "check_torch.py"), external=True, silent=True)


def shared_env(session: nox.Session, location: Path) -> str:
    """The python of a virtual environment at ``location`` that several sessions share (made once, with uv where
    it is installed); for sessions with ``venv_backend="none"``."""
    python = location / "bin" / "python"
    if not python.exists():
        has_uv, uv = _uv()
        if has_uv:
            session.run(uv, "venv", "--quiet", "--python", sys.executable, str(location), external=True)
        else:
            session.run(sys.executable, "-m", "venv", str(location), external=True)
    return str(python)
