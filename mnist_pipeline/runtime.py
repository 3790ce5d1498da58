"""What every stage's `main` shares: logging, progress bars, atomic writes and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import glob
import json
import logging
import math
import os
import select
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger("stages")
T = TypeVar("T")

# Set to 1 to see the Python traceback behind an error message (README, "When something
# goes wrong").
TRACEBACK_ENV = "MNIST_PIPELINE_TRACEBACK"


class PipelineError(Exception):
    """A problem the user can fix (bad params, bad data, no mirror). Printed without a traceback."""


# Outside a terminal, a progress line at every tenth of the work, and at least this often.
PROGRESS_EVERY_S = 30.0


def damaged(path: Path | str, what: str, stage: str) -> PipelineError:
    """The one-line error for a model file that cannot be used, with the cheapest fixes
    first: DVC's cached copy, then re-running only the stage that makes it."""
    return PipelineError(
        f"{path}: {what}; if it is the pipeline's own, restore it with "
        f"`dvc checkout --force {path}` or make it again with "
        f"`dvc repro --force --single-item environment {stage}`; otherwise give the path of "
        f"a file that {stage} made"
    )


def progress(items: Sequence[T], desc: str, unit: str) -> Iterator[T]:
    """A progress bar in a terminal. Elsewhere (CI, `dvc queue logs`, a log file) a log line
    at every tenth of the way and at least every PROGRESS_EVERY_S seconds, so that a slow
    run is never silent for minutes."""
    if sys.stderr.isatty():
        yield from tqdm(items, leave=False, dynamic_ncols=True, desc=desc, unit=unit)
        return
    total = len(items)
    tenth = max(1, math.ceil(total / 10))
    last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if done < total and (done % tenth == 0 or now - last >= PROGRESS_EVERY_S):
            log.info("%s: %d/%d %s (%d%%)", desc, done, total, unit, 100 * done // total)
            last = now


def path_args(doc: str, *names: str, outputs: Collection[str] = ()) -> argparse.Namespace:
    """Parse the stage's required --NAME PATH options: every path comes from dvc.yaml.

    The `outputs` among them are checked writable now, so that a stage fails before its
    work rather than after it (train_cnn trained every epoch, then could not save).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name in names:
        parser.add_argument(f"--{name}", type=Path, required=True, metavar="PATH")
    args = parser.parse_args()
    for name in outputs:
        check_writable(getattr(args, name.replace("-", "_")))
    return args


def check_writable(path: Path) -> None:
    """Raise a PipelineError unless an output can be written at `path` (next to it, as
    atomic_path writes its temporary files)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise PipelineError(os_error_message(exc, path)) from None


def check_free_space(path: Path, needed: int) -> None:
    """Raise a PipelineError unless the disk that `path` goes on has `needed` bytes free, so
    that a stage whose output size is known stops before its work, not after it."""
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise PipelineError(
            f"{path}: needs about {needed / 1024:,.0f} KiB, its disk has "
            f"{free / 1024:,.0f} KiB free; free some space there, then run again"
        )


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, from its st_mode: for an error message."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def os_error_message(exc: OSError, path: Path | str | None = None) -> str:
    """One line naming the file, the problem and what to do about it."""
    where = path or exc.filename or "a file"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        advice = "the disk is full: free some space (`dvc gc` drops unused cache), then run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "make it (and its folder) writable by this user, then run again"
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):
        advice = "a file stands where a folder of this path should be: move it, then run again"
    else:
        advice = "check that path, then run again"
    return f"{where}: {reason}; {advice}"


def run_main(stage: Callable[[], None]) -> None:
    """Run a stage's main with logging set up; every error exits non-zero with one line.

    A PipelineError or an OSError (full disk, permissions) exits 1, Ctrl-C exits 130, and
    anything else is a bug, reported as such. MNIST_PIPELINE_TRACEBACK=1 adds the traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    show_traceback = os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    try:
        stop_with_parent()
        stage()
    except PipelineError as exc:
        _fail(str(exc), 1, show_traceback)
    except OSError as exc:
        _fail(os_error_message(exc), 1, show_traceback)
    except KeyboardInterrupt:
        _fail("interrupted: this run's outputs were not written; run it again", 130, show_traceback)
    except Exception as exc:
        what = " ".join(str(exc).split())
        _fail(
            f"unexpected {type(exc).__name__}: {what}. This is a bug: run again with "
            f"{TRACEBACK_ENV}=1 to see where, and report it",
            1,
            show_traceback,
        )
    log.info("%s done in %.1f s", Path(sys.argv[0]).stem, time.perf_counter() - started)


def _fail(message: str, code: int, show_traceback: bool) -> None:
    log.error("%s", message, exc_info=show_traceback)  # exc_info: the exception being handled
    sys.exit(code)


# Shells that can stand between dvc and a stage. dvc runs each command through $SHELL
# (/bin/sh when unset); bash execs a lone command, but dash, Debian's /bin/sh, keeps it as
# a child, so the stage's parent is then the shell and not dvc.
_SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish"})


def stop_with_parent() -> None:
    """On Linux, stop this stage (SIGTERM) when the process that started it dies.

    `kill -9` of dvc otherwise leaves the stage running as an orphan that keeps writing
    its outputs. The process that started it is the nearest ancestor that is not a shell
    (see _SHELLS); a daemon thread waits for it to exit on its pidfd. SIGTERM raises
    KeyboardInterrupt here, so temporary files are removed and run_main reports it like
    Ctrl-C. Elsewhere (no pidfd_open) it does nothing.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        pidfd = os.pidfd_open(_launcher())
    except ProcessLookupError:
        raise KeyboardInterrupt from None  # it died while this stage was starting
    except (OSError, AttributeError, ValueError):
        return
    threading.Thread(target=_stop_when_gone, args=(pidfd,), daemon=True).start()


def _launcher() -> int:
    """The nearest ancestor process that is not a shell."""
    import psutil  # here: the config checker imports this module and starts no stage

    pid = os.getppid()
    while pid > 1:
        try:
            process = psutil.Process(pid)
            if Path(process.exe()).name not in _SHELLS:
                return pid
            pid = process.ppid()
        except psutil.Error:
            # Another user's process (no shell this stage's dvc started), or one that exited
            # meanwhile: pidfd_open then says so.
            return pid
    raise ValueError("no parent to watch: it exited already, or this is the init process")


def _stop_when_gone(pidfd: int) -> None:
    """Wait until the process behind `pidfd` exits, then stop this one like Ctrl-C does.

    The signal goes to the main thread itself, so that it also interrupts a blocking call
    there (a sleep, a read) instead of waiting for it to return.
    """
    select.select([pidfd], [], [])
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)


# Each temporary path of a running atomic_path block -> the output it stands for. A write
# into a temporary path through its own atomic_path (save_model inside all_or_none) then
# names the output in its error, not `.kmeans.npz.XXXXXXXX.tmp`.
_STANDS_FOR: dict[Path, Path] = {}


@contextlib.contextmanager
def atomic_path(path: Path | str, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it into place only if the block succeeds.

    A failed or interrupted stage therefore never leaves a half-written output behind.
    Temporary names are `.NAME.XXXXXXXX.tmp` (.gitignore lists the pattern); those a run
    killed with kill -9 left behind are removed here, at the next write of the output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    temp = {"dir": path.parent, "prefix": f".{path.name}.", "suffix": ".tmp"}
    if directory:
        tmp = Path(tempfile.mkdtemp(**temp))
    else:
        fd, name = tempfile.mkstemp(**temp)
        os.close(fd)
        tmp = Path(name)
    output = _STANDS_FOR.get(path, path)
    _STANDS_FOR[tmp] = output
    try:
        yield tmp
        # mkstemp/mkdtemp create private files; give outputs the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and path.exists():
            # A directory cannot replace a non-empty one: move the old one aside first, so an
            # interruption leaves either the old or the new directory in place.
            old = Path(tempfile.mkdtemp(**{**temp, "prefix": f".{path.name}.old."}))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        # A failed write (a full disk) often names no file, or only the temporary one.
        raise PipelineError(os_error_message(exc, output)) from exc
    finally:
        del _STANDS_FOR[tmp]
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _remove_leftovers(path: Path) -> None:
    # DVC's lock keeps two runs of a stage from writing the same output at the same time,
    # so a temporary file of this output found now belongs to a run that was killed.
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def all_or_none(*paths: Path, directories: Collection[Path] = ()) -> Iterator[tuple[Path, ...]]:
    """Temporary paths for several outputs (atomic_path), all moved into place when the block
    succeeds and none when it fails: a stage never leaves new outputs beside missing ones."""
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(atomic_path(p, p in directories)) for p in paths)


def write_json(path: Path | str, data: dict) -> None:
    """Metrics (or meta.json) as strict JSON with a stable key order: equal data, equal bytes.

    NaN and infinity are not JSON (json.dumps would write a bare NaN): refused, by key.
    """
    bad = [k for k, v in data.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise PipelineError(
            f"{path}: {', '.join(f'{k} is {data[k]}' for k in bad)}, not a number JSON can hold;"
            " the model or the processed data holds non-finite values: re-run from preprocess"
        )
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
