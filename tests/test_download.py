"""The download stage against real mirrors: an HTTP server on 127.0.0.1 and local folders."""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import shutil
import time

import pytest

import stages.download
from mnist_pipeline.config import DataParams
from mnist_pipeline.datasets import DATASETS, FILES, SIZES, Dataset
from mnist_pipeline.runtime import PipelineError
from stages.download import download, mirror_list
from tests.helpers import Hanging, QuietHandler, serve

DEAD = "http://127.0.0.1:9/"  # the discard port: connection refused


@pytest.fixture
def tiny_dataset(tiny_dir, monkeypatch) -> str:
    """Register the tiny files as a data set with their own checksums; return its name."""
    md5 = {
        n: hashlib.md5(gzip.decompress((tiny_dir / f"{n}.gz").read_bytes())).hexdigest()
        for n in FILES
    }
    tiny = Dataset("tiny", tuple("0123456789"), md5, ())
    monkeypatch.setitem(DATASETS, "tiny", tiny)
    return "tiny"


def params(*mirrors: str, dataset: str = "tiny", verify: bool = True) -> DataParams:
    return DataParams(dataset=dataset, mirrors=tuple(mirrors), verify=verify)


def assert_same_files(out, source) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.gz" for n in FILES)
    for name in FILES:
        assert (out / f"{name}.gz").read_bytes() == (source / f"{name}.gz").read_bytes()


def test_http_mirror(tiny_dataset, http_mirror, tiny_dir, tmp_path):
    download(params(http_mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)


def test_success_replaces_an_earlier_download_whole(tiny_dataset, http_mirror, tiny_dir, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.gz").write_bytes(b"from an earlier run")
    download(params(http_mirror), out)
    assert_same_files(out, tiny_dir)  # the stale file is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary leftovers


@pytest.mark.parametrize("form", ["directory", "file-url"])
def test_local_mirrors(tiny_dataset, tiny_dir, tmp_path, form):
    mirror = str(tiny_dir) if form == "directory" else tiny_dir.as_uri()
    download(params(mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)


def test_dead_mirror_then_good_one(tiny_dataset, http_mirror, tiny_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        download(params(DEAD, http_mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    failures = [r.getMessage() for r in caplog.records if DEAD in r.getMessage()]
    # Tried for the first file only: a mirror that cannot be reached is skipped afterwards.
    assert len(failures) == 1
    assert all("cannot connect" in line and "\n" not in line for line in failures)


def test_http_404_then_good(tiny_dataset, http_mirror, tiny_dir, tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve(empty) as url, caplog.at_level(logging.WARNING):
        download(params(url, http_mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    assert "HTTP 404" in caplog.text


def corrupted_copy(tiny_dir, target, how: str):
    shutil.copytree(tiny_dir, target)
    path = target / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes in the middle of the deflate stream
        middle = len(data) // 2
        path.write_bytes(
            data[:middle]
            + bytes(b ^ 0xFF for b in data[middle : middle + 64])
            + data[middle + 64 :]
        )
    return target


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_corrupt_file_then_good_mirror(tiny_dataset, http_mirror, tiny_dir, tmp_path, how, caplog):
    bad = corrupted_copy(tiny_dir, tmp_path / "bad", how)
    with serve(bad) as url, caplog.at_level(logging.WARNING):
        download(params(url, http_mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    assert "train-images-idx3-ubyte.gz from " + url in caplog.text
    assert "corrupt or truncated gzip" in caplog.text or "checksum mismatch" in caplog.text


def test_checksum_mismatch_names_the_data_set(http_mirror, tmp_path):
    # The tiny files are not MNIST: with verification on, no mirror has a good copy.
    with pytest.raises(PipelineError, match="checksum mismatch") as error:
        download(params(http_mirror, dataset="mnist"), tmp_path / "raw")
    assert "expected 6bbc9ace898e44ae57da46a324031adb" in str(error.value)
    assert not (tmp_path / "raw").exists()


def test_files_of_another_known_data_set_name_the_setting_that_fixes_it(
    tiny_dataset, http_mirror, tmp_path
):
    # The tiny data is registered as data set "tiny": asking for mnist gets its files.
    with pytest.raises(PipelineError) as error:
        download(params(http_mirror, dataset="mnist"), tmp_path / "raw")
    assert "this file is from tiny: set data.dataset: tiny in params.yaml" in str(error.value)


def test_verify_false_accepts_other_content_with_a_warning(http_mirror, tiny_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        download(params(http_mirror, dataset="mnist", verify=False), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    assert "data.verify is false" in caplog.text


class _TruncatingHandler(QuietHandler):
    """Promises 1000 bytes and sends 10: a connection dropped mid-file."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(8))


def test_dropped_connection_is_reported_and_skipped(
    tiny_dataset, http_mirror, tiny_dir, tmp_path, caplog
):
    with serve(handler=_TruncatingHandler) as url, caplog.at_level(logging.WARNING):
        download(params(url, http_mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    assert f"from {url} failed" in caplog.text


def test_all_mirrors_failing_lists_each_and_keeps_old_output(tiny_dataset, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "earlier.gz").write_bytes(b"kept")
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve(empty) as url, pytest.raises(PipelineError) as error:
        download(params(DEAD, url, str(tmp_path / "missing")), out)
    message = str(error.value)
    assert f"{DEAD}: cannot connect" in message
    assert f"{url}: HTTP 404" in message
    assert f"{tmp_path / 'missing'}: " in message and "does not exist" in message
    assert "DATA_MIRROR=/path/to/dir" in message
    # Nothing produced before is lost, and no temporary files are left next to it.
    assert [p.name for p in out.iterdir()] == ["earlier.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "raw"]


def test_data_mirror_goes_first_and_defaults_fill_in():
    assert mirror_list(params(dataset="mnist"), None) == list(DATASETS["mnist"].mirrors)
    assert mirror_list(params("a", "b", dataset="mnist"), "/local") == ["/local", "a", "b"]


@pytest.fixture
def tiny_sizes(tiny_dir, monkeypatch) -> None:
    """The tiny files' sizes as the data set's: the caps scale down with them."""
    for name in FILES:
        size = len(gzip.decompress((tiny_dir / f"{name}.gz").read_bytes()))
        monkeypatch.setitem(SIZES, name, size)


class _EndlessHandler(QuietHandler):
    """A body with no length and no end (it stops at 16 MiB, so that the test ends anyway)."""

    def do_GET(self):
        self.server.requests += 1
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(256):
                self.wfile.write(bytes(1 << 16))
        except OSError:  # the client hung up
            pass


def test_endless_body_is_cut_at_the_size_cap(
    tiny_dataset, tiny_sizes, http_mirror, tiny_dir, tmp_path, caplog
):
    with serve(handler=_EndlessHandler) as url, caplog.at_level(logging.WARNING):
        download(params(url, http_mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    cap = stages.download.max_gz_bytes("train-images-idx3-ubyte")
    assert cap < 1 << 20
    assert f"sent over {cap} bytes, more than train-images-idx3-ubyte.gz can be" in caplog.text


class _DripHandler(QuietHandler):
    """Promises 40 bytes and sends one every 0.1 s: each read is quick, the file is not.

    It counts each byte before sending it: 40 means a client sat out the whole drip.
    """

    def do_GET(self):
        self.server.requests += 1
        self.server.sent = 0
        self.send_response(200)
        self.send_header("Content-Length", "40")
        self.end_headers()
        try:
            for _ in range(40):
                self.server.sent += 1
                self.wfile.write(b"\x1f")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:  # the client hung up
            pass


def test_a_slow_drip_meets_the_file_deadline_and_the_mirror_is_skipped(
    tiny_dataset, http_mirror, tiny_dir, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(stages.download, "DEADLINE_BASE_S", 0.2)
    monkeypatch.setattr(stages.download, "DEADLINE_RATE", 1e12)
    mirror = serve(handler=_DripHandler)
    with mirror as url, caplog.at_level(logging.WARNING):
        download(params(url, http_mirror), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    assert "not done within the file's 0.2 s" in caplog.text
    assert mirror.server.requests == 1  # not asked again for the other three files
    # The download hung up at its deadline; it did not sit out the 4 s drip to the end.
    assert mirror.server.sent < 40


def test_a_mirror_that_does_not_answer_costs_one_timeout(
    tiny_dataset, http_mirror, tiny_dir, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(stages.download, "READ_TIMEOUT_S", 0.2)
    with Hanging() as hanging, caplog.at_level(logging.WARNING):
        download(params(hanging.url, http_mirror), tmp_path / "raw")
        assert len(hanging.connections) == 1
    assert_same_files(tmp_path / "raw", tiny_dir)
    assert "no data for 0.2 s" in caplog.text


def test_decompression_stops_at_the_size_with_verify_off_too(
    tiny_sizes, http_mirror, tiny_dir, tmp_path, caplog
):
    bomb = tmp_path / "bomb"
    shutil.copytree(tiny_dir, bomb)
    size = SIZES["train-images-idx3-ubyte"]
    with gzip.open(bomb / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as out:
        for _ in range(8):
            out.write(bytes(size))  # 8 times the file's size, in a small .gz
    with serve(bomb) as url, caplog.at_level(logging.WARNING):
        download(params(url, http_mirror, dataset="mnist", verify=False), tmp_path / "raw")
    assert_same_files(tmp_path / "raw", tiny_dir)
    assert f"decompresses to more than {size} bytes" in caplog.text


def test_a_local_file_larger_than_the_cap_is_refused(tiny_sizes, tiny_dir, tmp_path):
    local = tmp_path / "local"
    shutil.copytree(tiny_dir, local)
    (local / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(1 << 20))
    with pytest.raises(PipelineError, match="larger than any copy of t10k-labels"):
        download(params(str(local), dataset="mnist", verify=False), tmp_path / "raw")


def test_a_full_disk_is_not_blamed_on_the_mirrors(tiny_dataset, tiny_dir, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(PipelineError, match="raw: No space left on device; the disk is full"):
        download(params(str(tiny_dir), str(tiny_dir)), tmp_path / "raw")
