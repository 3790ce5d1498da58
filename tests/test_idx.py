"""IDX parsing: shapes, magic numbers, truncation, and mismatched files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from mnist_pipeline.idx import IdxError, read_idx, read_images, read_labels, write_idx
from stages.preprocess import load_split


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
