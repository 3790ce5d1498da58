"""Shared fixtures: tiny data on a real HTTP server, and project copies in temp git repos."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.tiny_data import write_tiny_dataset

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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny")
    write_tiny_dataset(directory)
    return directory


@pytest.fixture(scope="session")
def http_mirror(tiny_dir) -> Iterator[str]:
    """The tiny data set served over HTTP on 127.0.0.1; yields the mirror URL."""
    with serve(tiny_dir) as url:
        yield url


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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
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
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / name)
    keep_only_the_projects_dvc_config(path)
    write_params(path, TINY_PARAMS)
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
    """Names of the stages a `dvc repro` or `dvc exp run` actually executed."""
    lines = output.splitlines()
    return {line.split("'")[1] for line in lines if line.startswith("Running stage")} - {
        ALWAYS_RUNS
    }


def changed_stages(repo: Path, env: dict | None = None) -> dict:
    """`dvc status --json`, less the environment stage's "always changed"."""
    status = json.loads(dvc(repo, "status", "--json", env=env).stdout)
    assert status.pop(ALWAYS_RUNS, ["always changed"]) == ["always changed"], status
    return status


@pytest.fixture(scope="session")
def mirror_env(http_mirror) -> dict:
    return {"DATA_MIRROR": http_mirror}


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory, mirror_env) -> Path:
    """A project copy on which the whole pipeline has run once; tests must not modify it."""
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    result = dvc(repo, "repro", env=mirror_env)
    (repo / "first_repro.log").write_text(result.stdout + result.stderr)
    return repo


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def chromium_binary() -> str:
    """Debian's chromium for the browser tests; they skip without it, except under CI."""
    binary = shutil.which("chromium")
    if binary is None:
        reason = "needs headless Chromium (`apt-get install chromium`) on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"CI must not skip the browser check: {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture
def repo_copy(reproduced_repo, tmp_path) -> Path:
    """A private copy of the reproduced repo (cache included) that a test may change."""
    copy = tmp_path / "repo"
    shutil.copytree(reproduced_repo, copy, symlinks=True)
    return copy
