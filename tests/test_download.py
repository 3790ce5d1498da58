"""The download stage against real mirrors: an HTTP server on 127.0.0.1 and local folders."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import logging
import shutil
import threading

import pytest

from mnist_pipeline.config import DataParams
from mnist_pipeline.datasets import DATASETS, FILES, Dataset
from mnist_pipeline.runtime import PipelineError
from stages.download import download, mirror_list
from tests.conftest import serve

DEAD = "http://127.0.0.1:9/"  # the discard port: connection refused


@pytest.fixture
def tiny_dataset(tiny_dir, monkeypatch) -> str:
    """Register the tiny files as a data set with their own checksums; return its name."""
    md5 = {
        n: hashlib.md5(gzip.decompress((tiny_dir / f"{n}.gz").read_bytes())).hexdigest()
        for n in FILES
    }
    monkeypatch.setitem(DATASETS, "tiny", Dataset("tiny", tuple("0123456789"), md5, ()))
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
    assert len(failures) == len(FILES)
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


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes and sends 10: a connection dropped mid-file."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(8))

    def log_message(self, *args):
        pass


def test_dropped_connection_is_reported_and_skipped(
    tiny_dataset, http_mirror, tiny_dir, tmp_path, caplog
):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        with caplog.at_level(logging.WARNING):
            download(params(url, http_mirror), tmp_path / "raw")
    finally:
        server.shutdown()
        server.server_close()
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
