"""The layering of SPEC section 1, checked on the source: who may import whom.

- pa_core imports no other pa distribution, nor tqdm, wandb, deepspeed or torchmetrics;
- pa-callbacks and the integrations import pa_core only (never each other, nor one integration another);
- nothing imports pa_examples.

Every import statement counts, also those inside functions and under ``if TYPE_CHECKING:``, and so do
``importlib.import_module("name")`` / ``__import__("name")`` calls with a literal name.
"""

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "pa_core": ROOT / "packages/core/src/pa_core",
    "pa_callbacks": ROOT / "packages/callbacks/src/pa_callbacks",
    "pa_wandb": ROOT / "packages/integrations/wandb/src/pa_wandb",
    "pa_torchmetrics": ROOT / "packages/integrations/torchmetrics/src/pa_torchmetrics",
    "pa_deepspeed": ROOT / "packages/integrations/deepspeed/src/pa_deepspeed",
    "pa_examples": ROOT / "packages/examples/src/pa_examples",
}
OURS = set(SOURCES)
INTEGRATIONS = {"pa_wandb", "pa_torchmetrics", "pa_deepspeed"}
FORBIDDEN = {
    "pa_core": (OURS - {"pa_core"}) | {"tqdm", "wandb", "deepspeed", "torchmetrics"},
    "pa_callbacks": (OURS - {"pa_core", "pa_callbacks"}) | {"wandb", "deepspeed", "torchmetrics"},
    **{name: OURS - {"pa_core", name} for name in INTEGRATIONS},
    "pa_examples": set(),
}


def _imported_names(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
        ):
            names.append(node.args[0].value)
    return names


def imported_top_level_names(package_dir: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for name in _imported_names(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def layering_violations(sources=SOURCES) -> list[str]:
    violations = []
    for package, package_dir in sources.items():
        if not package_dir.exists():
            continue
        imports = imported_top_level_names(package_dir)
        for name in sorted(FORBIDDEN[package] & set(imports)):
            violations.append(f"{package} imports {name} in {sorted(imports[name])}")
    return violations


def test_layering_holds():
    assert layering_violations() == []


def test_every_distribution_is_checked_and_none_may_import_the_examples():
    assert all(path.is_dir() for path in SOURCES.values())
    assert set(FORBIDDEN) == OURS
    assert all("pa_examples" in FORBIDDEN[package] for package in OURS - {"pa_examples"})


@pytest.mark.parametrize(
    ("package", "bad_line", "expected"),
    [
        ("pa_core", "from pa_callbacks import ProgressBarCallback", "pa_core imports pa_callbacks"),
        ("pa_core", "import tqdm.auto", "pa_core imports tqdm"),
        ("pa_core", "from wandb import init", "pa_core imports wandb"),
        ("pa_core", "import torchmetrics", "pa_core imports torchmetrics"),
        ("pa_core", "import deepspeed", "pa_core imports deepspeed"),
        ("pa_core", "importlib.import_module('pa_wandb')", "pa_core imports pa_wandb"),
        ("pa_callbacks", "from pa_wandb import WandbCallback", "pa_callbacks imports pa_wandb"),
        ("pa_callbacks", "import torchmetrics", "pa_callbacks imports torchmetrics"),
        ("pa_wandb", "from pa_callbacks import LogMetricsCallback", "pa_wandb imports pa_callbacks"),
        ("pa_torchmetrics", "from pa_wandb import WandbCallback", "pa_torchmetrics imports pa_wandb"),
        ("pa_callbacks", "from pa_examples import digits", "pa_callbacks imports pa_examples"),
    ],
)
def test_breaking_a_rule_in_the_real_sources_is_caught(tmp_path, package, bad_line, expected):
    """A copy of the real package with one forbidden import (inside a function, where it is easiest to
    miss) fails the check, and the message names the package, the import and the file."""
    copy = tmp_path / package
    shutil.copytree(SOURCES[package], copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "sneaky.py").write_text(f"import importlib\n\n\ndef later():\n    {bad_line}\n", encoding="utf-8")

    violations = layering_violations({package: copy})

    assert violations == [f"{expected} in ['sneaky.py']"]
