"""Faults and concurrency: a full disk, a failed run's metrics, two runs in one clone."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline import runtime
from mnist_pipeline.config import PreprocessParams, load_params
from mnist_pipeline.datasets import get_dataset
from mnist_pipeline.processed import save_processed
from mnist_pipeline.runtime import check_free_space, run_main
from stages import kmeans_sweep
from stages.preprocess import preprocess
from tests.helpers import (
    BIN,
    ROOT,
    TINY_PARAMS,
    alive,
    changed_stages,
    command_env,
    commit_all,
    dvc,
    git,
    process_group,
    processes_running,
    run,
    set_params,
    wait_until,
    write_params,
)

SWEEP_ARGS = ["--data", "data/processed/kmeans", "--plot", "plots/sweep.csv"]


def stage_error(caplog, monkeypatch, stage, argv: list[str]) -> tuple[int, str]:
    """Run `stage` through run_main as `python -m` does; its exit code and its one error line."""
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    monkeypatch.setattr(runtime, "stop_with_parent", lambda: None)  # not on pytest itself
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_:
        run_main(stage)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "\n" not in message and not errors[0].exc_info, message
    return exit_.value.code, message


@pytest.fixture
def kmeans_folder(tiny_dir, tmp_path, monkeypatch) -> Path:
    """tmp_path as a project with tiny params and processed k-means data; the working dir."""
    _, kmeans = preprocess(tiny_dir, PreprocessParams(0.1307, 0.3081), get_dataset("mnist"))
    save_processed(tmp_path / "data/processed/kmeans", kmeans)
    write_params(tmp_path, TINY_PARAMS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_full_disk_while_saving_names_the_model_not_its_temporary_file(
    kmeans_folder, caplog, monkeypatch
):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as np.savez's write() does

    monkeypatch.setattr(np, "savez", full)
    argv = [*SWEEP_ARGS, "--model", "models/kmeans.npz"]
    code, message = stage_error(caplog, monkeypatch, kmeans_sweep.main, argv)
    assert code == 1
    assert message.startswith("models/kmeans.npz: No space left on device; "), message
    assert ".tmp" not in message
    assert not list((kmeans_folder / "models").iterdir())
    assert not list((kmeans_folder / "plots").iterdir())


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 100 KiB tmpfs at tmp_path/small; unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    tried = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if tried.returncode != 0:
        pytest.skip(f"needs a small tmpfs (root, or a container that allows mount): {tried.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_disk_too_small_for_the_model_stops_the_sweep_before_its_work(
    kmeans_folder, small_disk, caplog, monkeypatch
):
    (kmeans_folder / "models").symlink_to(small_disk)
    # 64 centroids of 784 float32 pixels: 200 KiB, on a 100 KiB disk.
    set_params(kmeans_folder, {"kmeans": {"n_clusters": [10, 64], "test_clusters": 64}})

    def sweep(*args, **kwargs):
        raise AssertionError("swept before checking that the model fits on its disk")

    monkeypatch.setattr(kmeans_sweep, "sweep", sweep)
    argv = [*SWEEP_ARGS, "--model", "models/kmeans.npz"]
    code, message = stage_error(caplog, monkeypatch, kmeans_sweep.main, argv)
    assert code == 1
    assert message.startswith("models/kmeans.npz: needs about 212 KiB, its disk has "), message
    assert "free some space" in message
    assert not list(small_disk.iterdir())


def test_the_model_fits_when_the_disk_has_room_for_it(kmeans_folder, small_disk):
    # The estimate is no stricter than the file: 16 centroids (50 KiB) fit on the 100 KiB disk.
    (kmeans_folder / "models").symlink_to(small_disk)
    params = load_params().kmeans
    check_free_space(kmeans_folder / "models/kmeans.npz", kmeans_sweep.model_bytes(params, 784))


# scripts/repro.sh with a stand-in setup.sh that says it ran, waits for `go`, and exits 3:
# what a run does after the lock, without installing anything.
STAND_IN_SETUP = """#!/usr/bin/env bash
echo "setup ran" >> setup.log
while [ ! -e go ]; do sleep 0.05; done
exit 3
"""


@pytest.fixture
def repro_clone(tmp_path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts/repro.sh", tmp_path / "scripts/repro.sh")
    (tmp_path / "scripts/setup.sh").write_text(STAND_IN_SETUP)
    (tmp_path / ".dvc").mkdir()
    return tmp_path


def repro_sh(clone: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "scripts/repro.sh"],
        cwd=clone,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_repro_sh_runs_one_at_a_time_in_a_clone(repro_clone):
    setup_log = repro_clone / "setup.log"
    first = repro_sh(repro_clone)
    try:
        wait_until(setup_log.exists, 30)
        second = repro_sh(repro_clone)
        try:
            _, stderr = second.communicate(timeout=60)
        finally:
            (repro_clone / "go").touch()  # lets a stand-in setup that did start end
    finally:
        (repro_clone / "go").touch()
        first.wait(timeout=60)
    assert second.returncode == 1, stderr
    (line,) = stderr.splitlines()
    assert "another run holds .dvc/tmp/repro.lock" in line
    assert "dvc exp run --queue" in line
    assert setup_log.read_text() == "setup ran\n"  # the second stopped before setup
    assert first.returncode == 3
    # Once the first has ended, the lock is free again.
    third = repro_sh(repro_clone)
    assert third.wait(timeout=60) == 3, third.stderr.read()
    assert setup_log.read_text() == "setup ran\nsetup ran\n"


def test_repro_sh_is_not_stopped_by_a_lock_in_another_clone(repro_clone, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / ".dvc/tmp").mkdir(parents=True)
    with open(other / ".dvc/tmp/repro.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (repro_clone / "go").touch()
        run = repro_sh(repro_clone)
        assert run.wait(timeout=60) == 3, run.stderr.read()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "stage", "metrics"),
    [
        ("models/cnn.pt", "evaluate_cnn", "metrics/cnn.json"),
        ("models/kmeans.npz", "kmeans_test", "metrics/kmeans.json"),
    ],
)
def test_a_failed_evaluation_loses_no_metrics(repo_copy, mirror_env, model, stage, metrics):
    earlier = (repo_copy / metrics).read_bytes()
    damaged = bytearray((repo_copy / model).read_bytes())
    damaged[len(damaged) // 2 :] = bytes(len(damaged) - len(damaged) // 2)
    (repo_copy / model).write_bytes(damaged)

    failed = dvc(repo_copy, "repro", "--single-item", stage, env=mirror_env, check=False)
    assert failed.returncode != 0
    assert "Traceback" not in failed.stdout + failed.stderr
    assert not (repo_copy / metrics).exists()  # DVC removes a stage's outputs before it runs

    # The README's recovery ("When something goes wrong"): the run-cache gives both back.
    recovered = dvc(repo_copy, "repro", env=mirror_env)
    # DVC says a stage came from the run-cache in this log line only.
    assert f"Stage '{stage}' is cached - skipping run" in recovered.stdout, recovered.stdout
    assert (repo_copy / metrics).read_bytes() == earlier
    assert changed_stages(repo_copy, env=mirror_env) == {}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_queue_cleanup_after_a_killed_worker(repo_copy):
    commit_all(repo_copy, "baseline results")
    (repo_copy / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts/queue_cleanup.py", repo_copy / "scripts")
    dvc(repo_copy, "exp", "run", "--queue", "-n", "endless", "-S", "cnn.epochs=10000")
    # Not dvc(): the worker keeps the pipes of `dvc queue start` open while it runs.
    subprocess.run(
        [str(BIN / "dvc"), "queue", "start", "-j", "1"],
        cwd=repo_copy,
        env=command_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    exps = repo_copy / ".dvc/tmp/exps"
    wait_until(lambda: list(exps.glob("tmp*/dvclive/metrics.json")), 300, 0.2)  # training
    (worker,) = processes_running("queue-worker", repo_copy)
    group = os.getpgid(worker)
    assert group != os.getpgid(0)  # the queue's own process group, not the tests'
    members = process_group(group)
    os.killpg(group, signal.SIGKILL)  # the worker, its experiment and the stage, as kill -9
    wait_until(lambda: not any(alive(p) for p in members), 30)
    assert "Running" in dvc(repo_copy, "queue", "status").stdout  # DVC does not notice
    assert list(exps.glob("tmp*"))

    done = run([sys.executable, "scripts/queue_cleanup.py", "endless"], cwd=repo_copy)
    assert done.stdout.startswith("queue_cleanup: endless: stopped, removed from the queue, ")
    assert "endless" not in dvc(repo_copy, "queue", "status").stdout
    assert "endless" not in dvc(repo_copy, "exp", "show").stdout
    assert not list(exps.glob("tmp*"))  # its copy of the workspace is gone
    status = git(repo_copy, "status", "--porcelain").stdout
    assert status.splitlines() == ["?? scripts/"], status  # the workspace is as it was
