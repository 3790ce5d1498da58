"""The locked environment: uv.lock matches pyproject.toml, DVC re-runs exactly the stages a
package version affects, and an installed version that is not the lock's stops the pipeline
before any stage runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from mnist_pipeline.environment import (
    RECORDED,
    EnvironmentProblem,
    check_installed,
    locked_versions,
)
from tests.helpers import (
    BIN,
    ROOT,
    changed_stages,
    dvc,
    lock_stages,
    output_files,
    rewritten_stages,
    run,
    set_params,
)

LOCK = ROOT / "uv.lock"


def uv(cwd: Path, *args: str, check: bool = True):
    # --offline: the tests reach no package index; uv answers from the lock and its cache.
    return run(
        [str(BIN / "uv"), *args, "--offline"],
        cwd=cwd,
        env={"UV_PYTHON_DOWNLOADS": "never"},
        check=check,
    )


def locked(name: str, lock: Path = LOCK) -> str:
    packages = tomllib.loads(lock.read_text())["package"]
    return next(p["version"] for p in packages if p["name"] == name)


def copy_of(tmp_path: Path, *names: str) -> Path:
    """The project's files and folders `names`, copied into tmp_path."""
    for name in names:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, tmp_path / name)
    return tmp_path


def edit_pyproject_without_locking(project: Path) -> None:
    # Still satisfied by the locked tqdm, but the lock records the requirement itself.
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '"tqdm>=4.66"' in text
    pyproject.write_text(text.replace('"tqdm>=4.66"', '"tqdm>=4.67"'))


def stand_in_venv(project: Path) -> None:
    """A .venv with this environment's Python and the lock's uv, and nothing to install to."""
    (project / ".venv/bin").mkdir(parents=True)
    for name, target in (("python", sys.executable), ("uv", BIN / "uv")):
        (project / ".venv/bin" / name).symlink_to(target)


def test_the_lock_matches_pyproject():
    uv(ROOT, "lock", "--check")


def test_a_pyproject_edit_without_a_new_lock_is_caught(tmp_path):
    project = copy_of(tmp_path, "pyproject.toml", "uv.lock", "README.md")
    edit_pyproject_without_locking(project)
    result = uv(project, "lock", "--check", check=False)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr


def test_setup_stops_with_one_line_when_the_lock_is_out_of_date(tmp_path):
    project = copy_of(tmp_path, "pyproject.toml", "uv.lock", "README.md", "scripts")
    edit_pyproject_without_locking(project)
    # With the lock out of date, uv stops before it installs anything.
    stand_in_venv(project)
    before = sorted(p.name for p in (BIN.parent / "lib").glob("python*/site-packages/*"))
    result = run(["bash", "scripts/setup.sh"], cwd=project, env={"UV_OFFLINE": "1"}, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "setup: error: uv.lock does not match pyproject.toml; run `bash scripts/lock.sh` "
        "and commit both files"
    ]
    assert sorted(p.name for p in (BIN.parent / "lib").glob("python*/site-packages/*")) == before


def test_setup_reads_the_uv_the_lock_pins(tmp_path):
    assert locked("uv") == version("uv")
    project = copy_of(tmp_path, "scripts", "uv.lock")
    stand_in_venv(project)
    # The stand-in .venv has the lock's uv: nothing to install (and pip could not: no index).
    no_pip = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}
    result = run(["bash", "scripts/setup.sh", "--uv-only"], cwd=project, env=no_pip)
    assert result.stdout == result.stderr == ""


def test_this_environment_is_the_lock():
    """What the suite runs on: every locked package at its locked version."""
    for package in tomllib.loads(LOCK.read_text())["package"]:
        if package.get("source", {}).get("editable") or "version" not in package:
            continue
        name = package["name"]
        try:
            installed = version(name)
        except PackageNotFoundError:  # locked for another platform (a marker), not installed here
            continue
        assert installed == package["version"], name


def test_locked_versions_are_read_from_the_lock():
    versions = locked_versions(LOCK)
    assert list(versions) == ["python", *RECORDED]
    assert versions["scikit-learn"] == locked("scikit-learn")
    assert versions["python"] == "3.11"
    check_installed(versions, LOCK)  # the suite's own environment passes


def test_a_damaged_lock_gets_one_line(tmp_path):
    lock = tmp_path / "uv.lock"
    lock.write_text("version = 1\n[[package]\n")
    with pytest.raises(
        EnvironmentProblem, match=r"uv.lock: not a uv lock file .*restore it with git"
    ):
        locked_versions(lock)
    lock.write_text(LOCK.read_text().replace('name = "scipy"', 'name = "scipy-gone"'))
    with pytest.raises(EnvironmentProblem, match=r"pins no scipy: the project needs them"):
        locked_versions(lock)


def fake_install(directory: Path, name: str, fake_version: str) -> dict:
    """An environment in which `name` reads as installed at `fake_version`.

    Package metadata is looked up along sys.path, so this dist-info folder on PYTHONPATH
    comes before the real one: the version check sees it; nothing imports it.
    """
    info = directory / f"{name.replace('-', '_')}-{fake_version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {fake_version}\n"
    )
    return {"PYTHONPATH": str(directory)}


def lock_with(repo: Path, name: str, new_version: str) -> None:
    """Rewrite the copy's uv.lock as a lock update to `new_version` of `name` would."""
    lock = repo / "uv.lock"
    old = f'name = "{name}"\nversion = "{locked(name, lock)}"\n'
    text = lock.read_text()
    assert text.count(old) == 1
    lock.write_text(text.replace(old, f'name = "{name}"\nversion = "{new_version}"\n'))


def tree_digest(repo: Path) -> dict[str, str]:
    """md5 of every file in the copy outside .git and DVC's own state."""
    return {
        str(path.relative_to(repo)): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted(repo.rglob("*"))
        if path.is_file() and path.relative_to(repo).parts[0] not in (".git", ".dvc")
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("package", "affected"),
    [
        ("scikit-learn", {"kmeans_sweep", "kmeans_test"}),
        ("torch", {"train_cnn", "evaluate_cnn", "demo_page"}),
        ("matplotlib", {"preprocess", "evaluate_cnn", "plot_centroids"}),
        ("pillow", {"preprocess", "evaluate_cnn", "plot_centroids"}),
        ("ruff", set()),  # a dev tool: recorded nowhere
        ("pytest", set()),
    ],
)
def test_a_lock_update_reruns_exactly_the_stages_the_package_affects(
    repo_copy, tmp_path, package, affected
):
    lock_with(repo_copy, package, "99.0.0")
    env = fake_install(tmp_path / "site", package, "99.0.0")
    dvc(repo_copy, "repro", "environment", env=env)
    # The check ran and passed: dvc.lock records the new uv.lock it checked against.
    deps = lock_stages(repo_copy)["environment"]["deps"]
    (uv_lock,) = [dep for dep in deps if dep["path"] == "uv.lock"]
    assert uv_lock["md5"] == hashlib.md5((repo_copy / "uv.lock").read_bytes()).hexdigest()
    # Downstream stages show up once the stages they follow have run: these are the
    # stages whose own versions changed.
    assert set(changed_stages(repo_copy, env)) == affected


@pytest.mark.slow
def test_an_installed_version_that_is_not_the_lock_stops_the_pipeline(
    repo_copy, tmp_path, mirror_env
):
    set_params(repo_copy, {"kmeans": {"max_iter": 50}})  # kmeans_sweep would run
    before = tree_digest(repo_copy)
    env = {**mirror_env, **fake_install(tmp_path / "site", "scikit-learn", "9.9.9")}
    lock = lock_stages(repo_copy)
    result = dvc(repo_copy, "repro", env=env, check=False)
    assert result.returncode != 0
    assert lock_stages(repo_copy) == lock
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    messages = [line for line in output.splitlines() if "9.9.9" in line]
    pinned = locked("scikit-learn")
    assert messages == [
        f"ERROR stages: scikit-learn 9.9.9 is installed, uv.lock pins {pinned}: go back with "
        "`bash scripts/setup.sh`, or adopt it with "
        "`bash scripts/lock.sh --upgrade-package scikit-learn==9.9.9` (first change its pin, "
        "if pyproject.toml pins it; then `dvc repro` re-runs what it affects)"
    ]
    assert tree_digest(repo_copy) == before  # versions.json and every output as they were
    # Back in the lock's environment, the pipeline goes on.
    files = output_files(repo_copy)
    dvc(repo_copy, "repro", env=mirror_env)
    assert "kmeans_sweep" in rewritten_stages(files, output_files(repo_copy))
    assert changed_stages(repo_copy) == {}


def test_the_check_explains_itself_in_a_python_without_the_packages(tmp_path):
    """dvc called without the environment: `python` lacks every package. -S hides them."""
    out = tmp_path / "versions.json"
    args = [
        sys.executable,
        "-S",
        "-m",
        "stages.environment",
        "--lock",
        str(LOCK),
        "--out",
        str(out),
    ]
    result = run(args, cwd=ROOT, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ERROR stages: numpy is not installed for {sys.executable}, {LOCK} pins "
        f"{locked('numpy')}: run `bash scripts/setup.sh`, then dvc from .venv "
        "(`source .venv/bin/activate`)"
    ]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_record_is_replaced_only_by_a_passing_check(tmp_path):
    out = tmp_path / "versions.json"
    out.write_text("the last record\n")
    lock = tmp_path / "uv.lock"
    lock.write_text(
        LOCK.read_text().replace('requires-python = "==3.11.*"', 'requires-python = "==3.10.*"')
    )
    args = [sys.executable, "-m", "stages.environment", "--lock", str(lock), "--out", str(out)]
    result = run(args, cwd=ROOT, check=False)
    assert result.returncode == 1
    assert "is for Python 3.10: run `bash scripts/setup.sh`" in result.stderr
    assert out.read_text() == "the last record\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uv.lock", "versions.json"]
    result = run([*args[:-3], str(LOCK), "--out", str(out)], cwd=ROOT)
    assert json.loads(out.read_text()) == locked_versions(LOCK)


@pytest.mark.slow
def test_dvc_outside_the_environment_stops_in_one_line_and_keeps_the_data(
    repo_copy, tmp_path, mirror_env
):
    """`.venv/bin/dvc repro` without activating: the stages' `python` lacks the packages."""
    bare = tmp_path / "bin"
    bare.mkdir()
    python = bare / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages
    python.chmod(0o755)
    set_params(repo_copy, {"data": {"verify": True}})  # download would run again
    before = tree_digest(repo_copy)
    env = {**mirror_env, "PATH": f"{bare}:/usr/bin:/bin"}
    lock = lock_stages(repo_copy)
    result = dvc(repo_copy, "repro", env=env, check=False)
    assert result.returncode != 0
    assert lock_stages(repo_copy) == lock
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
    assert errors[0] == (
        f"ERROR stages: numpy is not installed for {sys.executable}, uv.lock pins "
        f"{locked('numpy')}: run `bash scripts/setup.sh`, then dvc from .venv "
        "(`source .venv/bin/activate`)"
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert tree_digest(repo_copy) == before  # data/raw among them
