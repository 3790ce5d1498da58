"""What the tests share: the project's paths and params, tiny IDX data sets, local HTTP
servers, project copies in temporary git repos, headless Chromium, and drawn pictures.

Test modules import from here; conftest.py holds only the fixtures.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image, ImageDraw

from mnist_pipeline.config import CnnParams, KmeansParams
from mnist_pipeline.datasets import FILES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# What a user's clone holds (besides outputs): copied into every test repo.
PROJECT_FILES = (
    "stages",
    "mnist_pipeline",
    "dvc.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    ".dvcignore",
    ".gitignore",
    "uv.lock",  # the environment stage checks the installed packages against it
)

# The notebooks' params, written by the tests themselves: a user's own params.yaml (say,
# switched to fashion-mnist) must not change what the tests run.
NOTEBOOK_PARAMS = {
    "data": {"dataset": "mnist", "mirrors": [], "verify": True},
    "preprocess": {"mean": 0.1307, "std": 0.3081},
    "cnn": {
        "seed": 1,
        "epochs": 5,
        "batch_size": 64,
        "test_batch_size": 1000,
        "lr": 0.01,
        "momentum": 0.5,
        "log_interval": 10,
    },
    "kmeans": {
        "n_clusters": [10, 16, 36, 64, 144, 256],
        "test_clusters": 256,
        "batch_size": 1024,
        "n_init": 1,
        "max_iter": 100,
        "random_state": 0,
    },
    "compute": {"threads": 2, "device": "auto"},
}

# Small enough for seconds per stage, big enough that both models learn the classes.
TINY_PARAMS = {
    "data": {"verify": False},  # tiny data has its own checksums (tested in test_download)
    "cnn": {"epochs": 2, "lr": 0.05, "log_interval": 2, "test_batch_size": 100},
    "kmeans": {"n_clusters": [10, 16], "test_clusters": 16, "batch_size": 256},
    "compute": {"threads": 1, "device": "cpu"},  # 2 cores: tests running side by side
}

# The tiny params as the stages' own objects, for tests that call the stages in-process.
TINY_CNN = CnnParams(
    seed=1, epochs=2, batch_size=64, test_batch_size=100, lr=0.05, momentum=0.5, log_interval=2
)
TINY_KMEANS = KmeansParams(
    n_clusters=(10, 16), test_clusters=16, batch_size=256, n_init=1, max_iter=100, random_state=0
)


# ---- Tiny IDX data sets ----


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip-compressed when path ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        # No name and mtime=0 in the gzip header: the same content gives the same bytes.
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        ):
            gz.write(payload)
    else:
        path.write_bytes(payload)


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class is a bright 7x6 block at its own place on a 3x4 grid, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        r = 2 + row * 9 + int(rng.integers(0, 2))
        c = 1 + col * 6 + int(rng.integers(0, 2))
        images[i, r : r + 7, c : c + 6] = rng.integers(180, 256, size=(7, 6), dtype=np.uint8)
    return images


def write_tiny_dataset(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0):
    """Write the four NAME.gz files; return the md5 of each file's decompressed content."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_y = np.arange(n_train) % 10
    test_y = np.arange(n_test) % 10
    rng.shuffle(train_y)
    rng.shuffle(test_y)
    arrays = dict(
        zip(
            FILES,
            (make_images(train_y, rng), train_y, make_images(test_y, rng), test_y),
            strict=True,
        )
    )
    md5 = {}
    for name, array in arrays.items():
        path = directory / f"{name}.gz"
        write_idx(path, array)
        md5[name] = hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()
    return md5


# ---- Local HTTP servers ----


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing to the test output."""

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


class _QuietFiles(QuietHandler, http.server.SimpleHTTPRequestHandler):
    pass


class serve:
    """Context manager: serve on a free port of 127.0.0.1, yield its URL.

    It serves the files of `directory`, or answers with `handler`, a request handler class
    (a misbehaving mirror). `.server.requests` starts at 0, for handlers that count.
    """

    def __init__(self, directory: Path | None = None, handler=None):
        handler = handler or functools.partial(_QuietFiles, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.requests = 0

    def __enter__(self) -> str:
        # shutdown() waits for the loop to see its flag: at the default 0.5 s poll, every
        # `with serve(...)` cost half a second on exit.
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()
        return f"http://127.0.0.1:{self.server.server_port}/"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """A server on 127.0.0.1 that accepts connections and never answers; counts them."""

    def __enter__(self) -> Hanging:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)

    def __exit__(self, *exc) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


@functools.cache
def no_user_config() -> str:
    """An empty folder that stands in for DVC's global and system config folders: a user's
    `dvc cache dir --global` or `dvc config --system` must not reach the test repos."""
    return tempfile.mkdtemp(prefix="dvc-config-")


def command_env(env: dict | None = None) -> dict:
    """os.environ with this interpreter's environment first on PATH, a git identity, and
    none of the user's DVC config outside the test repo."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": no_user_config(),
        "DVC_SYSTEM_CONFIG_DIR": no_user_config(),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        **(env or {}),
    }


def wait_until(condition: Callable[[], object], timeout_s: float, interval_s: float = 0.05) -> None:
    """Poll `condition` until it is true or `timeout_s` has passed; the caller asserts."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(interval_s)


def run(args: list[str], cwd: Path, env: dict | None = None, check: bool = True):
    """Run a command with this interpreter's environment first on PATH; return the result."""
    result = subprocess.run(args, cwd=cwd, env=command_env(env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def dvc(repo: Path, *args: str, env: dict | None = None, check: bool = True):
    return run([str(BIN / "dvc"), *args], cwd=repo, env=env, check=check)


def git(repo: Path, *args: str):
    return run(["git", *args], cwd=repo)


def set_params(repo: Path, changes: dict) -> None:
    """Merge nested `changes` into the repo's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def write_params(directory: Path, changes: dict | None = None) -> None:
    """Write the notebooks' params, with nested `changes` merged in, as directory/params.yaml."""
    (directory / "params.yaml").write_text(yaml.safe_dump(NOTEBOOK_PARAMS, sort_keys=False))
    set_params(directory, changes or {})


def keep_only_the_projects_dvc_config(repo: Path) -> None:
    """Drop what a user may have added to the copied .dvc/config: a shared cache folder
    (`dvc cache dir`, as DVC recommends for teams), remotes. The test repo keeps its own
    cache in .dvc/cache."""
    from dvc.config import Config  # DVC's own reading and writing of its config file

    with Config(str(repo / ".dvc"), validate=False).edit("repo", validate=False) as config:
        config["cache"], config["remote"] = {}, {}
        config.get("core", {}).pop("remote", None)


def make_repo(path: Path) -> Path:
    """Copy the project into a fresh git repo, with the tiny-data params."""
    return copy_project(path, TINY_PARAMS)


def copy_project(path: Path, params: dict) -> Path:
    """Copy the project into a fresh git repo with one commit (DVCLive needs one): the
    notebooks' params with nested `params` changes merged in, and a .dvc/config without
    the user's shared cache or remotes. The benchmark's copies are made here too."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / name)
    keep_only_the_projects_dvc_config(path)
    write_params(path, params)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "test")  # dvc exp commits need an identity
    git(path, "config", "user.email", "test@example.com")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "project")
    return path


# Runs before every `dvc repro` (always_changed): it checks the environment and computes
# nothing, so the helpers below leave it out of the stages that ran or changed.
ALWAYS_RUNS = "environment"


def ran_stages(output: str) -> set[str]:
    """Names of the stages a `dvc repro` or `dvc exp run` actually executed.

    For tests that must tell a run from a run-cache restore: DVC records which stages it ran
    nowhere but in these log lines (dvc.lock and `dvc status` look the same either way).
    """
    lines = output.splitlines()
    return {line.split("'")[1] for line in lines if line.startswith("Running stage")} - {
        ALWAYS_RUNS
    }


def changed_stages(repo: Path, env: dict | None = None) -> dict:
    """`dvc status --json`, less the environment stage's "always changed"."""
    status = json.loads(dvc(repo, "status", "--json", env=env).stdout)
    assert status.pop(ALWAYS_RUNS, ["always changed"]) == ["always changed"], status
    return status


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


# ---- Headless Chromium ----

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_TIMEOUT_S = 120
# Scripts get this much virtual time; it only advances while the page is idle, so a slow
# machine does not make the check flaky.
VIRTUAL_TIME_BUDGET_MS = 10_000
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    # Every http(s) fetch goes to a closed port (loopback included), and no name resolves.
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
)


def chromium(binary: str, *args: str, profile: Path) -> str:
    """Run headless Chromium with the network cut off and a fresh profile; return stdout."""
    result = subprocess.run(
        [binary, *OFFLINE_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
    )
    assert result.returncode == 0, f"chromium exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def screenshot(binary: str, url: str, name: str, window: str, profile: Path) -> None:
    """Keep a screenshot of `url` (window "WIDTH,HEIGHT") as test-artifacts/NAME."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    chromium(binary, f"--screenshot={path}", f"--window-size={window}", url, profile=profile)
    assert path.is_file() and path.stat().st_size > 0


def instrumented_copy(page: Path, copy: Path, head_js: str, end_js: str) -> Path:
    """A copy of `page` at `copy`, with `head_js` run before the page's own scripts and
    `end_js` after them."""
    source = page.read_text(encoding="utf-8")
    # Inlined scripts may mention <head> and </body> in strings (vega-embed does): take the
    # first <head> (the page's own comes before any script) and the last </body>.
    head, body_end = source.find("<head>"), source.rfind("</body>")
    assert 0 <= head < body_end, "no <head> ... </body> in the page"
    source = (
        source[:head]
        + f"<head><script>{head_js}</script>"
        + source[head + len("<head>") : body_end]
        + f"<script>{end_js}</script>"
        + source[body_end:]
    )
    copy.write_text(source, encoding="utf-8")
    return copy


def page_report(binary: str, copy: Path, report_id: str, profile: Path) -> dict:
    """Open an instrumented copy in headless Chromium and return the JSON report its check
    script wrote into <pre id=REPORT_ID>; the page must have had no script errors and
    fetched nothing but file: and data: URLs."""
    dom = chromium(binary, "--dump-dom", copy.as_uri(), profile=profile)
    match = re.search(rf'<pre id="{report_id}">(.*?)</pre>', dom, re.DOTALL)
    assert match, f"the page never reported; dumped DOM ends with:\n{dom[-2000:]}"
    report = json.loads(html.unescape(match.group(1)))
    assert report["errors"] == []
    assert [url for url in report["fetched"] if not url.startswith(("file:", "data:"))] == []
    return report


# ---- Drawn pictures ----


def seven(width: int, height: int, ink: str = "black", paper: str = "white") -> Image.Image:
    """A hand-drawn-looking 7 filling most of a width x height picture."""
    image = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(image)
    w, h = width, height
    stroke = max(2, min(w, h) // 12)
    draw.line([(0.25 * w, 0.2 * h), (0.75 * w, 0.2 * h), (0.45 * w, 0.85 * h)], ink, stroke)
    draw.line([(0.35 * w, 0.5 * h), (0.65 * w, 0.5 * h)], ink, stroke)
    return image


def boot(width: int, height: int) -> Image.Image:
    """A filled ankle boot, dark on light: a shaft on the left, a foot along the bottom."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([0.1 * width, 0.1 * height, 0.45 * width, 0.9 * height], "black")
    draw.rectangle([0.1 * width, 0.6 * height, 0.9 * width, 0.9 * height], "black")
    return image


def rgba(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"))


# ---- What a repro changed, from dvc.lock and the outputs themselves ----


def lock_stages(repo: Path) -> dict[str, dict]:
    """dvc.lock's record of each stage (cmd, deps, params, outs and their md5s); {} before
    the first run."""
    path = repo / "dvc.lock"
    return yaml.safe_load(path.read_text())["stages"] if path.exists() else {}


def lock_md5s(repo: Path) -> dict[str, str]:
    """path -> md5 of every stage output recorded in dvc.lock."""
    return {
        out["path"]: out["md5"] for stage in lock_stages(repo).values() for out in stage["outs"]
    }


def output_files(repo: Path) -> dict[str, dict[Path, tuple[int, int]]]:
    """stage -> {file: (inode, mtime in ns)} for every file of every output dvc.lock lists,
    the environment stage's record left out.

    A stage that runs, or is restored from the run-cache, writes its outputs anew (the
    stages replace each file by a rename; DVC's checkout links or copies from its cache),
    so a stage whose files all keep their inode and mtime was left alone.
    """
    found = {}
    for name, stage in lock_stages(repo).items():
        if name == ALWAYS_RUNS:
            continue
        files = {}
        for out in stage["outs"]:
            path = repo / out["path"]
            for file in [path] if path.is_file() else sorted(path.rglob("*")):
                stat = file.stat()
                files[file] = (stat.st_ino, stat.st_mtime_ns)
        found[name] = files
    return found


def rewritten_stages(before: dict, after: dict) -> set[str]:
    """The stages whose output files differ between two `output_files` snapshots."""
    return {name for name, files in after.items() if files != before.get(name)}


# ---- Processes ----


def alive(pid: int | str) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_running(word: str, cwd: Path) -> list[int]:
    """Process ids of the live processes in folder `cwd` with `word` as one of their
    arguments (`stages.train_cnn` of `python -m stages.train_cnn`, `queue-worker`)."""
    return [
        process.pid
        for process in psutil.process_iter(["cmdline", "cwd"])
        if word in (process.info["cmdline"] or ())
        and process.info["cwd"] == str(cwd.resolve())
        and alive(process.pid)
    ]


def process_group(pgid: int) -> list[int]:
    """Process ids of the members of process group `pgid`."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process.pid)
        except OSError:  # exited meanwhile
            continue
    return members
