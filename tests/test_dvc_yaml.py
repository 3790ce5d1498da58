"""dvc.yaml lists exactly the code, params and package versions each stage depends on, so
an edit or another package version re-runs only what it affects."""

from __future__ import annotations

import ast
import functools
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.environment import RECORDED

ROOT = Path(__file__).resolve().parent.parent
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# Packages that compute inside another one without being imported by the project.
IMPLIED = {"scikit-learn": {"scipy"}, "matplotlib": {"pillow"}}


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
    module = stage_module(spec)
    declared = {d for d in spec["deps"] if d.endswith(".py")}
    assert declared == imported_stage_modules(module)


def stage_module(spec: dict) -> str:
    return spec["cmd"].split("python -m ", 1)[1].split()[0]


def params_of(spec: dict, file: str) -> list[str]:
    """The keys a stage declares from one params file (a bare key is params.yaml's)."""
    keys = []
    for entry in spec.get("params", []):
        if isinstance(entry, str) and file == "params.yaml":
            keys.append(entry)
        elif isinstance(entry, dict):
            keys += entry.get(file, [])
    return keys


def calls_load_params(path: str) -> bool:
    """Whether the module calls config.load_params (a call, not a mention in a comment)."""
    return any(
        isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "load_params"
        for node in ast.walk(ast.parse((ROOT / path).read_text()))
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_taking_params_declare_them(stage):
    spec = STAGES[stage]
    reads_params = calls_load_params(f"stages/{stage}.py")
    assert reads_params == bool(params_of(spec, "params.yaml")), "params use and declaration differ"


# It walks every installed distribution's file list: half a second a call.
packages_distributions = functools.cache(metadata.packages_distributions)


def module_level_packages(paths: set[str]) -> set[str]:
    """Distributions in RECORDED that these modules import when they are loaded.

    Imports inside functions do not count: kmeans.py imports scikit-learn only in the
    functions that fit or assign, which plot_centroids never calls.
    """
    distributions = packages_distributions()
    found = set()
    for path in paths:
        for node in ast.parse((ROOT / path).read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found |= set(distributions.get(name.split(".")[0], ()))
    found = {name.lower() for name in found} & set(RECORDED)
    return found.union(*(IMPLIED.get(name, set()) for name in found))


@pytest.mark.parametrize("stage", sorted(set(STAGES) - {"environment"}))
def test_stages_depend_on_the_versions_of_the_packages_they_import(stage):
    spec = STAGES[stage]
    packages = module_level_packages(imported_stage_modules(stage_module(spec)))
    declared = params_of(spec, "versions.json")
    # Python itself everywhere: another minor version can change the results (and the
    # wheels installed), and it puts every stage after the environment check.
    assert set(declared) == packages | {"python"}
    assert len(declared) == len(set(declared))


def test_the_environment_stage_runs_first_and_keeps_its_record():
    spec = STAGES["environment"]
    assert spec["always_changed"] is True
    assert spec["outs"] == [{"versions.json": {"cache": False, "persist": True}}]
