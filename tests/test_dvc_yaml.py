"""dvc.yaml lists exactly the code each stage runs, so an edit re-runs only what it affects."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def imported_stage_modules(module: str) -> set[str]:
    """Paths of the project modules `module` imports at run time, transitively.

    Imports under `if TYPE_CHECKING:` are annotations only and do not count.
    """
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = f"{name.replace('.', '/')}.py"
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse((ROOT / path).read_text())
        skipped = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body
            for n in ast.walk(child)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and id(node) not in skipped
                and (node.module or "").startswith(("stages.", "mnist_pipeline."))
            ):
                todo.append(node.module)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_the_imported_modules(stage):
    spec = STAGES[stage]
    module = spec["cmd"].split("python -m ", 1)[1].split()[0]
    declared = {d for d in spec["deps"] if d.endswith(".py")}
    assert declared == imported_stage_modules(module)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_taking_params_declare_them(stage):
    spec = STAGES[stage]
    source = (ROOT / f"stages/{stage}.py").read_text()
    reads_params = "load_params(" in source
    assert reads_params == bool(spec.get("params")), "params use and declaration disagree"
