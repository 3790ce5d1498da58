"""Fixtures: tiny data on a real HTTP server, and the project reproduced in a temp git repo.

The helpers they use, and that test modules import, live in tests/helpers.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import dvc, make_repo, serve, write_tiny_dataset


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


@pytest.fixture(scope="session")
def mirror_env(http_mirror) -> dict:
    return {"DATA_MIRROR": http_mirror}


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory, mirror_env) -> Path:
    """A project copy on which the whole pipeline has run once; tests must not modify it."""
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    dvc(repo, "repro", env=mirror_env)
    return repo


@pytest.fixture
def repo_copy(reproduced_repo, tmp_path) -> Path:
    """A private copy of the reproduced repo (cache included) that a test may change."""
    copy = tmp_path / "repo"
    shutil.copytree(reproduced_repo, copy, symlinks=True)
    return copy


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
