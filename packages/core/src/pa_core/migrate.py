"""``pa migrate PATH... [--write]``: rewrite pytorch-accelerated imports in Python files to pa's.

Code written for pytorch-accelerated 0.1.61 runs on pa once its imports name pa's modules. This command finds
every import of ``pytorch_accelerated`` in the given files (folders are searched for ``*.py`` files) and prints
the change as a unified diff; with ``--write`` it rewrites the files in place. Running it again changes nothing.

Every import style is handled::

    from pytorch_accelerated import Trainer                  ->  from pa_core import Trainer
    from pytorch_accelerated.callbacks import (              ->  from pa_callbacks import (
        SaveBestModelCallback,                                       SaveBestModelCallback,
    )                                                            )
    import pytorch_accelerated.schedulers as sched           ->  import pa_core.schedulers as sched
    from pytorch_accelerated import notebook_launcher        ->  from accelerate import notebook_launcher
    import pytorch_accelerated                               ->  import pa_core
    ... pytorch_accelerated.callbacks.EarlyStoppingCallback  ->  ... pa_callbacks.EarlyStoppingCallback

Only import statements are rewritten, plus, where a file imports the package itself (``import
pytorch_accelerated``), the dotted references to it in the code. Comments and strings are left alone. A name
pa does not provide is left in its upstream import, and reported. The behaviour changes that no import rewrite
can show are listed in the documentation's "Coming from pytorch-accelerated" page.

One import changes meaning: upstream's ``DEFAULT_CALLBACKS`` held callback classes, pa's holds catalogue names.
Splicing it into a list (``[*DEFAULT_CALLBACKS, MyCallback()]``), passing it as ``callbacks=``, slicing it or
adding to it works with either. Code that does anything else with it (filters it by class, tests membership,
calls ``.index``) gets the classes instead::

    from pytorch_accelerated.trainer import DEFAULT_CALLBACKS
    callbacks = [cb for cb in DEFAULT_CALLBACKS if cb is not ProgressBarCallback]
      ->
    from pa_callbacks import DEFAULT_CALLBACK_CLASSES as DEFAULT_CALLBACKS

``get_default_callbacks()`` returned classes upstream and returns instances in pa; code that does more than
splice or pass its result is reported.

The module reads source with :mod:`ast` and imports nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import sys
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CLASS_DEFAULTS", "MODULES", "MOVED_NAMES", "UPSTREAM_NAMES", "MigrationResult", "main", "migrate_source"]

UPSTREAM = "pytorch_accelerated"

#: Where each module of pytorch-accelerated 0.1.61 lives in pa: the pa module that exports its public names.
MODULES: dict[str, str] = {
    "pytorch_accelerated": "pa_core",
    "pytorch_accelerated.trainer": "pa_core",
    "pytorch_accelerated.callbacks": "pa_callbacks",
    "pytorch_accelerated.schedulers": "pa_core.schedulers",
    "pytorch_accelerated.schedulers.cosine_scheduler": "pa_core.schedulers",
    "pytorch_accelerated.schedulers.wsd_scheduler": "pa_core.schedulers",
    "pytorch_accelerated.schedulers.scheduler_base": "pa_core.schedulers",
    "pytorch_accelerated.finetuning": "pa_core.finetuning",
    "pytorch_accelerated.utils": "pa_core.utils",
    "pytorch_accelerated.tracking": "pa_core",
    "pytorch_accelerated.run_config": "pa_core",
    "pytorch_accelerated._version": "pa_core",
}

#: The public names of each upstream module (what its users import from it).
UPSTREAM_NAMES: dict[str, tuple[str, ...]] = {
    "pytorch_accelerated": ("Trainer", "TrainerPlaceholderValues", "notebook_launcher", "__version__"),
    "pytorch_accelerated.trainer": (
        "Trainer",
        "TrainerWithTimmScheduler",
        "TrainerPlaceholderValues",
        "DEFAULT_CALLBACKS",
        "replace_trainer_placeholder_values",
    ),
    "pytorch_accelerated.callbacks": (
        "TrainerCallback",
        "CallbackHandler",
        "StopTrainingError",
        "CallbackMethodNotImplementedError",
        "get_default_callbacks",
        "LogMetricsCallback",
        "ProgressBarCallback",
        "PrintProgressCallback",
        "SaveBestModelCallback",
        "EarlyStoppingCallback",
        "TerminateOnNaNCallback",
        "MoveModulesToDeviceCallback",
        "LimitBatchesCallback",
        "ModelEmaCallback",
        "ConvertSyncBatchNormCallback",
        "StepBasedEvaluationCallback",
        "LimitEvalStepsCallback",
        "SaveTrainingStateCallback",
        "WSDCheckpointCallback",
    ),
    "pytorch_accelerated.schedulers": ("CosineLrScheduler", "WSDLrScheduler", "SchedulerBase", "StatefulSchedulerBase"),
    "pytorch_accelerated.schedulers.cosine_scheduler": ("CosineLrScheduler",),
    "pytorch_accelerated.schedulers.wsd_scheduler": ("WSDLrScheduler", "estimate_checkpoint_steps"),
    "pytorch_accelerated.schedulers.scheduler_base": ("SchedulerBase", "StatefulSchedulerBase"),
    "pytorch_accelerated.finetuning": ("ModelFreezer", "BN_MODULES"),
    "pytorch_accelerated.utils": (
        "LIMIT_BATCHES_ENV_VAR",
        "LimitBatches",
        "DataLoaderSlice",
        "ModelEma",
        "local_process_zero_only",
        "local_process_zero_first",
        "world_process_zero_only",
        "worker_init_fn",
        "remove_padding",
    ),
    "pytorch_accelerated.tracking": ("RunHistory", "InMemoryRunHistory", "LossTracker"),
    "pytorch_accelerated.run_config": ("TrainerRunConfig",),
    "pytorch_accelerated._version": ("__version__",),
}

#: Names that an upstream module re-exported from elsewhere, and where they live now. None: pa has no equivalent,
#: so the import is left as it was and reported.
MOVED_NAMES: dict[tuple[str, str], str | None] = {
    ("pytorch_accelerated", "notebook_launcher"): "accelerate",
    ("pytorch_accelerated", "set_seed"): "accelerate.utils",
    ("pytorch_accelerated.trainer", "set_seed"): "accelerate.utils",
    ("pytorch_accelerated.trainer", "LIMIT_BATCHES_ENV_VAR"): "pa_core.utils",
    ("pytorch_accelerated.trainer", "remove_padding"): "pa_core.utils",
    ("pytorch_accelerated.trainer", "worker_init_fn"): "pa_core.utils",
    ("pytorch_accelerated.trainer", "LimitBatchesCallback"): "pa_callbacks",
    ("pytorch_accelerated.trainer", "LogMetricsCallback"): "pa_callbacks",
    ("pytorch_accelerated.trainer", "MoveModulesToDeviceCallback"): "pa_callbacks",
    ("pytorch_accelerated.trainer", "PrintProgressCallback"): "pa_callbacks",
    ("pytorch_accelerated.trainer", "ProgressBarCallback"): "pa_callbacks",
    ("pytorch_accelerated.trainer", "TerminateOnNaNCallback"): "pa_callbacks",
    ("pytorch_accelerated.callbacks", "DataLoaderSlice"): "pa_core.utils",
    ("pytorch_accelerated.callbacks", "ModelEma"): "pa_core.utils",
    ("pytorch_accelerated.callbacks", "LossTracker"): "pa_core",
    ("pytorch_accelerated.callbacks", "CallbackMethodNotImplementedError"): None,
    ("pytorch_accelerated.utils", "wait_for_everyone"): "accelerate.utils",
}

#: Upstream's DEFAULT_CALLBACKS held classes; pa's holds catalogue names. Where code relies on the classes, this
#: is imported instead (under the name the code uses).
CLASS_DEFAULTS = ("pa_callbacks", "DEFAULT_CALLBACK_CLASSES")

_SKIPPED_FOLDERS = {"__pycache__", "node_modules", "site-packages"}
_KEEP_COMMENT = "# pa migrate: no pa equivalent"


@dataclass
class MigrationResult:
    """The outcome of migrating one source text."""

    source: str
    notes: list[str] = field(default_factory=list)
    #: True when the source has upstream imports this tool could not rewrite (it is still valid Python).
    incomplete: bool = False


@dataclass
class _Edit:
    start: int
    end: int
    text: str


def _is_upstream(module: str | None) -> bool:
    return module is not None and (module == UPSTREAM or module.startswith(UPSTREAM + "."))


def _line_starts(source: str) -> list[int]:
    """Character offset of each line's start, splitting lines the way Python's tokenizer does."""
    starts = [0]
    for match in re.finditer(r"\r\n|\r|\n", source):
        starts.append(match.end())
    return starts


class _Positions:
    """Turns ast's (line, UTF-8 byte column) positions into character offsets of the source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.starts = _line_starts(source)

    def offset(self, lineno: int, col: int) -> int:
        start = self.starts[lineno - 1]
        line = self.source[start : self.starts[lineno] if lineno < len(self.starts) else len(self.source)]
        return start + len(line.encode("utf-8")[:col].decode("utf-8", errors="replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self.offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
            self.offset(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )


def _target_of_name(module: str, name: str) -> tuple[str, str | None]:
    """How ``from module import name`` is written in pa: ("from", pa module), ("import", pa module) for a
    submodule imported by name, or ("keep", None) when pa has no equivalent."""
    submodule = f"{module}.{name}"
    if submodule in MODULES:
        return "import", MODULES[submodule]
    if (module, name) in MOVED_NAMES:
        target = MOVED_NAMES[(module, name)]
        return ("keep", None) if target is None else ("from", target)
    return "from", MODULES[module]


def _alias_text(name: str, asname: str | None) -> str:
    return f"{name} as {asname}" if asname else name


class _Migrator:
    def __init__(self, source: str, filename: str) -> None:
        self.source = source
        self.filename = filename
        self.tree = ast.parse(source, filename=filename)
        self.positions = _Positions(source)
        self.edits: list[_Edit] = []
        self.notes: list[str] = []
        self.incomplete = False
        self.binds_package = False  # `import pytorch_accelerated[.x]` without `as`
        self.imported_plainly: set[str] = set()  # pa modules bound by rewritten plain imports
        self.first_plain_import: ast.Import | None = None
        self.parents: dict[ast.AST, ast.AST] = {
            child: outer for outer in ast.walk(self.tree) for child in ast.iter_child_nodes(outer)
        }

    def note(self, node: ast.AST, message: str) -> None:
        self.notes.append(f"{self.filename}:{getattr(node, 'lineno', 0)}: {message}")

    def uses_items(self, node: ast.AST) -> bool:
        """Whether the code does more with ``node`` (a callbacks collection) than pass it to a Trainer whole:
        splice it (``*x``), pass it as ``callbacks=``, add to it or slice it."""
        parent = self.parents.get(node)
        if isinstance(parent, ast.Starred):
            return False
        if isinstance(parent, ast.keyword) and parent.arg == "callbacks":
            return False
        if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Add):
            return False
        if isinstance(parent, ast.Subscript) and parent.value is node and isinstance(parent.slice, ast.Slice):
            return False
        return True

    def name_uses_items(self, name: str) -> bool:
        return any(
            isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load) and self.uses_items(node)
            for node in ast.walk(self.tree)
        )

    def note_default_callback_instances(self, node: ast.ImportFrom, bound: str) -> None:
        for call in ast.walk(self.tree):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == bound
                and self.uses_items(call)
            ):
                self.note(
                    node,
                    "get_default_callbacks() returns callback instances in pa (classes in pytorch-accelerated); "
                    f"line {call.lineno} uses its items: compare them with isinstance(), or use "
                    "pa_callbacks.DEFAULT_CALLBACK_CLASSES",
                )
                return

    def run(self) -> MigrationResult:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_upstream(node.module):
                self.rewrite_from(node)
            elif isinstance(node, ast.Import):
                self.rewrite_import(node)
        if self.binds_package:
            self.rewrite_references()
        return MigrationResult(self.apply(), self.notes, self.incomplete)

    # -- from pytorch_accelerated... import ... -------------------------------------------

    def rewrite_from(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module not in MODULES:
            self.note(node, f"{module} is not a module of pytorch-accelerated 0.1.61; left as it was")
            self.incomplete = True
            return
        plans: list[tuple[str, str | None, ast.alias]] = []
        for alias in node.names:
            if alias.name == "*":
                plans.append(("from", MODULES[module], alias))
                continue
            kind, target = _target_of_name(module, alias.name)
            bound = alias.asname or alias.name
            if alias.name == "DEFAULT_CALLBACKS" and self.name_uses_items(bound):
                self.note(
                    node,
                    f"{bound} is used item by item here and upstream's held callback classes (pa's holds catalogue "
                    "names): imported as pa_callbacks.DEFAULT_CALLBACK_CLASSES, the same classes",
                )
                plans.append(("from", CLASS_DEFAULTS[0], ast.alias(name=CLASS_DEFAULTS[1], asname=bound)))
                continue
            if alias.name == "get_default_callbacks":
                self.note_default_callback_instances(node, bound)
            if kind == "keep":
                self.note(node, f"pa has no equivalent of {module}.{alias.name}; that import was left as it was")
                self.incomplete = True
            elif kind == "from" and (module, alias.name) not in MOVED_NAMES:
                if alias.name not in UPSTREAM_NAMES.get(module, ()):
                    self.note(
                        node,
                        f"{alias.name} is not a public name of {module}; imported from {target}, check that it exists",
                    )
            plans.append((kind, target, alias))
        start, end = self.positions.span(node)
        targets = {(kind, target) for kind, target, _ in plans}
        renamed = any(alias not in node.names for _, _, alias in plans)
        if len(targets) == 1 and next(iter(targets))[0] == "from" and not renamed:
            # One pa module for every name: change the module only, keeping the statement's layout and comments.
            match = re.match(r"from(\s+)([\w.\s\\]+?)(\s+import\b)", self.source[start:end])
            if match is None:  # pragma: no cover - ast accepted the statement, so the pattern matches
                return
            self.edits.append(_Edit(start + match.start(2), start + match.end(2), next(iter(targets))[1] or ""))
            return
        if all(kind == "keep" for kind, _, _ in plans):
            return
        statements = []
        grouped: dict[str, list[ast.alias]] = {}
        for kind, target, alias in plans:
            if kind == "from":
                grouped.setdefault(target or "", []).append(alias)
        for target, aliases in grouped.items():
            statements.append(f"from {target} import {', '.join(_alias_text(a.name, a.asname) for a in aliases)}")
        for kind, target, alias in plans:
            if kind == "import":
                statements.append(f"import {target} as {alias.asname or alias.name}")
        kept = [alias for kind, _, alias in plans if kind == "keep"]
        if kept:
            names = ", ".join(_alias_text(a.name, a.asname) for a in kept)
            statements.append(f"from {module} import {names}  {_KEEP_COMMENT}")
        self.edits.append(_Edit(start, end, self.join_statements(start, statements)))

    def join_statements(self, start: int, statements: list[str]) -> str:
        """``statements`` as the source text replacing a statement that starts at ``start``."""
        line_start = max(self.source.rfind("\n", 0, start), self.source.rfind("\r", 0, start)) + 1
        prefix = self.source[line_start:start]
        if prefix.strip():  # after `;` on the same line
            return "; ".join(statements)
        newline = "\r\n" if "\r\n" in self.source else "\n"
        return (newline + prefix).join(statements)

    # -- import pytorch_accelerated... ------------------------------------------------------

    def rewrite_import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not _is_upstream(alias.name):
                continue
            target = MODULES.get(alias.name)
            if target is None:
                self.note(node, f"{alias.name} is not a module of pytorch-accelerated 0.1.61; left as it was")
                self.incomplete = True
                continue
            start, end = self.positions.span(alias)
            self.edits.append(_Edit(start, end, _alias_text(target, alias.asname)))
            if alias.asname is None:
                self.binds_package = True
                self.imported_plainly.add(target)
                self.first_plain_import = self.first_plain_import or node

    # -- pytorch_accelerated.x.y in the code -----------------------------------------------

    def rewrite_references(self) -> None:
        parents = self.parents
        needed: dict[str, ast.AST] = {}
        for node in ast.walk(self.tree):
            if not (isinstance(node, ast.Name) and node.id == UPSTREAM and isinstance(node.ctx, ast.Load)):
                continue
            path = UPSTREAM
            best: ast.expr = node
            current: ast.expr = node
            above = parents.get(current)
            while isinstance(above, ast.Attribute) and above.value is current:
                candidate = f"{path}.{above.attr}"
                if candidate not in MODULES:
                    break
                path, best, current = candidate, above, above
                above = parents.get(current)
            target, module_needed = MODULES[path], MODULES[path]
            end_node: ast.expr = best
            if isinstance(above, ast.Attribute) and above.value is current:
                moved = MOVED_NAMES.get((path, above.attr), "")
                if moved is None:
                    self.note(node, f"pa has no equivalent of {path}.{above.attr}; left as it was")
                    self.incomplete = True
                    continue
                if moved:  # e.g. pytorch_accelerated.notebook_launcher -> accelerate.notebook_launcher
                    target, end_node, module_needed = f"{moved}.{above.attr}", above, moved
                elif above.attr == "DEFAULT_CALLBACKS" and self.uses_items(above):
                    module_needed = CLASS_DEFAULTS[0]
                    target, end_node = ".".join(CLASS_DEFAULTS), above
                    self.note(node, "DEFAULT_CALLBACKS is used item by item: pa_callbacks.DEFAULT_CALLBACK_CLASSES")
            needed.setdefault(module_needed, node)
            start, end = self.positions.offset(node.lineno, node.col_offset), self.positions.span(end_node)[1]
            self.edits.append(_Edit(start, end, target))
        missing = [module for module in needed if module not in self.imported_plainly]
        if missing and self.first_plain_import is not None:
            # `import pytorch_accelerated.callbacks` also made `pytorch_accelerated.Trainer` reachable; in pa those
            # are two packages, so import the others the code reaches through the package.
            start, end = self.positions.span(self.first_plain_import)
            statements = [f"import {module}" for module in sorted(missing)]
            self.edits.append(_Edit(end, end, self.join_statements(start, ["", *statements])))

    # -- applying the edits ----------------------------------------------------------------

    def apply(self) -> str:
        result = self.source
        for edit in sorted(self.edits, key=lambda e: (e.start, e.end), reverse=True):
            result = result[: edit.start] + edit.text + result[edit.end :]
        return result


def migrate_source(source: str, filename: str = "<source>") -> MigrationResult:
    """Rewrite the pytorch-accelerated imports of one Python source text.

    :param source: the file's text.
    :param filename: used in notes and syntax errors.
    :return: the rewritten text (unchanged when there is nothing to rewrite) and notes about what could not be.
    :raises SyntaxError: when ``source`` is not valid Python.
    """
    if UPSTREAM not in source:
        return MigrationResult(source)
    return _Migrator(source, filename).run()


def _python_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for candidate in sorted(path.rglob("*.py")):
                relative = candidate.relative_to(path).parts[:-1]
                if any(part.startswith(".") or part in _SKIPPED_FOLDERS for part in relative):
                    continue
                if any((path.joinpath(*relative[: i + 1]) / "pyvenv.cfg").exists() for i in range(len(relative))):
                    continue  # a virtual environment
                yield candidate
        else:
            yield path


def _read(path: Path) -> tuple[str, str]:
    raw = path.read_bytes()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    return raw.decode(encoding), encoding


def _diff(before: str, after: str, path: Path) -> Iterator[str]:
    name = path.as_posix().lstrip("/")
    for line in difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{name}", f"b/{name}"
    ):
        yield line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pa migrate`` (a ``pa.commands`` entry point); returns the exit status.

    Exit status: 0 when every file was read (whether or not anything changed), 1 when a file could not be read or
    parsed, 2 for a path that does not exist.
    """
    parser = argparse.ArgumentParser(
        prog="pa migrate",
        description="Rewrite pytorch-accelerated imports to pa's. Prints a unified diff; --write changes the files.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a .py file or a folder to search")
    parser.add_argument("--write", action="store_true", help="rewrite the files in place instead of printing a diff")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"pa migrate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    status, changed, seen = 0, 0, 0
    for path in _python_files(args.paths):
        seen += 1
        try:
            source, encoding = _read(path)
            result = migrate_source(source, filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError) as error:
            print(f"pa migrate: skipped {path}: {type(error).__name__}: {error}", file=sys.stderr)
            status = 1
            continue
        for note in result.notes:
            print(f"pa migrate: {note}", file=sys.stderr)
        if result.source == source:
            continue
        changed += 1
        if args.write:
            path.write_bytes(result.source.encode(encoding))
            print(f"rewrote {path}")
        else:
            sys.stdout.writelines(_diff(source, result.source, path))
    action = "rewrote" if args.write else "would rewrite"
    hint = "" if args.write or not changed else " (run again with --write to apply)"
    print(f"pa migrate: {action} {changed} of {seen} file(s){hint}.", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
