"""The layering of SPEC section 1, checked on the source: who may import whom."""

import ast
from pathlib import Path

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


def imported_top_level_names(package_dir: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
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
        if package != "pa_examples" and "pa_examples" in imports:
            violations.append(f"{package} imports pa_examples")
    return violations


def test_layering_holds():
    assert layering_violations() == []


def test_a_broken_rule_is_caught(tmp_path):
    broken = tmp_path / "pa_core"
    broken.mkdir()
    (broken / "bad.py").write_text("from pa_callbacks import ProgressBarCallback\nimport tqdm.auto\n")
    violations = layering_violations({"pa_core": broken})
    assert any("pa_core imports pa_callbacks" in v for v in violations)
    assert any("pa_core imports tqdm" in v for v in violations)
