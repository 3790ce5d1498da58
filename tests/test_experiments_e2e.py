"""Comparing runs: queued experiments in parallel, and sharing outputs through a remote."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import (
    BIN,
    ROOT,
    changed_stages,
    command_env,
    commit_all,
    dvc,
    git,
    lock_stages,
    output_files,
    ran_stages,
    rewritten_stages,
)

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT_S = 900


def readme_exp_show() -> list[tuple[list[str], int]]:
    """The README's `dvc exp show` commands, each with the terminal width it is for."""
    section = (ROOT / "README.md").read_text().split("\n## Comparing experiments\n")[1]
    commands = []
    for line in section.split("\n## ")[0].splitlines():
        found = re.fullmatch(r"(dvc exp show .*?)\s+# (?:fits|for) (\d+) columns.*", line)
        if found:
            commands.append((shlex.split(found.group(1)), int(found.group(2))))
    assert [width for _, width in commands] == [80, 120], commands
    return commands


def wait_for_queue(repo, timeout_s: float = QUEUE_TIMEOUT_S) -> str:
    """Poll `dvc queue status` until nothing is queued or running; return the last status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(2)
    dvc(repo, "queue", "stop", "--kill", check=False)
    raise AssertionError(f"queue still busy after {timeout_s} s:\n{status}")


def queue(repo, name: str, *overrides: str) -> None:
    """Queue an experiment named `name` with `-S` param overrides."""
    dvc(repo, "exp", "run", "--queue", "-n", name, *(a for o in overrides for a in ("-S", o)))


def experiments(repo) -> dict[str, dict]:
    """name -> {"params": ..., "metrics": ...} from `dvc exp show --json`."""
    found = {}
    for entry in json.loads(dvc(repo, "exp", "show", "--json").stdout):
        for exp in entry.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                found[rev["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": {path: m["data"] for path, m in data["metrics"].items()},
                }
    return found


def test_queued_experiments_run_in_parallel_with_their_own_params(repo_copy):
    commit_all(repo_copy, "baseline results")
    queue(
        repo_copy, "short", "cnn.epochs=1", "kmeans.n_clusters=[10,12]", "kmeans.test_clusters=12"
    )
    queue(repo_copy, "fast-lr", "cnn.lr=0.1", "kmeans.random_state=5")
    dvc(repo_copy, "queue", "start", "-j", "2")
    status = wait_for_queue(repo_copy)
    assert "Failed" not in status, status

    found = experiments(repo_copy)
    assert {"short", "fast-lr"} <= set(found), found.keys()
    short, fast = found["short"], found["fast-lr"]
    assert short["params"]["cnn"]["epochs"] == 1
    assert short["params"]["kmeans"]["n_clusters"] == [10, 12]
    assert fast["params"]["cnn"]["lr"] == 0.1 and fast["params"]["cnn"]["epochs"] == 2
    # Each experiment's metrics come from its own params.
    assert set(short["metrics"]["metrics/kmeans.json"]) == {"kmeans_accuracy"}
    short_cnn = short["metrics"]["metrics/cnn.json"]
    fast_cnn = fast["metrics"]["metrics/cnn.json"]
    assert short_cnn["test_loss"] != fast_cnn["test_loss"]

    diff = json.loads(dvc(repo_copy, "metrics", "diff", "short", "fast-lr", "--json").stdout)
    assert "metrics/cnn.json" in diff  # k-means scores 100% on the tiny data either way
    # The README's two tables keep every experiment's name whole and have the State column
    # that says which one is still running; the first fits 80 columns whatever changed.
    for args, columns in readme_exp_show():
        table = dvc(repo_copy, *args[1:], env={"COLUMNS": str(columns)}).stdout
        assert "[short]" in table and "[fast-lr]" in table and "State" in table, table
        assert "Success" in table, table
        if columns == 80:
            assert max(len(line.rstrip()) for line in table.splitlines()) <= 80, table
    watch, changed = (
        dvc(repo_copy, *args[1:], env={"COLUMNS": str(columns)}).stdout
        for args, columns in readme_exp_show()
    )
    assert "test.accuracy" in watch and "step" in watch  # DVCLive's: live while it trains
    assert "cnn.lr" in changed and "kmeans.n_clusters" in changed
    plots = json.loads(dvc(repo_copy, "plots", "diff", "short", "fast-lr", "--json").stdout)
    (loss_plot,) = plots["data"]["Training loss"]
    assert set(loss_plot["revisions"]) == {"short", "fast-lr"}

    # The same params again: the queue restores every stage from the run-cache.
    queue(repo_copy, "again", "cnn.lr=0.1", "kmeans.random_state=5")
    dvc(repo_copy, "queue", "start", "-j", "1")
    status = wait_for_queue(repo_copy)
    assert "Failed" not in status, status
    again = dvc(repo_copy, "queue", "logs", "again").stdout
    assert ran_stages(again) == set(), again
    # DVC says a stage came from the run-cache in this log line only.
    assert "Stage 'train_cnn' is cached - skipping run" in again
    found = experiments(repo_copy)
    assert found["again"]["metrics"] == found["fast-lr"]["metrics"]


def test_push_then_pull_in_a_fresh_clone_needs_no_rerun(repo_copy, tmp_path):
    remote = tmp_path / "remote"
    dvc(repo_copy, "remote", "add", "-d", "shared", str(remote))
    commit_all(repo_copy, "results and remote")
    dvc(repo_copy, "push")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo_copy), str(clone))
    assert not (clone / "models").exists()
    dvc(clone, "pull")
    assert changed_stages(clone) == {}
    lock, files = lock_stages(clone), output_files(clone)
    dvc(clone, "repro")
    assert lock_stages(clone) == lock
    assert rewritten_stages(files, output_files(clone)) == set()
    for path in ("models/cnn.pt", "models/kmeans.npz", "data/processed/cnn/train_x.npy"):
        assert (clone / path).read_bytes() == (repo_copy / path).read_bytes()


def identity(path: Path) -> tuple[int, int]:
    """A file's inode and mtime: another write, or another file, under the same name."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_a_running_experiment_writes_its_metrics_epoch_by_epoch(repo_copy, mirror_env):
    commit_all(repo_copy, "baseline results")
    # Batches of 8: 75 steps an epoch, long enough to watch each epoch's metrics land.
    args = ["exp", "run", "-n", "live", "-S", "cnn.epochs=4", "-S", "cnn.batch_size=8"]
    summary = repo_copy / "dvclive/metrics.json"
    baseline = identity(summary)  # the baseline's file, until DVC removes it to run the stage
    seen_while_running = []
    with subprocess.Popen(
        [str(BIN / "dvc"), *args],
        cwd=repo_copy,
        env=command_env(mirror_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            step = None
            try:
                if identity(summary) != baseline:
                    step = json.loads(summary.read_text())["step"]
            except (OSError, ValueError, KeyError):  # not written yet, or mid-write
                pass
            changed = step != (seen_while_running or [None])[-1]
            if step is not None and changed and process.poll() is None:
                seen_while_running.append(step)
            time.sleep(0.02)
        assert process.wait(timeout=60) == 0
    # The epochs landed in order, and at least one before the last while the experiment was
    # still running: a machine that trains two epochs between two looks still passes, a
    # trainer that writes its metrics only at the end does not.
    assert seen_while_running == sorted(set(seen_while_running)), seen_while_running
    assert set(seen_while_running) <= {1, 2, 3, 4}, seen_while_running
    assert seen_while_running and seen_while_running[0] < 4, seen_while_running
    final = json.loads(summary.read_text())
    assert final["step"] == 4
    assert experiments(repo_copy)["live"]["metrics"]["dvclive/metrics.json"] == final
    # And each epoch has its own row in DVCLive's per-epoch plot.
    accuracy = (repo_copy / "dvclive/plots/metrics/test/accuracy.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in accuracy] == ["step", "1", "2", "3", "4"]


def test_a_grid_of_values_queues_one_experiment_each(repo_copy):
    commit_all(repo_copy, "baseline results")
    output = dvc(repo_copy, "exp", "run", "--queue", "-S", "cnn.lr=0.005,0.01,0.02").stdout
    assert output.count("Queued experiment") == 3
    queued = experiments(repo_copy)
    assert sorted(exp["params"]["cnn"]["lr"] for exp in queued.values()) == [0.005, 0.01, 0.02]
    assert dvc(repo_copy, "queue", "status").stdout.count("Queued") == 3
    dvc(repo_copy, "queue", "remove", "--all")
