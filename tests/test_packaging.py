"""Packaging: pa-core's wheel installs only pa_core/ and its metadata, declares what its pyproject.toml says, and
tools/check_dists.py rejects a broken distribution with a message naming it and the problem.

The wheel is built with hatchling when this environment has it, else with `build`, else with `pip wheel`.
"""

from __future__ import annotations

import email.parser
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "packages" / "core"
CHECK_DISTS = ROOT / "tools" / "check_dists.py"
CORE_VERSION = re.search(r'__version__ = "([^"]+)"', (CORE / "src/pa_core/__about__.py").read_text()).group(1)
WHEEL_NAME = f"pa_core-{CORE_VERSION}-py3-none-any.whl"
DIST_INFO = f"pa_core-{CORE_VERSION}.dist-info/"


def _load_check_dists():
    spec = importlib.util.spec_from_file_location("pa_tools_check_dists", CHECK_DISTS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def build_wheel(project: Path, out: Path) -> bool:
    """Build the project's wheel (and its sdist where the tool makes one) into `out`; True if an sdist was made."""
    if importlib.util.find_spec("hatchling"):
        cmd, sdist = [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-t", "sdist", "-d", str(out)], True
    elif importlib.util.find_spec("build"):
        cmd, sdist = [sys.executable, "-m", "build", "--outdir", str(out), "."], True
    else:  # an isolated build: pip fetches hatchling from the index
        cmd, sdist = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."], False
    subprocess.run(cmd, cwd=project, check=True, capture_output=True, text=True)
    return sdist


def run_check(dist_dir: Path, project: Path, wheel_only: bool) -> subprocess.CompletedProcess:
    flags = ["--wheel-only"] if wheel_only else []
    return subprocess.run(
        [sys.executable, str(CHECK_DISTS), *flags, str(dist_dir), str(project)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def core_dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    has_sdist = build_wheel(CORE, out)
    return out, not has_sdist


def rewrite_wheel(src: Path, dst: Path, edit) -> None:
    """Copy a wheel, letting `edit(files)` change its {name: bytes}; RECORD is rewritten to match."""
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    edit(files)
    record = DIST_INFO + "RECORD"
    files[record] = "".join(f"{n},,\n" for n in files if n != record).encode() + f"{record},,\n".encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def test_core_wheel_holds_only_pa_core_and_its_dist_info(core_dist):
    dist_dir, _ = core_dist
    with zipfile.ZipFile(dist_dir / WHEEL_NAME) as zf:
        names = zf.namelist()
        metadata = email.parser.Parser().parsestr(zf.read(DIST_INFO + "METADATA").decode())
        entry_points = zf.read(DIST_INFO + "entry_points.txt").decode()

    assert names and all(n.startswith(("pa_core/", DIST_INFO)) for n in names), names
    assert {"pa_core/__init__.py", "pa_core/cli.py", "pa_core/hookspecs.py", "pa_core/testing.py"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/")) or "__pycache__" in n]

    assert metadata["Name"] == "pa-core" and metadata["Version"] == CORE_VERSION
    assert metadata["License-Expression"] == "Apache-2.0"
    assert DIST_INFO + "licenses/LICENSE" in names
    assert metadata["Requires-Python"] == ">=3.10"
    requires = {re.split(r"[<>=!~ ;\[]", r)[0] for r in metadata.get_all("Requires-Dist")}
    assert {"torch", "accelerate", "pluggy"} <= requires
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (CORE / "README.md").read_text().strip()
    assert re.search(r"^\[console_scripts\]\s*\npa = pa_core\.cli:main$", entry_points, re.MULTILINE), entry_points


def test_check_dists_passes_the_real_core_distribution(core_dist):
    dist_dir, wheel_only = core_dist
    result = run_check(dist_dir, CORE, wheel_only)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok   pa-core {CORE_VERSION}" in result.stdout


def test_a_wheel_with_a_stray_top_level_tests_package_is_rejected(core_dist, tmp_path):
    dist_dir, _ = core_dist

    def add_tests(files):
        files["tests/__init__.py"] = b""
        files["tests/test_trainer.py"] = b"def test(): pass\n"

    rewrite_wheel(dist_dir / WHEEL_NAME, tmp_path / WHEEL_NAME, add_tests)
    result = run_check(tmp_path, CORE, wheel_only=True)
    assert result.returncode == 1
    assert f"FAIL pa-core {CORE_VERSION}: wheel holds files outside pa_core/" in result.stdout
    assert "top-level tests/" in result.stdout


def test_a_wheel_missing_a_declared_entry_point_is_rejected(core_dist, tmp_path):
    dist_dir, _ = core_dist

    def drop_pa_script(files):
        text = files[DIST_INFO + "entry_points.txt"].decode()
        files[DIST_INFO + "entry_points.txt"] = re.sub(r"(?m)^pa = .*\n?", "", text).encode()

    rewrite_wheel(dist_dir / WHEEL_NAME, tmp_path / WHEEL_NAME, drop_pa_script)
    result = run_check(tmp_path, CORE, wheel_only=True)
    assert result.returncode == 1
    assert (
        f"FAIL pa-core {CORE_VERSION}: entry point 'pa' in group 'console_scripts' is declared in pyproject.toml "
        "but not in the wheel"
    ) in result.stdout


def test_requirements_without_bounds_are_rejected(tmp_path):
    """A copy of pa-core whose pyproject requires pluggy with no lower bound and pa-callbacks with no upper one."""
    project = tmp_path / "core"
    shutil.copytree(CORE, project, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info"))
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '"pluggy>=1.5"' in text
    pyproject.write_text(text.replace('"pluggy>=1.5"', '"pluggy", "pa-callbacks>=0.1"'))
    wheel_only = not build_wheel(project, tmp_path / "dist")

    result = run_check(tmp_path / "dist", project, wheel_only)
    assert result.returncode == 1
    assert f"FAIL pa-core {CORE_VERSION}: METADATA: Requires-Dist: 'pluggy' has no lower bound" in result.stdout
    assert "'pa-callbacks>=0.1' allows pa-callbacks 0.2, which may break it" in result.stdout


def test_pa_distributions_require_each_other_with_compatible_ranges():
    """Every pa distribution states its version once (__about__.py) and requires other pa distributions as
    >=0.X,<0.(X+1), a range that holds the version in this repository."""
    check_dists = _load_check_dists()
    projects = [check_dists.read_project(folder) for folder in check_dists.discover_projects(ROOT)]
    versions = check_dists.pa_versions(ROOT)
    assert {p.name for p in projects} >= {"pa-core", "pa-callbacks", "pa-wandb", "pa-torchmetrics", "pa-examples"}
    problems = []
    for project in projects:
        assert project.table.get("dynamic") == ["version"], f"{project.name}: version must come from __about__.py"
        for line in project.table.get("dependencies", []):
            problems += check_dists.check_requirement(line, versions, project.name)
    assert not problems, "\n".join(problems)


def test_pa_version_reports_the_version_in_about(capsys):
    from pa_core import cli

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"pa-core {CORE_VERSION}"

    script = Path(sys.executable).parent / "pa"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "pa_core.cli"]
    result = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[0] == f"pa-core {CORE_VERSION}"


def test_every_distribution_ships_the_repository_license():
    """Each distribution folder has its own copy of the root LICENSE (hatchling puts it in the wheel)."""
    check_dists = _load_check_dists()
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    for folder in check_dists.discover_projects(ROOT):
        assert (folder / "LICENSE").read_text() == license_text, f"{folder / 'LICENSE'} differs from the root LICENSE"
