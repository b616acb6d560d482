"""The Trainer stays small enough to read in one sitting: the loop file at most 500 lines, no
method of the Trainer (its own or inherited from pa_core) over 40 lines."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pa_core._trainer_base
import pa_core.trainer

MAX_FILE_LINES = 500
MAX_METHOD_LINES = 40


def _methods(module: object) -> list[tuple[str, int]]:
    tree = ast.parse(Path(inspect.getfile(module)).read_text())  # type: ignore[arg-type]
    found = []
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                found.append((f"{cls.name}.{node.name}", node.end_lineno - first + 1))  # type: ignore[operator]
    return found


def test_the_loop_file_is_at_most_500_lines() -> None:
    lines = Path(pa_core.trainer.__file__).read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"pa_core/trainer.py has {lines} lines; keep the loop file to {MAX_FILE_LINES}."


def test_no_trainer_method_is_over_40_lines() -> None:
    methods = _methods(pa_core.trainer) + _methods(pa_core._trainer_base)
    assert len(methods) > 50  # (the Trainer's methods were found)
    too_long = {name: length for name, length in methods if length > MAX_METHOD_LINES}
    assert not too_long, f"methods over {MAX_METHOD_LINES} lines (split them): {too_long}"
