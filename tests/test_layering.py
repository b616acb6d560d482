"""The layering of SPEC section 1, checked on the source: who may import whom.

- pa_core imports no other pa distribution, nor tqdm, wandb, deepspeed, torchmetrics, tensorboard or mlflow;
- pa-callbacks and the integrations import pa_core only (never each other, nor one integration another);
- pa-tracking imports, besides pa_core, only the trackers it bridges (through Accelerate);
- nothing imports pa_examples.

Every import statement counts, also those inside functions and under ``if TYPE_CHECKING:``, and so do
``importlib.import_module("name")`` / ``__import__("name")`` calls with a literal name.
"""

import ast
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "pa_core": ROOT / "packages/core/src/pa_core",
    "pa_callbacks": ROOT / "packages/callbacks/src/pa_callbacks",
    "pa_wandb": ROOT / "packages/integrations/wandb/src/pa_wandb",
    "pa_torchmetrics": ROOT / "packages/integrations/torchmetrics/src/pa_torchmetrics",
    "pa_deepspeed": ROOT / "packages/integrations/deepspeed/src/pa_deepspeed",
    "pa_tracking": ROOT / "packages/integrations/tracking/src/pa_tracking",
    "pa_examples": ROOT / "packages/examples/src/pa_examples",
}
OURS = set(SOURCES)
INTEGRATIONS = {"pa_wandb", "pa_torchmetrics", "pa_deepspeed", "pa_tracking"}
TRACKERS = {"tensorboard", "tensorboardX", "torch.utils.tensorboard", "mlflow"}
FORBIDDEN = {
    "pa_core": (OURS - {"pa_core"}) | {"tqdm", "wandb", "deepspeed", "torchmetrics"} | TRACKERS,
    "pa_callbacks": (OURS - {"pa_core", "pa_callbacks"}) | {"wandb", "deepspeed", "torchmetrics"} | TRACKERS,
    **{name: OURS - {"pa_core", name} for name in INTEGRATIONS},
    "pa_examples": set(),
}
# What pa_tracking may import: the standard library, torch, Accelerate, pa_core and the trackers' libraries.
TRACKING_ALLOWED = {"accelerate", "torch", "pa_core", "pa_tracking", *TRACKERS}


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


def imported_modules(package_dir: Path) -> dict[str, set[str]]:
    """Every imported module and the packages above it (``a.b.c`` counts as ``a``, ``a.b`` and ``a.b.c``)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for name in _imported_names(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                found.setdefault(".".join(parts[:end]), set()).add(path.name)
    return found


def layering_violations(sources=SOURCES) -> list[str]:
    violations = []
    for package, package_dir in sources.items():
        if not package_dir.exists():
            continue
        imports = imported_modules(package_dir)
        for name in sorted(FORBIDDEN[package] & set(imports)):
            violations.append(f"{package} imports {name} in {sorted(imports[name])}")
    return violations


def test_layering_holds():
    assert layering_violations() == []


def private_reaches(paths) -> list[str]:
    """Reads or writes of a ``_``-prefixed Trainer attribute (``trainer._x``, ``self.trainer._x``) and imports
    of ``_``-prefixed pa_core modules, in the files ``paths``."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if (isinstance(owner, ast.Name) and owner.id == "trainer") or getattr(owner, "attr", "") == "trainer":
                    found.append(f"{path.name}:{node.lineno}: trainer.{node.attr}")
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:  # from pa_core._x import y, from pa_core import _x
                modules = [node.module] if node.module != "pa_core" else [f"pa_core.{a.name}" for a in node.names]
            found += [f"{path.name}:{node.lineno}: import {m}" for m in modules if m.startswith("pa_core._")]
    return found


def test_no_distribution_but_pa_core_reaches_into_the_trainer(tmp_path):
    """Plugins live on the public API (SPEC 10, "Plugins"): nothing outside pa_core reads or writes a
    ``_``-prefixed Trainer attribute or imports a ``_``-prefixed pa_core module."""
    paths = [path for package, folder in SOURCES.items() if package != "pa_core" for path in folder.rglob("*.py")]
    paths += (ROOT / "tests" / "fixtures" / "pa-fixture-plugin").rglob("*.py")  # a third party's plugin
    assert len(paths) > 30
    assert private_reaches(paths) == []
    # Broken on purpose: a private reach planted in a copy of a pa-callbacks module is found.
    planted = tmp_path / "progress.py"
    source = (SOURCES["pa_callbacks"] / "progress.py").read_text(encoding="utf-8")
    planted.write_text(source.replace("trainer.loss_tracker", "trainer._run.loss_tracker", 1), encoding="utf-8")
    assert [finding.split(": ", 1)[1] for finding in private_reaches([planted])] == ["trainer._run"]
    sneaky = ROOT / "tests" / "fixtures" / "private_reach_example.py"
    assert private_reaches([sneaky]) == [
        "private_reach_example.py:7: import pa_core._serialization",
        "private_reach_example.py:8: import pa_core._preemption",
        "private_reach_example.py:13: trainer._accelerator",
        "private_reach_example.py:13: trainer._loss_tracker",
    ]


def test_pa_tracking_imports_only_pa_core_accelerate_and_the_trackers():
    imports = imported_top_level_names(SOURCES["pa_tracking"])
    assert {"accelerate", "pa_core"} <= set(imports)
    others = {name for name in imports if name not in TRACKING_ALLOWED and name not in sys.stdlib_module_names}
    assert others == set(), {name: sorted(imports[name]) for name in others}


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
        ("pa_core", "from torch.utils.tensorboard import SummaryWriter", "pa_core imports torch.utils.tensorboard"),
        ("pa_core", "import mlflow", "pa_core imports mlflow"),
        ("pa_core", "from tensorboard.compat import tf", "pa_core imports tensorboard"),
        ("pa_tracking", "from pa_callbacks import ThroughputCallback", "pa_tracking imports pa_callbacks"),
        ("pa_callbacks", "from pa_tracking import TensorBoardCallback", "pa_callbacks imports pa_tracking"),
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
