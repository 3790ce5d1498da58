"""Stage download: fetch the four IDX .gz files of the chosen data set.

Reads: params data.dataset, data.mirrors, data.verify; the DATA_MIRROR environment variable.
Writes: the output directory (data/raw/) holding the four NAME.gz files.

Each file is tried on every mirror in order: DATA_MIRROR first when set, then
data.mirrors, or the data set's public mirrors when that list is empty. A mirror is an
http(s):// URL, a file:// URL or a local directory. A download counts only when its
gzip stream is whole and, unless data.verify is false, its decompressed content has
the published md5. Files land in a temporary directory that replaces the output only
when all four are good, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from mnist_pipeline.config import DataParams, load_params
from mnist_pipeline.datasets import DATASETS, FILES, get_dataset
from mnist_pipeline.runtime import PipelineError, atomic_path, path_args, run_main

log = logging.getLogger("stages.download")

TIMEOUT_S = 30
CHUNK = 1 << 16


class MirrorError(Exception):
    """One mirror could not supply one good file; the message is the reason."""


def mirror_list(params: DataParams, env_mirror: str | None) -> list[str]:
    mirrors = list(params.mirrors) or list(get_dataset(params.dataset).mirrors)
    if env_mirror:
        mirrors.insert(0, env_mirror)
    return mirrors


def download(params: DataParams, out_dir: Path, env_mirror: str | None = None) -> None:
    """Fetch and check every file of params.dataset into out_dir, replacing it atomically."""
    dataset = get_dataset(params.dataset)
    mirrors = mirror_list(params, env_mirror)
    if not params.verify:
        log.warning("data.verify is false: checksums are not checked; use only a copy you trust")
    with atomic_path(out_dir, directory=True) as tmp_dir:
        for name in FILES:
            expected = dataset.md5[name] if params.verify else None
            _fetch_from_any(name, mirrors, tmp_dir / f"{name}.gz", expected)


def _fetch_from_any(name: str, mirrors: list[str], dest: Path, md5: str | None) -> None:
    failures = []
    for mirror in mirrors:
        try:
            _fetch(_join(mirror, f"{name}.gz"), dest)
            _check_gzip(dest, md5)
        except MirrorError as exc:
            dest.unlink(missing_ok=True)
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


def _fetch(source: str, dest: Path) -> None:
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        _fetch_url(source, dest)
        return
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
    else:
        path = Path(source)
    if not path.is_file():
        raise MirrorError(f"{path} does not exist")
    try:
        shutil.copyfile(path, dest)
    except OSError as exc:
        raise MirrorError(f"cannot copy ({exc})") from None


def _fetch_url(url: str, dest: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-dvc-pipeline"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
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
    except urllib.error.HTTPError as exc:
        raise MirrorError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise MirrorError(f"cannot connect ({exc.reason})") from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise MirrorError(f"connection failed ({exc!r})") from None
    if total is not None and dest.stat().st_size != total:
        raise MirrorError(f"truncated: got {dest.stat().st_size} of {total} bytes")


def _check_gzip(path: Path, md5: str | None) -> None:
    """Decompress the whole file: catches truncation and corruption; compare md5 if given."""
    digest = hashlib.md5()
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
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
    args = path_args(__doc__, "out")
    params = load_params().data
    log.info("params: %s", params)
    download(params, args.out, os.environ.get("DATA_MIRROR") or None)


if __name__ == "__main__":
    run_main(main)
