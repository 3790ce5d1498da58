"""What every stage's `main` shares: logging, progress bars, atomic writes and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger("stages")
T = TypeVar("T")


class PipelineError(Exception):
    """A problem the user can fix (bad params, bad data, no mirror). Printed without a traceback."""


def progress(items: Iterable[T], **kwargs) -> Iterable[T]:
    """A progress bar in a terminal; none on a pipe (CI, `dvc queue` workers): disable=None."""
    return tqdm(items, disable=None, leave=False, dynamic_ncols=True, **kwargs)


def path_args(doc: str, *names: str) -> argparse.Namespace:
    """Parse the stage's required --NAME PATH options: every path comes from dvc.yaml."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name in names:
        parser.add_argument(f"--{name}", type=Path, required=True, metavar="PATH")
    return parser.parse_args()


def run_main(stage: Callable[[], None]) -> None:
    """Run a stage's main with logging set up; a PipelineError exits 1 with its message only."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        stage()
    except PipelineError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("%s done in %.1f s", Path(sys.argv[0]).stem, time.perf_counter() - started)


@contextlib.contextmanager
def atomic_path(path: Path | str, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it into place only if the block succeeds.

    A failed or interrupted stage therefore never leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create private files; give outputs the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and path.exists():
            # A directory cannot replace a non-empty one: move the old one aside first, so an
            # interruption leaves either the old or the new directory in place.
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_json(path: Path | str, data: object) -> None:
    """Metrics as JSON with a stable key order, so equal results give equal bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path | str, rows: list[dict]) -> None:
    """Plot data as CSV with a header row; columns in the order of the first row's keys."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _short(v) for k, v in row.items()} for row in rows)


def _short(value: object) -> object:
    """Floats with 6 significant digits: plot data, not a record of every bit."""
    return f"{value:.6g}" if isinstance(value, float) else value
