"""When something goes wrong: one-line errors, non-zero exits, no partial or stray outputs."""

from __future__ import annotations

import errno
import io
import logging
import os
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from mnist_pipeline import config, predict, runtime
from mnist_pipeline.cnn import Net, load_checkpoint, save_checkpoint
from mnist_pipeline.config import CnnParams, PreprocessParams
from mnist_pipeline.datasets import get_dataset
from mnist_pipeline.kmeans import MAX_CENTROIDS, KmeansModel, load_model, save_model
from mnist_pipeline.processed import CNN_IMAGE, load_processed, save_processed
from mnist_pipeline.runtime import PipelineError, atomic_path, run_main, write_json
from stages import kmeans_sweep, kmeans_test, plot_centroids, train_cnn
from stages.preprocess import preprocess
from tests.helpers import (
    BIN,
    ROOT,
    TINY_PARAMS,
    Hanging,
    alive,
    command_env,
    commit_all,
    git,
    processes_running,
    set_params,
    wait_until,
    write_params,
)

CLASSES = tuple(str(d) for d in range(10))
CNN_PARAMS = CnnParams(1, 1, 64, 1000, 0.01, 0.5, 10)


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


def proc_status(pid: int | str) -> str:
    """The process's state and parent, for a failure message."""
    try:
        process = psutil.Process(int(pid))
        return f"state {process.status()}, parent {process.ppid()}"
    except psutil.NoSuchProcess:
        return "gone"


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
    assert alive(pid)
    parent.kill()  # kill -9
    parent.wait()
    wait_until(lambda: not alive(pid), 30)
    assert not alive(pid), f"the stage outlived the process that started it: {proc_status(pid)}"


def test_processed_arrays_are_checked_where_cheap(tiny_folders):
    folder = tiny_folders / "data/processed/cnn"
    labels = np.load(folder / "test_y.npy")
    labels[3] = 127
    np.save(folder / "test_y.npy", labels)
    with pytest.raises(PipelineError, match="label 127, outside 0-9.*re-run preprocess"):
        load_processed(folder, CNN_IMAGE)
    np.save(folder / "test_y.npy", labels % 10)
    images = np.load(folder / "test_x.npy")
    images[5, 0, 3, 3] = np.nan
    np.save(folder / "test_x.npy", images)
    with pytest.raises(PipelineError, match="test_x holds NaN or infinite values"):
        load_processed(folder, CNN_IMAGE)
    load_processed(folder, CNN_IMAGE, uses=("train",))  # a stage that never reads test_x
    np.save(folder / "test_x.npy", images[:10])
    with pytest.raises(PipelineError, match="test_y is int64 \\(200,\\), not 10 int64 labels"):
        load_processed(folder, CNN_IMAGE)


def written_anew(path: Path, earlier: os.stat_result) -> bool:
    """Whether path is now another file than `earlier` was taken of, or rewritten since."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    return (now.st_ino, now.st_mtime_ns) != (earlier.st_ino, earlier.st_mtime_ns)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pidfd_open")
@pytest.mark.parametrize("shell", SHELLS[1:])
def test_kill_9_of_dvc_stops_the_stage_it_ran(repo_copy, mirror_env, shell):
    repo = repo_copy
    # A .gitignore that DVC wrote before .gitignore listed DVCLive's files, committed.
    (repo / "dvclive/.gitignore").write_text("/plots\n/metrics.json\n")
    commit_all(repo, "results and dvclive/.gitignore")
    summary = repo / "dvclive/metrics.json"
    baseline = summary.stat()  # the first run's, until DVC removes it to run the stage
    set_params(repo, {"cnn": {"epochs": 10_000}})  # trains until stopped
    dvc_run = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "train_cnn"],
        cwd=repo,
        env=command_env({**mirror_env, "SHELL": shell}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Until an epoch is done: the stage is running.
    wait_until(lambda: written_anew(summary, baseline), 120, 0.1)
    assert processes_running("stages.train_cnn", repo)
    dvc_run.kill()
    dvc_run.wait()
    wait_until(lambda: not processes_running("stages.train_cnn", repo), 30, 0.1)
    assert not processes_running("stages.train_cnn", repo), "the stage outlived dvc"
    assert not (repo / "models/cnn.pt").exists()
    status = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    assert not [line for line in status.splitlines() if "dvclive" in line or ".tmp" in line]


# Model and data files that no run of the pipeline makes: each is refused at load, before
# anything is allocated from what it declares, with the one-line "damaged" message.

NOTEBOOK_META = {
    "dataset": "mnist",
    "classes": [str(d) for d in range(10)],
    "mean": 0.1307,
    "std": 0.3081,
    "preparation": {"subject": "digit", "box": 20, "center": "mass"},
}


def npz_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """A k-means model whose centroids.npy header declares `shape` and holds no data: a few
    hundred bytes on disk that np.load would allocate whole before finding them short."""
    save_model(path, KmeansModel(np.zeros((16, 784), np.float32), np.arange(16) % 10, CLASSES))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path) as old:
        members = {name: old.read(name) for name in old.namelist()}
    members["centroids.npy"] = header.getvalue()
    with zipfile.ZipFile(path, "w") as new:
        for name, data in members.items():
            new.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((10_000_000, 784), "\\(10000000, 784\\), not \\(k, 784\\)"),
        ((MAX_CENTROIDS + 1, 784), f"not \\(k, 784\\) with k from 1 to {MAX_CENTROIDS}"),
        ((16, 783), "\\(16, 783\\)"),
    ],
    ids=["ten-million", "more-than-the-sweep-allows", "pixels"],
)
def test_kmeans_shapes_are_checked_before_anything_is_allocated(tmp_path, shape, message):
    model = npz_declaring(tmp_path / "km.npz", shape)
    assert model.stat().st_size < 10_000
    declared = f"km.npz: centroids is declared with shape .*{message}.*damaged"
    with pytest.raises(PipelineError, match=declared):
        load_model(model)


def test_kmeans_stages_and_predict_call_a_huge_declared_model_damaged(
    tiny_folders, caplog, monkeypatch, capsys
):
    model = npz_declaring(tiny_folders / "models/kmeans.npz", (10_000_000, 784))
    outputs = ["--metrics", "m.json", "--made-with", "w.json", "--per-class", "p.csv"]
    argv = ["--model", str(model), "--data", "data/processed/kmeans", *outputs]
    code, errors = stage_errors(
        caplog, kmeans_test.main, [*argv, "--confusion", "c.csv"], monkeypatch
    )
    assert code == 1
    assert_one_line(errors, "centroids is declared with shape (10000000, 784)", "kmeans_sweep")
    code, errors = stage_errors(
        caplog, plot_centroids.main, ["--model", str(model), "--out", "c.png"], monkeypatch
    )
    assert code == 1
    assert_one_line(errors, "centroids is declared with shape (10000000, 784)")
    torch.manual_seed(0)
    save_checkpoint(tiny_folders / "cnn.pt", Net(), CNN_PARAMS, NOTEBOOK_META)
    picture = tiny_folders / "seven.png"
    Image.new("L", (40, 40), 255).save(picture)
    capsys.readouterr()
    assert predict.main([str(picture), "--cnn", "cnn.pt", "--kmeans", str(model)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "declared with shape (10000000, 784)" in line
    assert sorted(p.name for p in tiny_folders.iterdir() if p.suffix in (".json", ".csv")) == []


def test_a_model_with_more_centroids_than_training_images_is_damaged(
    tiny_folders, caplog, monkeypatch
):
    n_train = len(np.load(tiny_folders / "data/processed/kmeans/train_y.npy"))
    k = n_train + 1
    assert k <= MAX_CENTROIDS  # loadable: only the data tells it from a real model
    centroids = np.random.default_rng(0).random((k, 784), dtype=np.float32)
    save_model("km.npz", KmeansModel(centroids, np.arange(k) % 10, CLASSES))
    argv = ["--model", "km.npz", "--data", "data/processed/kmeans", "--metrics", "m.json"]
    argv += ["--made-with", "w.json", "--per-class", "p.csv", "--confusion", "c.csv"]
    code, errors = stage_errors(caplog, kmeans_test.main, argv, monkeypatch)
    assert code == 1
    assert_one_line(errors, f"{k} centroids, more than the {n_train} training images")
    assert not Path("m.json").exists()


def test_class_names_with_terminal_escapes_are_refused(tmp_path):
    names = [*CLASSES[:9], "\x1b]0;pwned\x07\x1b[2J"]
    save_model(
        tmp_path / "km.npz",
        KmeansModel(np.zeros((16, 784), np.float32), np.arange(16) % 10, tuple(names)),
    )
    with pytest.raises(PipelineError, match="class name .*control characters.*damaged"):
        load_model(tmp_path / "km.npz")
    save_checkpoint(tmp_path / "cnn.pt", Net(), CNN_PARAMS, {**NOTEBOOK_META, "classes": names})
    with pytest.raises(PipelineError, match="class name .* is not a short line of text.*damaged"):
        load_checkpoint(tmp_path / "cnn.pt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ["0", "1", "2"]}, "3 class names for a model of 10 classes"),
        ({"mean": None}, "mean is NoneType None, not a number"),
        ({"std": float("nan")}, "std nan is outside"),
        ({"preparation": {"subject": "digit", "box": "20", "center": "mass"}}, "prep.* wrong kind"),
    ],
    ids=["three-classes", "no-mean", "nan-std", "preparation"],
)
def test_a_model_meta_no_stage_writes_is_refused_at_load(tmp_path, change, message):
    meta = {**NOTEBOOK_META, **change}
    if change.get("mean", 0) is None:
        del meta["mean"]
        message = "meta holds \\['classes', 'dataset', 'preparation', 'std'\\]"
    save_checkpoint(tmp_path / "cnn.pt", Net(), CNN_PARAMS, meta)
    with pytest.raises(PipelineError, match=f"cnn.pt: its {message}.*damaged.*train_cnn"):
        load_checkpoint(tmp_path / "cnn.pt")


def test_the_digest_covers_the_meta(tmp_path):
    save_checkpoint(tmp_path / "cnn.pt", Net(), CNN_PARAMS, NOTEBOOK_META)
    checkpoint = torch.load(tmp_path / "cnn.pt", weights_only=True)
    checkpoint["meta"]["mean"] = 0.5  # still a valid meta: only the digest can tell
    torch.save(checkpoint, tmp_path / "cnn.pt")
    with pytest.raises(PipelineError, match="weights or meta do not match the digest"):
        load_checkpoint(tmp_path / "cnn.pt")


@pytest.mark.parametrize(
    ("folder", "array", "reshape", "expected"),
    [
        ("cnn", "train_x", (-1, 28, 28), "(1, 28, 28)"),
        ("cnn", "test_x", (-1, 784), "(1, 28, 28)"),
        ("kmeans", "test_x", (-1, 28, 28), "(784,)"),
    ],
    ids=["cnn-without-channel", "cnn-flattened", "kmeans-as-squares"],
)
def test_processed_arrays_of_another_shape_are_refused(
    tiny_folders, caplog, monkeypatch, folder, array, reshape, expected
):
    path = tiny_folders / f"data/processed/{folder}/{array}.npy"
    np.save(path, np.load(path).reshape(reshape))
    stage, argv = {
        "cnn": (train_cnn.main, ["--data", "data/processed/cnn", "--model", "m.pt"]),
        "kmeans": (kmeans_test.main, ["--model", "km.npz", "--data", "data/processed/kmeans"]),
    }[folder]
    if folder == "kmeans":
        km = KmeansModel(np.zeros((16, 784), np.float32), np.arange(16) % 10, CLASSES)
        save_model("km.npz", km)
        argv += ["--metrics", "m.json", "--made-with", "w.json", "--per-class", "p.csv"]
        argv += ["--confusion", "c.csv"]
    else:
        argv += ["--live", "live"]
    code, errors = stage_errors(caplog, stage, argv, monkeypatch)
    assert code == 1
    assert_one_line(errors, f"{array} is float32", f"not float32 images of shape {expected}")
    assert not any(Path(name).exists() for name in ("m.pt", "m.json", "live"))


def test_every_model_the_sweep_can_make_loads():
    assert MAX_CENTROIDS == config.MAX_CLUSTERS
