"""IDX parsing: shapes, magic numbers, truncation, and mismatched files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from mnist_pipeline import idx
from mnist_pipeline.idx import IdxError, read_idx, read_images, read_labels
from stages.preprocess import load_split
from tests.helpers import write_idx


def test_round_trip_plain_and_gzip(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        write_idx(tmp_path / name, images)
        np.testing.assert_array_equal(read_images(tmp_path / name), images)


def test_header_is_the_published_format(tmp_path):
    write_idx(tmp_path / "images", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "labels", np.zeros(2, np.uint8))
    assert struct.unpack(">IIII", (tmp_path / "images").read_bytes()[:16]) == (2051, 2, 28, 28)
    assert struct.unpack(">II", (tmp_path / "labels").read_bytes()[:8]) == (2049, 2)


def test_gzip_output_is_reproducible(tmp_path):
    array = np.ones((4, 28, 28), np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(IdxError, match="bad magic number"):
        read_idx(path)


def test_truncated_payload(tmp_path):
    path = tmp_path / "images"
    write_idx(path, np.zeros((5, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IdxError, match="truncated or corrupt"):
        read_images(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "images.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxError, match="cannot read"):
        read_images(path)


def test_labels_where_images_expected(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(7, np.uint8))
    with pytest.raises(IdxError, match=r"expected images of shape \(count, 28, 28\)"):
        read_images(tmp_path / "labels")
    with pytest.raises(IdxError, match="expected a 1-d labels file"):
        write_idx(tmp_path / "images", np.zeros((2, 28, 28), np.uint8))
        read_labels(tmp_path / "images")


def test_wrong_image_size(tmp_path):
    write_idx(tmp_path / "images", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(IdxError, match=r"got \(2, 32, 32\)"):
        read_images(tmp_path / "images")


def test_label_out_of_range(tmp_path):
    write_idx(tmp_path / "labels", np.array([0, 3, 12], np.uint8))
    with pytest.raises(IdxError, match="label 12 out of range"):
        read_labels(tmp_path / "labels")


def test_split_with_mismatched_counts(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(IdxError, match="4 images but .* 5 labels"):
        load_split(tmp_path, "train")


def test_split_with_no_images(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(IdxError, match="holds no images"):
        load_split(tmp_path, "t10k")


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(IdxError, match="cannot read"):
        read_images(path)


def test_a_header_whose_shape_overflows_is_a_clear_error(tmp_path):
    # 2**22 * 2**22 * 2**20 = 2**64: zero in 64-bit arithmetic, so it looked like an empty file.
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">HBBIII", 0, 8, 3, 2**22, 2**22, 2**20))
    with pytest.raises(IdxError, match="impossible shape"):
        read_idx(path)
    with pytest.raises(IdxError, match="declares shape .* more than the 1000 bytes"):
        read_idx(path, max_size=1000)


def test_preprocess_checks_the_header_against_the_data_set_size(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10_001, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10_001, np.uint8))
    with pytest.raises(IdxError, match="more than the 7840016 bytes of this file"):
        load_split(tmp_path, "t10k")


def test_a_read_stops_one_byte_past_the_declared_size(tmp_path, monkeypatch):
    # A valid header for 1,000 images (0.8 MB), then 8 MiB more: a small gzip bomb. The
    # read stops one byte past the declared images, so memory stays at the file's declared
    # size whatever follows (peak RSS: benchmarks/memory_bench.py).
    images = np.zeros((1000, 28, 28), np.uint8)
    write_idx(tmp_path / "valid.gz", images)
    with gzip.open(tmp_path / "bomb.gz", "wb", compresslevel=1) as bomb:
        bomb.write(gzip.decompress((tmp_path / "valid.gz").read_bytes()))
        bomb.write(bytes(8 << 20))
    handed_out = []
    opened = idx._open

    class Counted:
        """The stream read_idx opens, counting the bytes it hands out."""

        def __init__(self, path):
            self.stream = opened(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

        def read(self, size=-1):
            data = self.stream.read(size)
            handed_out.append(len(data))
            return data

        def readinto(self, buffer):
            n = self.stream.readinto(buffer)
            handed_out.append(n)
            return n

    monkeypatch.setattr(idx, "_open", Counted)
    np.testing.assert_array_equal(read_images(tmp_path / "valid.gz"), images)
    declared = 16 + images.size
    assert sum(handed_out) == declared  # the extra byte asked for is not there
    handed_out.clear()
    with pytest.raises(IdxError, match=r"\(784016 bytes\) but the file has more bytes"):
        read_images(tmp_path / "bomb.gz")
    assert sum(handed_out) == declared + 1
