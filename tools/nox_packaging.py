"""The sessions that build and test what ships, registered in noxfile.py:

    nox -s build            sdist + wheel of every distribution into ./dist, then tools/check_dists.py and twine check
    nox -s core             (one session per distribution in tools/distributions.py) the distribution installed from
                            its wheel with only what it declares, its tests run against that install
    nox -s lowest           pa-core's tests with the lowest accelerate and pluggy that pa-core allows (not default)

Every session that installs a pa distribution installs it from the wheel `build` made: the tests of each
distribution run once, against what would be uploaded. noxfile.py makes those sessions require `build`.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools import check_dists, nox_install
from tools.distributions import DISTRIBUTIONS, TEST_TOOLS, Distribution

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
DIST = ROOT / "dist"
BUILD_TOOLS = ("build", "hatchling", "twine", "trove-classifiers", "packaging")
# torch from the package index is a CUDA build of several GB: the lowest session keeps the CPU build of
# constraints.txt and lowers the other dependencies only.
KEEP_AT_CONSTRAINT = {"torch"}
NO_TESTS = 5  # pytest's exit status when nothing was selected


def build(session: nox.Session) -> None:
    """Build the sdist and wheel of every distribution into ./dist and check them."""
    folders = {str(path.relative_to(ROOT)) for path in check_dists.discover_projects(ROOT)}
    missing = sorted(folders - {dist.folder for dist in DISTRIBUTIONS.values()})
    if missing:
        session.error(f"{', '.join(missing)}: not in tools/distributions.py, so no session would test it; add it there")
    nox_install.install(session, *BUILD_TOOLS)
    shutil.rmtree(DIST, ignore_errors=True)
    for dist in DISTRIBUTIONS.values():
        # Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked sdist, which proves
        # the sdist is complete. --no-isolation uses the hatchling just installed (pyproject's build requirement).
        session.run(
            "python", "-m", "build", "--no-isolation", "--outdir", str(DIST), str(ROOT / dist.folder), silent=True
        )
    session.run("twine", "check", "--strict", *sorted(str(p) for p in DIST.iterdir()), env={"NO_COLOR": "1"})
    session.run(
        "python", str(TOOLS / "check_dists.py"), str(DIST), *(str(ROOT / d.folder) for d in DISTRIBUTIONS.values())
    )


def install_wheels(
    session: nox.Session, *dists: Distribution, also: tuple[str, ...] = (), python: str | None = None
) -> None:
    """Install ``dists`` (with the extras their tests use) from their wheels in ./dist, the pa distributions they
    require from theirs, and ``also`` (requirements, project folders), into the session's environment (or that of
    ``python``)."""
    wheels = [f"{_wheel(session, dist.name)}{dist.extras_suffix}" for dist in dists]
    required = set().union(*(_pa_requirements(session, _wheel(session, d.name), extras=d.extras) for d in dists))
    required -= {dist.name for dist in dists}
    wheels += [str(_wheel(session, name)) for name in sorted(required)]
    env = {key: value for dist in dists for key, value in dist.env.items()}
    # A reused environment may hold the same pa version built from older sources: pip and uv would keep it.
    nox_install.uninstall(session, *DISTRIBUTIONS, python=python)
    nox_install.install(session, *also, *wheels, python=python, env=env)


def test(session: nox.Session, dist: Distribution) -> None:
    """Install one distribution from its wheel with only what it declares (plus the test tools and its test
    requirements), and run its tests against that install."""
    tests = ROOT / dist.tests
    if not any(tests.glob("test_*.py")):
        session.error(f"{dist.name} has no tests in {dist.tests}")
    test_requirements = (*TEST_TOOLS, *dist.test_requires)
    install_wheels(session, dist, also=test_requirements)
    # A reused environment may hold what an earlier version of a distribution declared: remove it.
    unneeded = session.run_install(
        "python", str(TOOLS / "prune_env.py"), dist.requirement, *test_requirements, silent=True
    )
    if unneeded:
        session.log(f"not needed by {dist.requirement} or its tests, uninstalled: {' '.join(unneeded.split())}")
        nox_install.uninstall(session, *unneeded.split())
    nox_install.pip(session, "check", silent=True)

    # The tests import the installed wheel: nothing under src/ is on sys.path (pytest's importlib mode, and the
    # repository root holds no import package). Importing it once here also caches the bytecode of everything it
    # imports before several test processes start at once (tools/nox_install.py, "Bytecode").
    where = f"import {dist.package} as p; assert 'site-packages' in p.__file__, p.__file__"
    session.run("python", "-c", where, silent=True)
    pytest(session, dist.tests, env=dist.env)


def pytest(session: nox.Session, tests: str, env: dict[str, str] | None = None) -> None:
    """Run the tests in ``tests`` in two passes: first every test not marked ``multiprocess`` with pytest-xdist,
    on as many worker processes as the machine has cores (at most 4); then the ``multiprocess`` tests one after
    another in one process, since each starts a process group of its own (torchrun, gloo, forking launchers) that
    binds ports and would only compete for the same cores. Arguments after ``--`` go to both passes (``-- -k
    NAME`` selects; a pass that selects nothing is not an error). Torch gets one thread per process unless
    OMP_NUM_THREADS says otherwise: the tests' models are tiny, and several processes each spinning up a thread
    per core made the examples' tests five times slower on a busy 2-core machine."""
    env = {"WANDB_SILENT": "true", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    parallel = ("-m", "not multiprocess", "--numprocesses", "auto", "--maxprocesses", "4")
    session.run("python", "-m", "pytest", tests, *parallel, *session.posargs, env=env, success_codes=[0, NO_TESTS])
    if any("multiprocess" in path.read_text() for path in (ROOT / tests).rglob("*.py")):  # else skip a start-up
        serial = ("-m", "multiprocess", "-p", "no:xdist")
        session.run("python", "-m", "pytest", tests, *serial, *session.posargs, env=env, success_codes=[0, NO_TESTS])


def lowest(session: nox.Session) -> None:
    """pa-core's tests with the oldest versions of its dependencies that its pyproject.toml allows."""
    pins = []
    for line in check_dists.read_project(ROOT / "packages/core").table.get("dependencies", []):
        req = Requirement(line)
        lower = [s.version for s in req.specifier if s.operator in (">=", "==", "~=")]
        if canonicalize_name(req.name) in KEEP_AT_CONSTRAINT:
            session.log(f"{req.name}: kept at constraints.txt (older torch on the index is a CUDA build of several GB)")
        elif lower:
            pins.append(f"{req.name}=={lower[0]}")
    constraints = Path(session.create_tmp()) / "lowest-constraints.txt"
    constraints.write_text("\n".join([*pins, (ROOT / "constraints.txt").read_text().strip()]) + "\n")
    session.log(f"lowest versions: {', '.join(pins)}")

    start = time.monotonic()
    core = DISTRIBUTIONS["pa-core"]
    nox_install.uninstall(session, core.name)
    nox_install.install(session, "-c", str(constraints), *TEST_TOOLS, *core.test_requires, str(ROOT / core.folder))
    nox_install.pip(session, "list", "--format=freeze")
    installed = time.monotonic()
    pytest(session, core.tests)
    session.log(f"lowest: install {installed - start:.0f} s, tests {time.monotonic() - installed:.0f} s")


def _wheel(session: nox.Session, dist: str) -> Path:
    version = check_dists.read_project(ROOT / DISTRIBUTIONS[dist].folder).version
    path = DIST / f"{canonicalize_name(dist).replace('-', '_')}-{version}-py3-none-any.whl"
    if not path.exists():
        session.error(f"no {path.name} in {DIST}: run `nox -s build` first")
    return path


def _pa_requirements(
    session: nox.Session, wheel: Path, seen: set[str] | None = None, extras: tuple[str, ...] = ()
) -> set[str]:
    """The pa distributions a wheel requires (with ``extras`` of the wheel itself), transitively, read from
    the METADATA of the built wheels."""
    seen = set() if seen is None else seen
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8"))
    for line in message.get_all("Requires-Dist") or []:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        wanted = req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras or ("",))
        if name in DISTRIBUTIONS and name not in seen and wanted:
            seen.add(name)
            _pa_requirements(session, _wheel(session, name), seen)
    return seen


if __name__ == "__main__":  # pragma: no cover
    sys.exit("register these functions in noxfile.py; see the module docstring")
