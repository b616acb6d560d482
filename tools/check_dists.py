"""Check the built sdists and wheels of pa's distributions before they are installed or uploaded.

    python tools/check_dists.py [--wheel-only] DIST_DIR [PROJECT_DIR ...]

DIST_DIR holds the built files (``nox -s build`` writes them to ./dist). PROJECT_DIR is a folder with a
pyproject.toml; without any, every distribution under packages/ is checked. Each distribution's wheel and
sdist are read as archives (zipfile / tarfile, METADATA through email.parser) and compared with what its
pyproject.toml declares. Nothing is imported or installed.

A wheel must:
  - hold only the distribution's own import package(s) and its .dist-info (no top-level tests, docs, examples),
    no compiled caches, and a RECORD that lists exactly the files it holds;
  - carry the README as its long description (Markdown), the license expression and license file, trove
    classifiers (no License classifiers: the license expression replaces them), Requires-Python, project URLs;
  - require each dependency with a lower bound, and another pa distribution with a compatible range
    (``pa-core>=0.1,<0.2``) that contains that distribution's current version;
  - declare exactly the entry points and scripts of pyproject.toml, each pointing at a module in the wheel;
  - have the version stated in src/<package>/__about__.py.
An sdist must hold pyproject.toml, README.md, LICENSE, PKG-INFO and the sources (tests are allowed).

Exit status 0 when every distribution passes; otherwise 1, with one line per problem naming the distribution.
"""

from __future__ import annotations

import argparse
import configparser
import email.parser
import re
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_URLS = ("Homepage", "Source")
# Files an sdist may hold besides the sources under src/ and the tests under tests/.
SDIST_TOP_LEVEL = {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO", ".gitignore"}
VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


# --------------------------------------------------------------------------------------------------------------
# What pyproject.toml declares
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Project:
    folder: Path
    name: str
    version: str
    import_packages: list[str]
    table: dict  # the [project] table
    entry_points: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def wheel_stem(self) -> str:
        """``pa-core`` 0.1.0 -> ``pa_core-0.1.0``: how wheel and sdist file names spell it."""
        return f"{canonicalize_name(self.name).replace('-', '_')}-{self.version}"


def read_project(folder: Path) -> Project:
    data = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    table = data.get("project", {})
    hatch = data.get("tool", {}).get("hatch", {})
    name = table.get("name", folder.name)

    if "version" in table:
        version = str(table["version"])
    else:
        version_path = hatch.get("version", {}).get("path")
        if not version_path:
            raise SystemExit(f"{name}: pyproject.toml states no version and no [tool.hatch.version] path")
        match = VERSION_LINE.search((folder / version_path).read_text(encoding="utf-8"))
        if not match:
            raise SystemExit(f"{name}: no __version__ = '...' line in {version_path}")
        version = match.group(1)

    package_paths = hatch.get("build", {}).get("targets", {}).get("wheel", {}).get("packages", [])
    import_packages = [Path(p).name for p in package_paths] or [canonicalize_name(name).replace("-", "_")]

    entry_points: dict[str, dict[str, str]] = {}
    for group, entries in table.get("entry-points", {}).items():
        if entries:
            entry_points[group] = dict(entries)
    for key, group in (("scripts", "console_scripts"), ("gui-scripts", "gui_scripts")):
        if table.get(key):
            entry_points[group] = dict(table[key])
    return Project(folder, name, version, import_packages, table, entry_points)


def discover_projects(root: Path = ROOT) -> list[Path]:
    """Every distribution folder under packages/ (test fixtures elsewhere are not pa distributions)."""
    return sorted(p.parent for p in (root / "packages").rglob("pyproject.toml") if "tests" not in p.parts)


def pa_versions(root: Path = ROOT) -> dict[str, str]:
    """Current version of every pa distribution in the repository, by canonical name."""
    return {canonicalize_name(p.name): p.version for p in map(read_project, discover_projects(root))}


# --------------------------------------------------------------------------------------------------------------
# Checks on what the archives hold
# --------------------------------------------------------------------------------------------------------------


def check_requirement(line: str, pa: dict[str, str], where: str) -> list[str]:
    """One Requires-Dist line: a lower bound always; a compatible range for another pa distribution."""
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        return [f"{where}: invalid requirement {line!r} ({exc})"]
    specs = list(req.specifier)
    if req.url:
        return [f"{where}: {line!r} is a direct reference; published metadata must name a version range"]
    lower = [s for s in specs if s.operator in (">=", ">", "==", "~=", "===")]
    if not lower:
        return [f"{where}: {line!r} has no lower bound (write e.g. {req.name}>=X.Y, the oldest version it works with)"]
    name = canonicalize_name(req.name)
    if name in pa:
        current = Version(pa[name])
        # The first release allowed to break dependents: the next minor while 0.x, the next major after.
        breaking = f"0.{current.minor + 1}" if current.major == 0 else f"{current.major + 1}.0"
        if not req.specifier.contains(current, prereleases=True):
            return [f"{where}: {line!r} excludes the current {req.name} {current} in this repository"]
        if req.specifier.contains(breaking, prereleases=True):
            return [
                f"{where}: {line!r} allows {req.name} {breaking}, which may break it: pa distributions require "
                f"each other with a compatible range, e.g. {req.name}>={current.major}.{current.minor},<{breaking}"
            ]
    return []


def entry_point_module_file(value: str) -> str:
    """``pa_core.cli:main`` -> ``pa_core/cli`` (the module a wheel must hold)."""
    return value.split(":", 1)[0].strip().replace(".", "/")


def check_wheel(project: Project, wheel: Path, pa: dict[str, str]) -> list[str]:
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        dist_info = f"{project.wheel_stem}.dist-info/"

        # Layout: only the import package(s) and the .dist-info.
        allowed = tuple(f"{p}/" for p in project.import_packages) + (dist_info,)
        stray = sorted(n for n in names if not n.startswith(allowed))
        if stray:
            tops = sorted({n.split("/")[0] + ("/" if "/" in n else "") for n in stray})
            problems.append(
                f"wheel holds files outside {', '.join(allowed)}: top-level {', '.join(tops)} "
                f"(e.g. {stray[0]}); only the import package and its .dist-info may be installed"
            )
        caches = [n for n in names if "__pycache__/" in n or n.endswith((".pyc", ".pyo"))]
        if caches:
            problems.append(f"wheel holds compiled caches: {caches[0]}")
        for package in project.import_packages:
            if f"{package}/__init__.py" not in names:
                problems.append(f"wheel has no {package}/__init__.py")

        for required in ("METADATA", "WHEEL", "RECORD"):
            if dist_info + required not in names:
                problems.append(f"wheel has no {dist_info}{required}")
        if problems and dist_info + "METADATA" not in names:
            return problems

        # RECORD lists exactly the files in the archive.
        if dist_info + "RECORD" in names:
            recorded = {row.split(",")[0] for row in zf.read(dist_info + "RECORD").decode().splitlines() if row}
            if recorded != set(names):
                diff = sorted(recorded.symmetric_difference(names))
                problems.append(f"wheel RECORD does not match its files: {', '.join(diff[:5])}")

        metadata_text = zf.read(dist_info + "METADATA").decode("utf-8")
        problems += check_metadata(project, metadata_text, pa, "METADATA", archive_names=names, prefix=dist_info)

        # Entry points: exactly those declared, each pointing at a module in this wheel.
        declared = project.entry_points
        built: dict[str, dict[str, str]] = {}
        if dist_info + "entry_points.txt" in names:
            parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
            parser.optionxform = str  # keep names as written
            parser.read_string(zf.read(dist_info + "entry_points.txt").decode("utf-8"))
            built = {g: dict(parser[g]) for g in parser.sections() if dict(parser[g])}
        for group in sorted(set(declared) | set(built)):
            want, have = declared.get(group, {}), built.get(group, {})
            for ep in sorted(set(want) - set(have)):
                problems.append(
                    f"entry point {ep!r} in group {group!r} is declared in pyproject.toml but not in the wheel"
                )
            for ep in sorted(set(have) - set(want)):
                problems.append(
                    f"entry point {ep!r} in group {group!r} is in the wheel but not declared in pyproject.toml"
                )
            for ep in sorted(set(want) & set(have)):
                if want[ep].replace(" ", "") != have[ep].replace(" ", ""):
                    problems.append(
                        f"entry point {ep!r} ({group}) is {have[ep]!r} in the wheel, {want[ep]!r} in pyproject.toml"
                    )
        for group, entries in built.items():
            for ep, value in entries.items():
                module = entry_point_module_file(value)
                if f"{module}.py" not in names and f"{module}/__init__.py" not in names:
                    problems.append(f"entry point {ep!r} ({group}) = {value!r}: the wheel has no {module}.py")

        # The version stated in __about__.py is the one built.
        about = f"{project.import_packages[0]}/__about__.py"
        if about in names:
            match = VERSION_LINE.search(zf.read(about).decode("utf-8"))
            if not match or match.group(1) != project.version:
                problems.append(f"{about} in the wheel does not state version {project.version}")
    return problems


def check_metadata(
    project: Project, text: str, pa: dict[str, str], where: str, archive_names: list[str], prefix: str
) -> list[str]:
    problems: list[str] = []
    msg = email.parser.Parser().parsestr(text)
    declared = project.table

    def field_values(name: str) -> list[str]:
        return [str(v) for v in msg.get_all(name) or []]

    if canonicalize_name(msg.get("Name", "")) != canonicalize_name(project.name):
        problems.append(f"{where}: Name is {msg.get('Name')!r}, pyproject.toml says {project.name!r}")
    if msg.get("Version") != project.version:
        problems.append(f"{where}: Version is {msg.get('Version')!r}, __about__.py says {project.version!r}")
    if not (msg.get("Summary") or "").strip():
        problems.append(f"{where}: no Summary (set description in pyproject.toml)")

    # README as the long description.
    readme_path = project.folder / "README.md"
    body = msg.get_payload() or ""
    if msg.get("Description-Content-Type", "").split(";")[0].strip() != "text/markdown":
        problems.append(
            f"{where}: Description-Content-Type is {msg.get('Description-Content-Type')!r}, not text/markdown"
        )
    if not readme_path.exists():
        problems.append("the project has no README.md")
    elif body.strip() != readme_path.read_text(encoding="utf-8").strip():
        problems.append(f'{where}: the long description is not README.md (set readme = "README.md")')
    elif not body.strip():
        problems.append(f"{where}: README.md is empty")

    # License: an SPDX expression, the license file inside the archive, no License classifiers.
    expression = msg.get("License-Expression")
    if not expression:
        problems.append(f'{where}: no License-Expression (set license = "Apache-2.0" in pyproject.toml)')
    elif declared.get("license") and expression != declared["license"]:
        problems.append(f"{where}: License-Expression {expression!r} differs from pyproject.toml")
    license_files = field_values("License-File")
    if not license_files:
        problems.append(f"{where}: no License-File (put a LICENSE file next to pyproject.toml)")
    for lf in license_files:
        candidates = (f"{prefix}licenses/{lf}", f"{prefix}{lf}")
        if not any(c in archive_names for c in candidates):
            problems.append(f"{where}: License-File {lf!r} is not in the archive")

    classifiers = field_values("Classifier")
    if not classifiers:
        problems.append(f"{where}: no classifiers")
    if expression:
        legacy = [c for c in classifiers if c.startswith("License ::")]
        if legacy:
            problems.append(f"{where}: License classifier {legacy[0]!r} next to License-Expression (PyPI rejects it)")
    if "Programming Language :: Python :: 3" not in classifiers:
        problems.append(f"{where}: missing classifier 'Programming Language :: Python :: 3'")
    try:
        from trove_classifiers import classifiers as known  # optional: validates spelling
    except ModuleNotFoundError:
        known = None
    if known is not None:
        for c in classifiers:
            if c not in known:
                problems.append(f"{where}: unknown classifier {c!r}")

    requires_python = msg.get("Requires-Python")
    if not requires_python or ">" not in requires_python:
        problems.append(f"{where}: Requires-Python {requires_python!r} has no lower bound")

    urls = dict(u.split(", ", 1) for u in field_values("Project-URL") if ", " in u)
    for label in REQUIRED_URLS:
        if label not in urls:
            problems.append(f"{where}: no Project-URL {label!r} (add it under [project.urls])")
    for label, url in urls.items():
        if not url.startswith("https://"):
            problems.append(f"{where}: Project-URL {label!r} is not https: {url!r}")

    # Dependencies: lower bounds, compatible ranges between pa distributions, same as pyproject.toml.
    requires = field_values("Requires-Dist")
    for line in requires:
        problems += check_requirement(line, pa, f"{where}: Requires-Dist")
    expected = [Requirement(r) for r in declared.get("dependencies", [])]
    for extra, reqs in declared.get("optional-dependencies", {}).items():
        for r in reqs:
            req = Requirement(r)
            marker = f'extra == "{extra}"' + (f" and ({req.marker})" if req.marker else "")
            expected.append(Requirement(f"{str(req).split(';')[0]}; {marker}"))
    if {_req_key(r) for r in map(Requirement, requires)} != {_req_key(r) for r in expected}:
        problems.append(
            f"{where}: Requires-Dist {sorted(requires)} differs from pyproject.toml's dependencies; rebuild"
        )
    return problems


def _req_key(req: Requirement) -> tuple[str, str, str]:
    marker = str(req.marker).replace("'", '"') if req.marker else ""
    return canonicalize_name(req.name), str(req.specifier), marker


def check_sdist(project: Project, sdist: Path) -> list[str]:
    problems: list[str] = []
    top = project.wheel_stem + "/"
    with tarfile.open(sdist) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
        outside = [n for n in names if not n.startswith(top)]
        if outside:
            problems.append(f"sdist holds files outside {top}: {outside[0]}")
        rel = [n[len(top) :] for n in names if n.startswith(top)]
        for required in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO"):
            if required not in rel:
                problems.append(f"sdist has no {required}")
        for package in project.import_packages:
            if f"src/{package}/__init__.py" not in rel:
                problems.append(f"sdist has no src/{package}/__init__.py")
        stray = [
            r
            for r in rel
            if (r not in SDIST_TOP_LEVEL and not r.startswith(("src/", "tests/")))
            or "__pycache__/" in r
            or r.endswith(".pyc")
        ]
        if stray:
            problems.append(f"sdist holds unexpected files: {', '.join(sorted(stray)[:5])}")
        if "PKG-INFO" in rel:
            pkg_info = email.parser.Parser().parsestr(tf.extractfile(top + "PKG-INFO").read().decode("utf-8"))
            if pkg_info.get("Version") != project.version:
                problems.append(f"sdist PKG-INFO: Version {pkg_info.get('Version')!r}, expected {project.version!r}")
    return problems


def warnings_for(project: Project) -> list[str]:
    """Not failures: things that look wrong on the package index page."""
    readme = project.folder / "README.md"
    if not readme.exists():
        return []
    links = RELATIVE_LINK.findall(readme.read_text(encoding="utf-8"))
    if links:
        return [f"README.md has relative links that are broken on the package index page: {', '.join(links[:4])}"]
    return []


def check_project(
    folder: Path, dist_dir: Path, pa: dict[str, str], wheel_only: bool = False
) -> tuple[Project | None, list[str], list[str]]:
    try:
        project = read_project(folder)
    except (OSError, SystemExit, tomllib.TOMLDecodeError) as exc:
        return None, [f"cannot read {folder / 'pyproject.toml'}: {exc}"], []
    problems: list[str] = []
    wheel = dist_dir / f"{project.wheel_stem}-py3-none-any.whl"
    sdist = dist_dir / f"{project.wheel_stem}.tar.gz"
    if wheel.exists():
        problems += check_wheel(project, wheel, pa)
    else:
        others = sorted(p.name for p in dist_dir.glob(f"{project.wheel_stem.split('-')[0]}-*.whl"))
        problems.append(f"no wheel {wheel.name} in {dist_dir}" + (f" (found {', '.join(others)})" if others else ""))
    if wheel_only:
        pass
    elif sdist.exists():
        problems += check_sdist(project, sdist)
    else:
        problems.append(f"no sdist {sdist.name} in {dist_dir}")
    return project, problems, warnings_for(project)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist_dir", type=Path, help="folder with the built wheels and sdists")
    parser.add_argument("projects", type=Path, nargs="*", help="distribution folders (default: all under packages/)")
    parser.add_argument("--wheel-only", action="store_true", help="check the wheels and not the sdists")
    args = parser.parse_args(argv)

    folders = args.projects or discover_projects()
    pa = pa_versions()
    failed = 0
    for folder in folders:
        project, problems, warnings = check_project(folder.resolve(), args.dist_dir, pa, args.wheel_only)
        label = f"{project.name} {project.version}" if project else str(folder)
        for warning in warnings:
            print(f"WARNING {label}: {warning}")
        if problems:
            failed += 1
            for problem in problems:
                print(f"FAIL {label}: {problem}")
        else:
            print(f"ok   {label}: {'wheel passes' if args.wheel_only else 'wheel and sdist pass'}")
    if failed:
        print(f"\n{failed} of {len(folders)} distribution(s) failed the check.")
        return 1
    print(f"\nAll {len(folders)} distribution(s) pass.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
