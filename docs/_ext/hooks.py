"""MkDocs hooks: tables generated from the repository, so the pages cannot drift from the code.

A page asks for generated content with an HTML comment on a line of its own; the comment is replaced before the
page's Markdown is converted:

- ``<!-- pa:hooks-table -->``: every hook of ``pa_core/hookspecs.py``, its arguments, phase and first sentence;
- ``<!-- pa:callback-catalogue -->``: every ``pa.callbacks`` name declared by a pyproject.toml under packages/;
- ``<!-- pa:matrix-rows -->``: the rows of the hardware matrix, from ``matrix/rows.py``;
- ``<!-- pa:upstream-imports -->``: where each pytorch-accelerated module and name lives in pa, from the tables
  ``pa migrate`` uses (``pa_core/migrate.py``);
- ``<!-- pa:examples-reference -->``: a section per ``pa.examples`` entry point of pa-examples, with the module's
  API (``::: module``);
- ``<!-- pa:readme-section TITLE -->``: the body of the README's ``## TITLE`` section, so that figures kept in the
  README (the performance measurements) have one source; its links are made to point at the repository.

Everything is read from source files; nothing imports torch or a pa package.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/pa-dev/pa/blob/main"
_MARKER = re.compile(r"^<!-- pa:(?P<name>[a-z-]+)(?: (?P<argument>[^>]*?))? -->$", re.MULTILINE)


def _load_by_path(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def hooks_table() -> str:
    path = ROOT / "packages/core/src/pa_core/hookspecs.py"
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    phases: list[tuple[int, str]] = []
    for index, line in enumerate(lines[1:], start=1):
        if re.fullmatch(r"# [A-Z][\w -]*", line) and lines[index - 1].startswith("# ---"):
            phases.append((index + 1, line[2:].strip()))
    rows = ["| hook | arguments besides `trainer` | phase | when it fires |", "|---|---|---|---|"]
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        if not any(isinstance(d, ast.Name) and d.id == "hookspec" for d in node.decorator_list):
            continue
        docstring = ast.get_docstring(node) or ""
        first = re.split(r"(?<=\.)\s", " ".join(docstring.split("\n\n")[0].split()), maxsplit=1)[0]
        first = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", first.replace("*Hot.*", "")).strip()
        args = ", ".join(f"`{a.arg}`" for a in node.args.args if a.arg != "trainer") or "none"
        phase = next((title for line_no, title in reversed(phases) if line_no < node.lineno), "")
        hot = " **hot** (once per batch or update)" if "*Hot.*" in docstring else ""
        link = f"[`{node.name}`][pa_core.hookspecs.{node.name}]"
        rows.append(f"| {link} | {args} | {phase} | {_cell(first)}{hot} |")
    return "\n".join(rows)


def callback_catalogue() -> str:
    rows = ["| name | class | distribution |", "|---|---|---|"]
    for pyproject in sorted(ROOT.glob("packages/**/pyproject.toml")):
        if ".nox" in pyproject.parts:
            continue
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        for name, value in project.get("entry-points", {}).get("pa.callbacks", {}).items():
            module, _, attribute = value.partition(":")
            public = module.split(".")[0]
            identifier = f"{public}.{attribute}"
            rows.append(f"| `{name}` | [`{attribute}`][{identifier}] | {project.get('name', '?')} |")
    return "\n".join(rows)


_LAUNCHERS = {
    "accelerate": "`accelerate launch --config_file matrix/configs/{config}`",
    "torchrun": "`torchrun --nproc_per_node 2` (config {config})",
    "two-node": "two `accelerate launch --config_file matrix/configs/{config}`, `--machine_rank 0` and `1`",
    "torchrun-deepspeed": "`torchrun --nproc_per_node 2`, DeepSpeed from pa-deepspeed's callback ({config})",
    "notebook": "`accelerate.notebook_launcher` ({config})",
}


def matrix_rows() -> str:
    rows_module: Any = _load_by_path("_pa_docs_matrix_rows", ROOT / "matrix/rows.py")
    rows = ["| row | launched with | needs | what it runs |", "|---|---|---|---|"]
    for row in rows_module.ROWS.values():
        configs = ", ".join(row.configs)
        launcher = _LAUNCHERS.get(row.launcher, f"`{row.launcher}`").format(config=configs)
        needs = f"{row.gpus} GPU{'s' if row.gpus > 1 else ''}" if row.gpus else "CPU only"
        others = [name for name in row.distributions if name != "pa-core"]
        if others:
            needs += " + " + ", ".join(f"`{name}`" for name in others)
        rows.append(f"| `{row.name}` | {launcher} | {needs} | {_cell(row.description)} |")
    return "\n".join(rows)


def upstream_imports() -> str:
    migrate: Any = _load_by_path("_pa_docs_migrate", ROOT / "packages/core/src/pa_core/migrate.py")
    rows = ["| pytorch-accelerated 0.1.61 | pa | public names |", "|---|---|---|"]
    for module, target in migrate.MODULES.items():
        names = [
            name
            for name in migrate.UPSTREAM_NAMES.get(module, ())
            if migrate.MOVED_NAMES.get((module, name), target) == target
        ]
        shown = ", ".join(f"`{n}`" for n in names) or "-"
        rows.append(f"| `{module}` | `{target}` | {shown} |")
    rows += ["", "Names an upstream module re-exported from elsewhere:", ""]
    rows += ["| upstream import | in pa |", "|---|---|"]
    for (module, name), target in migrate.MOVED_NAMES.items():
        where = f"`from {target} import {name}`" if target else "no equivalent: `pa migrate` keeps the import, noted"
        rows.append(f"| `from {module} import {name}` | {where} |")
    return "\n".join(rows)


def examples_reference() -> str:
    pyproject = ROOT / "packages/examples/pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    examples = project.get("entry-points", {}).get("pa.examples", {})
    if not examples:
        return "pa-examples declares no examples in this checkout."
    sections = []
    for name, value in sorted(examples.items()):
        module = value.partition(":")[0]
        sections.append(
            f"## `{name}`\n\n`pa-examples run {name}` runs `{value}`.\n\n"
            f"::: {module}\n    options:\n      show_root_heading: false\n      show_root_toc_entry: false\n"
            "      heading_level: 3\n"
        )
    return "\n".join(sections)


def readme_section(title: str) -> str:
    """The body of the README's ``## title`` section, its headings one level up (the page's own title replaces
    the section's) and its relative links pointing at the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"(?ms)^## {re.escape(title)}[ \t]*\n(?P<body>.*?)(?=^## |\Z)", readme)
    if match is None:
        raise ValueError(f"README.md has no '## {title}' section (asked for by a <!-- pa:readme-section --> line)")

    def absolute(link: re.Match[str]) -> str:
        target = link["target"]
        if re.match(r"[a-z]+:", target):
            return link[0]
        if target.startswith("#"):
            return f"]({REPOSITORY}/README.md{target})"
        return f"]({REPOSITORY}/{target})"

    body = re.sub(r"\]\((?P<target>[^)\s]+)\)", absolute, match["body"])
    return re.sub(r"(?m)^#(#{2,5}) ", r"\1 ", body).strip()


GENERATORS = {
    "hooks-table": hooks_table,
    "callback-catalogue": callback_catalogue,
    "matrix-rows": matrix_rows,
    "upstream-imports": upstream_imports,
    "examples-reference": examples_reference,
    "readme-section": readme_section,
}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each ``<!-- pa:NAME -->`` (or ``<!-- pa:NAME ARGUMENT -->``) line with the content NAME generates."""

    def generate(match: re.Match[str]) -> str:
        generator: Any = GENERATORS.get(match["name"])
        if generator is None:
            raise ValueError(f"unknown generated content {match['name']!r}; known: {', '.join(GENERATORS)}")
        return generator(match["argument"]) if match["argument"] else generator()

    return _MARKER.sub(generate, markdown)
