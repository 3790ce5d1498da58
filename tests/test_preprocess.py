"""Preprocessing matches the notebooks' transforms; the processed format is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms

from stages.arrays import load_arrays, save_arrays
from stages.config import PreprocessParams
from stages.idx import read_images
from stages.preprocess import preprocess
from stages.processed import load_processed, save_processed
from stages.runtime import PipelineError

PARAMS = PreprocessParams(mean=0.1307, std=0.3081)


def test_cnn_input_equals_torchvision_totensor_normalize(tiny_dir):
    cnn, _ = preprocess(tiny_dir, PARAMS, tuple("0123456789"))
    raw = read_images(tiny_dir / "train-images-idx3-ubyte.gz")
    notebook = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    for i in (0, 17, 599):
        expected = notebook(raw[i].copy())  # ToTensor takes an HxW uint8 array like a PIL image
        torch.testing.assert_close(torch.from_numpy(cnn.train_x[i]), expected)
    assert cnn.train_x.shape == (600, 1, 28, 28) and cnn.train_x.dtype == np.float32


def test_kmeans_input_is_flat_and_in_unit_range(tiny_dir):
    _, km = preprocess(tiny_dir, PARAMS, tuple("0123456789"))
    raw = read_images(tiny_dir / "t10k-images-idx3-ubyte.gz")
    assert km.test_x.shape == (200, 784)
    np.testing.assert_allclose(km.test_x, raw.reshape(200, 784) / 255.0, rtol=1e-6)
    assert km.train_y.dtype == np.int64


def test_processed_round_trip_and_identical_bytes(tiny_dir, tmp_path):
    cnn, _ = preprocess(tiny_dir, PARAMS, ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"))
    save_processed(tmp_path / "one.npz", cnn)
    save_processed(tmp_path / "two.npz", cnn)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    loaded = load_processed(tmp_path / "one.npz")
    assert loaded.classes == cnn.classes
    np.testing.assert_array_equal(loaded.train_x, cnn.train_x)


def test_arrays_refuse_pickle_and_report_missing_members(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        save_arrays(tmp_path / "x.npz", bad=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "x.npz").exists()
    save_arrays(tmp_path / "y.npz", a=np.zeros(2))
    with pytest.raises(PipelineError, match="missing b"):
        load_arrays(tmp_path / "y.npz", ("a", "b"))
    (tmp_path / "z.npz").write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match="cannot read"):
        load_arrays(tmp_path / "z.npz", ("a",))


def test_loaded_arrays_are_private_copies_of_the_file(tmp_path):
    path = tmp_path / "a.npz"
    save_arrays(path, x=np.arange(12, dtype=np.float32).reshape(3, 4), empty=np.zeros((0, 5)))
    before = path.read_bytes()
    loaded = load_arrays(path, ("x", "empty"))
    assert loaded["empty"].shape == (0, 5)
    np.testing.assert_array_equal(loaded["x"], np.arange(12).reshape(3, 4))
    loaded["x"][:] = -1  # writable, as torch.from_numpy wants, but the file does not change
    assert path.read_bytes() == before
    np.testing.assert_array_equal(load_arrays(path, ("x",))["x"][0], [0, 1, 2, 3])


def test_arrays_refuse_compressed_and_truncated_files(tmp_path):
    np.savez_compressed(tmp_path / "packed.npz", a=np.zeros(100))
    with pytest.raises(PipelineError, match="compressed"):
        load_arrays(tmp_path / "packed.npz", ("a",))
    save_arrays(tmp_path / "whole.npz", a=np.zeros(1000))
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match="cannot read"):
        load_arrays(tmp_path / "cut.npz", ("a",))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.float64(2.5),  # 0-d
        np.arange(5, dtype=">i4"),  # not the native byte order
        np.array(["T-shirt/top", "Bag"]),
        np.zeros((0, 784), dtype=np.float32),
    ],
    ids=["float32", "fortran", "0-d", "big-endian", "str", "empty"],
)
def test_arrays_round_trip_aligned(tmp_path, array):
    save_arrays(tmp_path / "a.npz", first=np.arange(3, dtype=np.uint8), x=array)
    loaded = load_arrays(tmp_path / "a.npz", ("x",))["x"]
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)
    if loaded.size:
        assert loaded.ctypes.data % 64 == 0  # what numpy and BLAS want for mapped data
    np.savez(tmp_path / "plain.npz", x=array)  # numpy's own uncompressed files load too
    np.testing.assert_array_equal(load_arrays(tmp_path / "plain.npz", ("x",))["x"], array)
