"""Release checks as nox sessions: build and check every distribution, test each one from its wheel, and test
pa-core against the oldest dependency versions it allows.

noxfile.py registers these functions (CHANGELOG.md, "Release procedure", says when to run them):

    nox -s build            sdist + wheel of every distribution into ./dist, then tools/check_dists.py and twine check
    nox -s wheels           each distribution installed from its wheel alone, its tests run against the install
    nox -s lowest           pa-core's tests with the lowest accelerate and pluggy that pa-core allows (not default)
"""

from __future__ import annotations

import email.parser
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools import check_dists

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
DIST = ROOT / "dist"
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
TEST_TOOLS = ("pytest", "numpy")
BUILD_TOOLS = ("build", "hatchling", "twine", "trove-classifiers", "packaging")

# Every distribution, dependencies before dependents. The parametrize list in noxfile.py names these keys.
DISTRIBUTIONS = {
    "pa-core": "packages/core",
    "pa-callbacks": "packages/callbacks",
    "pa-wandb": "packages/integrations/wandb",
    "pa-torchmetrics": "packages/integrations/torchmetrics",
    "pa-deepspeed": "packages/integrations/deepspeed",
    "pa-tracking": "packages/integrations/tracking",
    "pa-examples": "packages/examples",
}
# Extras of a distribution that its tests use (as in its noxfile.py session), and what else its tests need
# besides pytest, numpy and what the distribution declares.
WHEEL_EXTRAS = {
    "pa-callbacks": ("plot",),
    "pa-tracking": ("tensorboard", "mlflow"),
    "pa-examples": ("metrics", "wandb", "tensorboard", "streaming"),
}
TEST_EXTRAS = {"pa-wandb": ("psutil",), "pa-examples": ("hatchling",)}
TEST_ENV = {"pa-deepspeed": {"DS_BUILD_OPS": "0"}}
# torch from the package index is a CUDA build of several GB: the lowest session keeps the CPU build of
# constraints.txt and lowers the other dependencies only.
KEEP_AT_CONSTRAINT = {"torch"}


def build(session) -> None:
    """Build the sdist and wheel of every distribution into ./dist and check them."""
    session.install(*CONSTRAINTS, *BUILD_TOOLS)
    shutil.rmtree(DIST, ignore_errors=True)
    for folder in DISTRIBUTIONS.values():
        # Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked sdist, which proves
        # the sdist is complete. --no-isolation uses the hatchling just installed (pyproject's build requirement).
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(DIST), str(ROOT / folder), silent=True)
    session.run("twine", "check", "--strict", *sorted(str(p) for p in DIST.iterdir()), env={"NO_COLOR": "1"})
    session.run("python", str(TOOLS / "check_dists.py"), str(DIST), *(str(ROOT / f) for f in DISTRIBUTIONS.values()))


def wheels(session, dist: str) -> None:
    """Install one distribution from its built wheel, with only what it declares, and run its tests against it."""
    folder = ROOT / DISTRIBUTIONS[dist]
    tests = folder / "tests"
    if not any(tests.glob("test_*.py")):
        session.error(f"{dist} has no tests in {tests.relative_to(ROOT)}")
    wheel = _wheel(session, dist)
    requested = WHEEL_EXTRAS.get(dist, ())
    extras = f"[{','.join(requested)}]" if requested else ""
    pa_wheels = [_wheel(session, name) for name in sorted(_pa_requirements(session, wheel, extras=requested))]

    # A reused environment may hold the same pa version built from older sources: pip would keep it.
    session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", *DISTRIBUTIONS, silent=True)
    test_tools = (*TEST_TOOLS, *TEST_EXTRAS.get(dist, ()))
    pip_args = (*CONSTRAINTS, "--find-links", str(DIST), *test_tools, f"{wheel}{extras}", *map(str, pa_wheels))
    session.install(*pip_args, env=TEST_ENV.get(dist))
    # A reused environment may hold what an earlier version of a distribution declared: remove it.
    session.run("python", str(TOOLS / "prune_env.py"), f"{dist}{extras}", *test_tools)
    session.run("python", "-m", "pip", "check")

    with tempfile.TemporaryDirectory(prefix=f"{dist}-wheel-tests-") as tmp:
        # The tests run from a copy, outside the repository, so nothing under src/ can be imported by accident.
        shutil.copytree(tests, Path(tmp) / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", Path(tmp) / "pyproject.toml")  # pytest markers and options only
        session.chdir(tmp)
        package = canonicalize_name(dist).replace("-", "_")
        where = f"import {package}; assert 'site-packages' in {package}.__file__; print('testing', {package}.__file__)"
        session.run("python", "-c", where)
        pytest = ("python", "-m", "pytest", "tests", "-p", "no:cacheprovider", "--rootdir", tmp, *session.posargs)
        session.run(*pytest, env={"WANDB_SILENT": "true", **TEST_ENV.get(dist, {})})
        session.chdir(ROOT)


def lowest(session) -> None:
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
    session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", "pa-core", silent=True)
    session.install("-c", str(constraints), *TEST_TOOLS, str(ROOT / "packages/core"))
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    installed = time.monotonic()
    session.run("python", "-m", "pytest", str(ROOT / "packages/core/tests"), *session.posargs)
    session.log(f"lowest: install {installed - start:.0f} s, tests {time.monotonic() - installed:.0f} s")


def _version(dist: str) -> str:
    return check_dists.read_project(ROOT / DISTRIBUTIONS[dist]).version


def _wheel(session, dist: str) -> Path:
    path = DIST / f"{canonicalize_name(dist).replace('-', '_')}-{_version(dist)}-py3-none-any.whl"
    if not path.exists():
        session.error(f"no {path.name} in {DIST}: run `nox -s build` first")
    return path


def _pa_requirements(session, wheel: Path, seen: set[str] | None = None, extras: tuple[str, ...] = ()) -> set[str]:
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
