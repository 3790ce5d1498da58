"""When something goes wrong: one-line errors, non-zero exits, no partial or stray outputs."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline import runtime
from mnist_pipeline.config import PreprocessParams
from mnist_pipeline.datasets import get_dataset
from mnist_pipeline.processed import load_processed, save_processed
from mnist_pipeline.runtime import PipelineError, atomic_path, run_main, write_json
from stages import kmeans_sweep, train_cnn
from stages.preprocess import preprocess
from tests.conftest import (
    BIN,
    ROOT,
    TINY_PARAMS,
    Hanging,
    command_env,
    commit_all,
    dvc,
    git,
    make_repo,
    set_params,
    wait_until,
    write_params,
)


def stage_errors(
    caplog, stage, argv: list[str], monkeypatch
) -> tuple[int, list[logging.LogRecord]]:
    """Run `stage` through run_main as `python -m` does; its exit code and ERROR records."""
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    monkeypatch.setattr(runtime, "stop_with_parent", lambda: None)  # not on pytest itself
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_:
        run_main(stage)
    return exit_.value.code, [r for r in caplog.records if r.levelno >= logging.ERROR]


def assert_one_line(records: list[logging.LogRecord], *words: str) -> None:
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert "\n" not in message and not records[0].exc_info, message
    for word in words:
        assert word in message, message


def raise_(exc: BaseException):
    def stage() -> None:
        raise exc

    return stage


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "models/cnn.pt"), 1,
         ("models/cnn.pt: Permission denied", "writable")),
        (OSError(errno.ENOSPC, "No space left on device", "data/raw"), 1,
         ("data/raw: No space left on device", "free some space")),
        (KeyboardInterrupt(), 130, ("interrupted", "run it again")),
        (IndexError("index 127 is out of bounds"), 1,
         ("unexpected IndexError: index 127", "MNIST_PIPELINE_TRACEBACK=1")),
    ],
    ids=["permission", "disk-full", "ctrl-c", "bug"],
)  # fmt: skip
def test_errors_are_one_line_with_the_cause_and_a_non_zero_exit(
    caplog, monkeypatch, exc, code, words
):
    exit_code, errors = stage_errors(caplog, raise_(exc), [], monkeypatch)
    assert exit_code == code
    assert_one_line(errors, *words)


def test_the_traceback_is_there_when_asked_for(caplog, monkeypatch):
    monkeypatch.setenv(runtime.TRACEBACK_ENV, "1")
    _, errors = stage_errors(caplog, raise_(IndexError("x")), [], monkeypatch)
    assert errors[0].exc_info and errors[0].exc_info[0] is IndexError


def test_a_full_disk_names_the_output_and_keeps_the_earlier_one(tmp_path, monkeypatch, caplog):
    # A failed write() names no file: the output's name must come from the stage.
    path = tmp_path / "metrics.json"
    path.write_text("earlier\n")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    code, errors = stage_errors(caplog, lambda: write_json(path, {"a": 1.0}), [], monkeypatch)
    monkeypatch.undo()
    assert code == 1
    assert_one_line(errors, f"{path}: No space left on device", "free some space")
    assert path.read_text() == "earlier\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_metrics_are_strict_json(tmp_path):
    with pytest.raises(PipelineError, match="test_loss is nan"):
        write_json(tmp_path / "cnn.json", {"test_accuracy": 0.1, "test_loss": float("nan")})
    assert not list(tmp_path.iterdir())


def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing(tmp_path):
    write_params(tmp_path)
    with Hanging() as mirror:
        process = subprocess.Popen(
            [sys.executable, "-m", "stages.download", "--out", "data/raw"],
            cwd=tmp_path,
            env=command_env({"DATA_MIRROR": mirror.url, "PYTHONPATH": str(ROOT)}),
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: mirror.connections, 30)  # then the download awaits an answer
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("ERROR")] == [
        "ERROR stages: interrupted: this run's outputs were not written; run it again"
    ]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []  # no temporary folder


@pytest.fixture
def tiny_folders(tiny_dir, tmp_path, monkeypatch) -> Path:
    """tmp_path as a project: tiny params and processed folders; the working directory."""
    cnn, kmeans = preprocess(tiny_dir, PreprocessParams(0.1307, 0.3081), get_dataset("mnist"))
    save_processed(tmp_path / "data/processed/cnn", cnn)
    save_processed(tmp_path / "data/processed/kmeans", kmeans)
    write_params(tmp_path, TINY_PARAMS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_unwritable_output_fails_before_training(tiny_folders, caplog, monkeypatch):
    (tiny_folders / "models").write_text("a file where the models folder should be")

    def train(*args, **kwargs):
        raise AssertionError("trained before checking that the model can be saved")

    monkeypatch.setattr(train_cnn, "train", train)
    args = ["--data", "data/processed/cnn", "--model", "models/cnn.pt", "--live", "dvclive"]
    code, errors = stage_errors(caplog, train_cnn.main, args, monkeypatch)
    assert code == 1
    assert_one_line(errors, "models")


def test_a_stage_writes_all_its_outputs_or_none(tiny_folders, caplog, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(kmeans_sweep, "save_model", fail)
    args = ["--data", "data/processed/kmeans", "--plot", "plots/sweep.csv"]
    code, errors = stage_errors(caplog, kmeans_sweep.main, [*args, "--model", "m.npz"], monkeypatch)
    assert code == 1
    assert_one_line(errors, "No space left on device")
    assert not (tiny_folders / "plots/sweep.csv").exists()  # the CSV was written, then removed
    assert not list((tiny_folders / "plots").iterdir())
    assert not (tiny_folders / "m.npz").exists()


def test_leftovers_of_a_killed_run_go_at_the_next_write(tmp_path):
    (tmp_path / ".raw.k2j3h4g5.tmp").mkdir()  # what kill -9 leaves: a folder...
    (tmp_path / ".raw.k2j3h4g5.tmp/train-images-idx3-ubyte.gz").write_bytes(b"partial")
    (tmp_path / ".raw.old.a1b2c3d4.tmp").mkdir()
    (tmp_path / ".cnn.json.q9w8e7r6.tmp").write_text("{")  # ... and files
    (tmp_path / ".unrelated.tmp").write_text("not ours")
    with atomic_path(tmp_path / "raw", directory=True) as tmp:
        (tmp / "new.gz").write_bytes(b"new")
    with atomic_path(tmp_path / "cnn.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".unrelated.tmp", "cnn.json", "raw"]


def test_git_ignores_temporary_outputs(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_bytes((ROOT / ".gitignore").read_bytes())
    (tmp_path / "metrics").mkdir()
    with (
        atomic_path(tmp_path / "data/raw", directory=True) as raw,
        atomic_path(tmp_path / "metrics/cnn.json") as metrics,
    ):
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        metrics.write_text("{")
        status = git(tmp_path, "status", "--porcelain", "--untracked-files=all").stdout
    assert status.splitlines() == ["?? .gitignore"]


STAGE = """
import os, sys, time
from mnist_pipeline.runtime import run_main
def stage():
    with open(sys.argv[1], "w") as ready:  # ready: the parent may die now
        ready.write(str(os.getpid()))
    time.sleep(60)
run_main(stage)
"""
LAUNCHER = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(60)"
# dvc runs commands through $SHELL, /bin/sh when unset: dash on Debian, which keeps a lone
# command as its child; bash execs it. "; exit $?" keeps any shell in between.
SHELLS = [None, *(shell for shell in ("/bin/sh", "/bin/bash") if Path(shell).exists())]


def proc_status(pid: str) -> str:
    """The State and PPid lines of /proc/PID/status, for a failure message."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return "; ".join(line for line in lines if line.startswith(("State", "PPid")))


def exited(pid: str) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pidfd_open")
@pytest.mark.parametrize("shell", SHELLS)
def test_a_stage_stops_when_its_parent_is_killed(tmp_path, shell):
    ready = tmp_path / "ready"
    stage = [sys.executable, "-c", STAGE, str(ready)]
    if shell:
        stage = [shell, "-c", shlex.join(stage) + "; exit $?"]
    parent = subprocess.Popen([sys.executable, "-c", LAUNCHER, *stage], cwd=ROOT)
    wait_until(lambda: ready.exists() and ready.read_text(), 30)
    pid = ready.read_text()
    assert not exited(pid)
    parent.kill()  # kill -9
    parent.wait()
    wait_until(lambda: exited(pid), 30)
    assert exited(pid), f"the stage outlived the process that started it: {proc_status(pid)}"


def test_processed_arrays_are_checked_where_cheap(tiny_folders):
    folder = tiny_folders / "data/processed/cnn"
    labels = np.load(folder / "test_y.npy")
    labels[3] = 127
    np.save(folder / "test_y.npy", labels)
    with pytest.raises(PipelineError, match="label 127, outside 0-9.*re-run preprocess"):
        load_processed(folder)
    np.save(folder / "test_y.npy", labels % 10)
    images = np.load(folder / "test_x.npy")
    images[5, 0, 3, 3] = np.nan
    np.save(folder / "test_x.npy", images)
    with pytest.raises(PipelineError, match="test_x holds NaN or infinite values"):
        load_processed(folder)
    load_processed(folder, uses=("train",))  # a stage that never reads test_x need not pay
    np.save(folder / "test_x.npy", images[:10])
    with pytest.raises(PipelineError, match="test_y is int64 \\(200,\\), not 10 int64 labels"):
        load_processed(folder)


def stage_processes(module: str, cwd: Path) -> list[int]:
    """Process ids of `python -m <module>` running in `cwd` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            running = module.encode() in (proc / "cmdline").read_bytes().split(b"\0")
            if running and (proc / "cwd").resolve() == cwd and not exited(proc.name):
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pidfd_open")
@pytest.mark.parametrize("shell", SHELLS[1:])
def test_kill_9_of_dvc_stops_the_stage_it_ran(tmp_path, mirror_env, shell):
    repo = make_repo(tmp_path / "repo")
    # A .gitignore that DVC wrote before .gitignore listed DVCLive's files, committed.
    (repo / "dvclive").mkdir()
    (repo / "dvclive/.gitignore").write_text("/plots\n/metrics.json\n")
    commit_all(repo, "dvclive/.gitignore")
    dvc(repo, "repro", "preprocess", env=mirror_env)
    set_params(repo, {"cnn": {"epochs": 10_000}})  # trains until stopped
    dvc_run = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "train_cnn"],
        cwd=repo,
        env=command_env({**mirror_env, "SHELL": shell}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Until an epoch is done: the stage is running.
    wait_until((repo / "dvclive/metrics.json").exists, 120, 0.1)
    assert stage_processes("stages.train_cnn", repo.resolve())
    dvc_run.kill()
    dvc_run.wait()
    wait_until(lambda: not stage_processes("stages.train_cnn", repo.resolve()), 30, 0.1)
    assert not stage_processes("stages.train_cnn", repo.resolve()), "the stage outlived dvc"
    assert not (repo / "models/cnn.pt").exists()
    status = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    assert not [line for line in status.splitlines() if "dvclive" in line or ".tmp" in line]
