"""Fail when a public name of a pa distribution has no docstring.

    python tools/check_docstrings.py [ROOT]

Reads the sources with ``ast`` (nothing is imported, so torch and the integrations' libraries need not be
installed). For every distribution under ``packages/`` it checks each public module: the package itself and every
module whose dotted path has no part starting with ``_``. A module's public names are its ``__all__`` or, without
one, the classes and functions it defines whose names do not start with ``_``. A name re-exported from another pa
module is checked where it is defined.

What counts as documented:

- a function: its docstring;
- a class: its docstring or its ``__init__``'s; and each public method or property of the class, unless a base class
  found in pa's sources documents the same name (the API reference shows that docstring, through
  griffe-inherited-docstrings);
- a constant: a string literal on the line after the assignment, or ``#:`` comment lines right above it.

Dunder names (``__version__``) are not checked. The docs session runs this before ``mkdocs build --strict``; the
exit status is 1 when something is missing, and every missing name is listed as ``path:line: module.name``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: list[str]
    definitions: dict[str, ast.AST] = field(default_factory=dict)
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # local name -> (module, name)
    exported: list[str] | None = None


def find_packages(root: Path) -> dict[str, Path]:
    """Every import package of the distributions under ``root/packages``: name -> folder."""
    found: dict[str, Path] = {}
    for init in sorted(root.glob("packages/**/src/*/__init__.py")):
        if ".nox" in init.parts or "tests" in init.parts:
            continue
        found[init.parent.name] = init.parent
    return found


def module_name(package_dir: Path, path: Path) -> str:
    relative = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_public_module(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


def load(path: Path, name: str) -> Module:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    module = Module(name, path, tree, source.splitlines())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            module.definitions[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                        module.exported = [
                            elt.value
                            for elt in node.value.elts
                            if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
                        ]
                    else:
                        module.definitions[target.id] = node
        elif isinstance(node, ast.ImportFrom):
            source_module = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source_module = ".".join([*base, source_module] if source_module else base)
            for alias in node.names:
                module.imports[alias.asname or alias.name] = (source_module, alias.name)
    return module


class Checker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.packages = find_packages(root)
        self.modules: dict[str, Module] = {}
        self.missing: list[tuple[Path, int, str]] = []
        self._checked: set[tuple[str, str]] = set()

    def module(self, name: str) -> Module | None:
        if name in self.modules:
            return self.modules[name]
        top = name.split(".")[0]
        package_dir = self.packages.get(top)
        if package_dir is None:
            return None
        relative = Path(*name.split(".")[1:]) if "." in name else Path()
        candidates = [package_dir / relative / "__init__.py", (package_dir / relative).with_suffix(".py")]
        for path in candidates:
            if path.is_file():
                self.modules[name] = load(path, name)
                return self.modules[name]
        return None

    def public_modules(self) -> list[str]:
        names = []
        for package_dir in self.packages.values():
            for path in sorted(package_dir.rglob("*.py")):
                name = module_name(package_dir, path)
                if is_public_module(name):
                    names.append(name)
        return names

    def resolve(self, module: Module, name: str, depth: int = 0) -> tuple[Module, ast.AST] | None:
        """Where ``name`` seen from ``module`` is defined, within pa's sources; None if elsewhere."""
        if depth > 20:
            return None
        if name in module.definitions:
            return module, module.definitions[name]
        if name in module.imports:
            source_module, source_name = module.imports[name]
            target = self.module(source_module)
            if target is None:
                # `from pkg import submodule`
                target = self.module(f"{source_module}.{source_name}")
                return None if target is None else (target, target.tree)
            return self.resolve(target, source_name, depth + 1)
        return None

    def report(self, module: Module, node: ast.AST, qualname: str) -> None:
        self.missing.append((module.path, getattr(node, "lineno", 1), qualname))

    def check_module(self, name: str) -> None:
        module = self.module(name)
        if module is None:
            return
        if ast.get_docstring(module.tree) is None:
            self.report(module, module.tree, f"{name} (module docstring)")
        exported = module.exported
        if exported is None:
            exported = [
                n
                for n, node in module.definitions.items()
                if not n.startswith("_") and isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            ]
        for public in exported:
            if public.startswith("__") and public.endswith("__"):
                continue
            found = self.resolve(module, public)
            if found is None:
                continue  # defined outside pa (e.g. re-exported from a dependency)
            self.check_definition(*found, qualname=f"{found[0].name}.{public}")

    def check_definition(self, module: Module, node: ast.AST, qualname: str) -> None:
        key = (module.name, qualname)
        if key in self._checked or isinstance(node, ast.Module):
            return
        self._checked.add(key)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if ast.get_docstring(node) is None:
                self.report(module, node, qualname)
        elif isinstance(node, ast.ClassDef):
            self.check_class(module, node, qualname)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            if not self.constant_documented(module, node):
                self.report(module, node, qualname)

    def constant_documented(self, module: Module, node: ast.AST) -> bool:
        body = module.tree.body
        index = body.index(node)  # type: ignore[arg-type]
        following = body[index + 1] if index + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            return True
        line = node.lineno - 2  # the line above, 0-based
        return line >= 0 and module.lines[line].lstrip().startswith("#:")

    def check_class(self, module: Module, node: ast.ClassDef, qualname: str) -> None:
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if ast.get_docstring(node) is None and (init is None or ast.get_docstring(init) is None):
            self.report(module, node, qualname)
        for member in node.body:
            if not isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) or member.name.startswith("_"):
                continue
            if ast.get_docstring(member) is not None or self.inherited_docstring(module, node, member.name):
                continue
            if any(_is_setter(decorator) for decorator in member.decorator_list):
                continue  # a property's setter: the getter carries the docstring
            self.report(module, member, f"{qualname}.{member.name}")

    def inherited_docstring(self, module: Module, node: ast.ClassDef, method: str, depth: int = 0) -> bool:
        if depth > 20:
            return False
        for base in node.bases:
            base_name = _dotted(base)
            if base_name is None:
                continue
            found = self.resolve(module, base_name.split(".")[-1]) if "." not in base_name else None
            if found is None or not isinstance(found[1], ast.ClassDef):
                continue
            base_module, base_node = found
            for member in base_node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and member.name == method:
                    if ast.get_docstring(member) is not None:
                        return True
            if self.inherited_docstring(base_module, base_node, method, depth + 1):
                return True
        return False

    def run(self) -> int:
        for name in self.public_modules():
            self.check_module(name)
        if not self.missing:
            print(f"check_docstrings: every public name of {', '.join(sorted(self.packages))} has a docstring.")
            return 0
        print(f"check_docstrings: {len(self.missing)} public name(s) without a docstring:", file=sys.stderr)
        for path, line, qualname in sorted(self.missing):
            print(f"  {path.relative_to(self.root)}:{line}: {qualname}", file=sys.stderr)
        return 1


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _is_setter(decorator: ast.AST) -> bool:
    return isinstance(decorator, ast.Attribute) and decorator.attr in ("setter", "deleter")


def main(argv: list[str] | None = None) -> int:
    """Check every distribution under ROOT (the repository by default); 1 if a public name lacks a docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="the repository root")
    args = parser.parse_args(argv)
    return Checker(args.root.resolve()).run()


if __name__ == "__main__":
    raise SystemExit(main())
