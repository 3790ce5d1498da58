"""Stage download: fetch the four IDX .gz files of the chosen data set.

Reads: params data.dataset, data.mirrors, data.verify; the DATA_MIRROR environment variable.
Writes: the output directory (data/raw/) holding the four NAME.gz files.

Each file is tried on every mirror in order: DATA_MIRROR first when set, then
data.mirrors, or the data set's public mirrors when that list is empty. A mirror is an
http(s):// URL, a file:// URL or a local directory. A download counts only when its
gzip stream is whole and, unless data.verify is false, its decompressed content has
the published md5. Files land in a temporary directory that replaces the output only
when all four are good, so a failure leaves nothing half-written. Each file is bounded:
in bytes sent and decompressed (its size in the data set, mnist_pipeline.datasets.SIZES)
and in time (a deadline for the whole file). A mirror that cannot be reached or does not
answer in time is skipped for the rest of the run.

A mirror URL may not hold a login (DVC writes params into dvc.lock): an http(s) mirror
that needs one gets it from ~/.netrc (the `machine` entry for its host, as curl and pip
read it), sent as HTTP basic auth to that host only, never to where it redirects.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import hashlib
import http.client
import logging
import netrc
import os
import shutil
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from mnist_pipeline.config import DataParams, check_mirror, load_params
from mnist_pipeline.datasets import DATASETS, FILES, SIZES, get_dataset
from mnist_pipeline.runtime import PipelineError, atomic_path, path_args, run_main

log = logging.getLogger("stages.download")

READ_TIMEOUT_S = 15  # connecting, and each wait for more data
# Each file's deadline: DEADLINE_BASE_S plus its decompressed size at DEADLINE_RATE
# bytes/s (the .gz is smaller): 30 s for a labels file, 120 s for the training images.
DEADLINE_BASE_S = 30
DEADLINE_RATE = 512 * 1024
CHUNK = 1 << 16
# Errors of this machine's disk, not of a mirror: no other mirror can help with those.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class MirrorError(Exception):
    """One mirror could not supply one good file; the message is the reason.

    `unreachable`: the mirror could not be reached or did not answer in time; it is not
    tried again for the other files of this run (a dead mirror cost 30 s per file).
    """

    def __init__(self, reason: str, unreachable: bool = False):
        super().__init__(reason)
        self.unreachable = unreachable


def mirror_list(params: DataParams, env_mirror: str | None) -> list[str]:
    """The mirrors to try, in order; a ParamsError, before any network access, for one that
    holds a login or a query (its message does not repeat them)."""
    mirrors = list(params.mirrors) or list(get_dataset(params.dataset).mirrors)
    for mirror in mirrors:
        check_mirror(mirror, "data.mirrors")
    if env_mirror:
        check_mirror(env_mirror, "DATA_MIRROR")
        mirrors.insert(0, env_mirror)
    return mirrors


def download(params: DataParams, out_dir: Path, env_mirror: str | None = None) -> None:
    """Fetch and check every file of params.dataset into out_dir, replacing it atomically."""
    dataset = get_dataset(params.dataset)
    mirrors = mirror_list(params, env_mirror)
    if not params.verify:
        log.warning("data.verify is false: checksums are not checked; use only a copy you trust")
    unreachable: dict[str, str] = {}  # mirror -> why it is skipped
    with atomic_path(out_dir, directory=True) as tmp_dir:
        for name in FILES:
            expected = dataset.md5[name] if params.verify else None
            _fetch_from_any(name, mirrors, tmp_dir / f"{name}.gz", expected, unreachable)


def max_gz_bytes(name: str) -> int:
    """The most a mirror may send for NAME.gz: gzip adds at most 5 bytes per 64 KiB block
    of incompressible data, plus its header; 1% and 64 KiB leave room for any compressor."""
    return SIZES[name] + SIZES[name] // 100 + (1 << 16)


def _fetch_from_any(
    name: str, mirrors: list[str], dest: Path, md5: str | None, unreachable: dict[str, str]
) -> None:
    failures = []
    for mirror in mirrors:
        if mirror in unreachable:
            failures.append(f"  - {mirror}: skipped, {unreachable[mirror]}")
            continue
        try:
            _fetch(_join(mirror, f"{name}.gz"), dest, name)
            _check_gzip(dest, md5, SIZES[name])
        except MirrorError as exc:
            dest.unlink(missing_ok=True)
            if exc.unreachable:
                unreachable[mirror] = f"it failed for {name}.gz ({exc})"
            log.warning("%s.gz from %s failed: %s; trying the next mirror", name, mirror, exc)
            failures.append(f"  - {mirror}: {exc}")
            continue
        log.info("%s.gz from %s: ok (%d bytes)", name, mirror, dest.stat().st_size)
        return
    raise PipelineError(
        f"could not get {name}.gz from any mirror:\n"
        + "\n".join(failures)
        + "\nTo use a local copy of the four .gz files, point DATA_MIRROR at its directory "
        "(DATA_MIRROR=/path/to/dir dvc repro) or list it under data.mirrors in params.yaml."
    )


def _join(mirror: str, filename: str) -> str:
    return mirror.rstrip("/") + "/" + filename


def _fetch(source: str, dest: Path, name: str) -> None:
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        _fetch_url(source, dest, name)
        return
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
    else:
        path = Path(source)
    if not path.is_file():
        raise MirrorError(f"{path} does not exist")
    if path.stat().st_size > max_gz_bytes(name):
        raise MirrorError(f"{path} is larger than any copy of {name}.gz can be")
    try:
        shutil.copyfile(path, dest)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise
        raise MirrorError(f"cannot copy ({exc})") from None


def netrc_login(host: str | None) -> tuple[str, str] | None:
    """The (login, password) ~/.netrc holds for `host`, or None. Read on each use, so that a
    run sees the file as it is; the password is never logged."""
    path = Path("~/.netrc")
    try:
        # hosts, not authenticators(): that falls back to the `default` entry, whose login
        # would then go to every mirror, the built-in plain-http ones included.
        entry = netrc.netrc().hosts.get(host or "")
    except FileNotFoundError:
        return None
    except netrc.NetrcParseError as exc:
        # Its message can quote a token of the file, which may be a password: not shown.
        if "permissive" in exc.msg:
            raise PipelineError(
                f"{path}: others may read it, and it holds passwords: `chmod 600 ~/.netrc`"
            ) from None
        if "owner" in exc.msg:
            raise PipelineError(
                f"{path}: another user owns it, and it holds passwords: it must be your own file"
            ) from None
        raise PipelineError(
            f"{path}: line {exc.lineno}: not a netrc file (`machine HOST login USER password "
            "PASSWORD` lines); fix or remove it"
        ) from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read it ({exc.strerror}); fix or remove it") from None
    if entry is None:
        return None
    login, _account, password = entry
    return login, password


def _fetch_url(url: str, dest: Path, name: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    login = netrc_login(host)
    seconds = DEADLINE_BASE_S + SIZES[name] / DEADLINE_RATE
    try:
        with (
            _deadline(seconds),
            urllib.request.urlopen(_request(url, login), timeout=READ_TIMEOUT_S) as response,
        ):
            total = _save_body(response, dest, name)
    except (_Expired, OSError, http.client.HTTPException) as exc:
        problem = _mirror_problem(exc, seconds, host, login)
        if problem is None:
            raise
        raise problem from None
    if total is not None and dest.stat().st_size != total:
        raise MirrorError(f"truncated: got {dest.stat().st_size} of {total} bytes")


def _request(url: str, login: tuple[str, str] | None) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-dvc-pipeline"})
    if login is not None:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode("ascii")
        # Unredirected: urllib copies ordinary headers to a redirect's target, another host.
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _save_body(response, dest: Path, name: str) -> int | None:
    """Write the response's body to dest, at most what NAME.gz can be; return the announced
    length (None when the server gave none)."""
    limit = max_gz_bytes(name)
    total = int(response.headers.get("Content-Length") or 0) or None
    if total is not None and total > limit:
        raise MirrorError(f"announces {total} bytes, more than {name}.gz can be")
    with (
        open(dest, "wb") as out,
        tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=dest.name,
            disable=None,  # no bar unless stderr is a terminal
            leave=False,
        ) as bar,
    ):
        while chunk := response.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
            if out.tell() > limit:
                raise MirrorError(f"sent over {limit} bytes, more than {name}.gz can be")
    return total


def _mirror_problem(
    exc: BaseException, seconds: float, host: str | None, login: tuple[str, str] | None
) -> MirrorError | None:
    """What a failed fetch says about the mirror; None for a full disk, which is ours."""
    match exc:
        case _Expired():
            return MirrorError(f"not done within the file's {seconds:.3g} s", unreachable=True)
        case urllib.error.HTTPError(code=401):
            hint = (
                f"~/.netrc's login for {host} was refused"
                if login
                else f"it needs a login: add `machine {host} login USER password PASSWORD` "
                "to ~/.netrc"
            )
            return MirrorError(f"HTTP 401 {exc.reason}; {hint}")
        case urllib.error.HTTPError():
            return MirrorError(f"HTTP {exc.code} {exc.reason}")
        case urllib.error.URLError():
            return MirrorError(f"cannot connect ({exc.reason})", unreachable=True)
        case TimeoutError():
            return MirrorError(f"no data for {READ_TIMEOUT_S} s", unreachable=True)
        case _ if getattr(exc, "errno", None) in DISK_FULL:
            return None
        case _:
            return MirrorError(f"connection failed ({exc!r})")


class _Expired(Exception):
    """A file's deadline passed (raised by the SIGALRM handler)."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _Expired in the block after `seconds` of wall time, even inside a blocking read.

    A socket timeout bounds each read, not the whole file: a mirror sending one byte every
    20 s held the stage for 100 s for 5 bytes. SIGALRM interrupts the read. It exists on
    Unix only and reaches only the main thread; elsewhere the per-read timeout still holds.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    if not (hasattr(signal, "setitimer") and main_thread):
        yield
        return

    def expire(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_gzip(path: Path, md5: str | None, max_size: int) -> None:
    """Decompress the whole file, up to max_size: catches truncation, corruption and gzip
    bombs, with data.verify false too; compare md5 if given."""
    digest = hashlib.md5()
    size = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if size > max_size:
                    raise MirrorError(
                        f"decompresses to more than {max_size} bytes, the size of this file in "
                        "the data set: not a copy of it"
                    )
    except (OSError, EOFError, zlib.error) as exc:
        raise MirrorError(f"corrupt or truncated gzip file ({exc})") from None
    if md5 is not None and digest.hexdigest() != md5:
        known = [d.name for d in DATASETS.values() if digest.hexdigest() in d.md5.values()]
        hint = (
            f"this file is from {known[0]}: set data.dataset: {known[0]} in params.yaml"
            if known
            else "damaged or unknown copy"
        )
        raise MirrorError(
            f"checksum mismatch: decompressed md5 {digest.hexdigest()}, expected {md5} ({hint})"
        )


def main() -> None:
    args = path_args(__doc__, "out", outputs=("out",))
    params = load_params().data
    log.info("params: %s", params)
    download(params, args.out, os.environ.get("DATA_MIRROR") or None)


if __name__ == "__main__":
    run_main(main)
