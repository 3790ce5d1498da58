"""Preprocessing matches the notebooks' transforms; the processed format is reproducible."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mnist_pipeline.config import PreprocessParams
from mnist_pipeline.datasets import DATASETS, get_dataset
from mnist_pipeline.idx import read_images
from mnist_pipeline.processed import CNN_IMAGE, PREPARATIONS, load_processed, save_processed
from mnist_pipeline.runtime import PipelineError
from stages.preprocess import preprocess
from tests.helpers import changed_stages

PARAMS = PreprocessParams(mean=0.1307, std=0.3081)
MNIST = get_dataset("mnist")


@pytest.mark.slow  # importing torchvision alone takes 4.4 s, a third of the unit suite's budget
def test_cnn_input_equals_torchvision_totensor_normalize(tiny_dir):
    from torchvision import transforms

    cnn, _ = preprocess(tiny_dir, PARAMS, MNIST)
    raw = read_images(tiny_dir / "train-images-idx3-ubyte.gz")
    notebook = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    for i in (0, 17, 599):
        expected = notebook(raw[i].copy())  # ToTensor takes an HxW uint8 array like a PIL image
        torch.testing.assert_close(torch.from_numpy(cnn.train_x[i]), expected)
    assert cnn.train_x.shape == (600, 1, 28, 28) and cnn.train_x.dtype == np.float32


def test_kmeans_input_is_flat_and_in_unit_range(tiny_dir):
    _, km = preprocess(tiny_dir, PARAMS, MNIST)
    raw = read_images(tiny_dir / "t10k-images-idx3-ubyte.gz")
    assert km.test_x.shape == (200, 784)
    np.testing.assert_allclose(km.test_x, raw.reshape(200, 784) / 255.0, rtol=1e-6)
    assert km.train_y.dtype == np.int64


def test_processed_round_trip_and_identical_bytes(tiny_dir, tmp_path):
    fashion = get_dataset("fashion-mnist")
    cnn, km = preprocess(tiny_dir, PARAMS, fashion)
    save_processed(tmp_path / "one", cnn)
    save_processed(tmp_path / "two", cnn)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == ["meta.json", "test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    loaded = load_processed(tmp_path / "one", CNN_IMAGE)
    assert loaded.classes == fashion.classes and loaded.dataset == "fashion-mnist"
    assert (loaded.mean, loaded.std) == (0.1307, 0.3081)
    # The models trained on it carry how to prepare a user's garment: not like a digit.
    assert loaded.preparation == {"subject": "garment", "box": 28, "center": "box"}
    assert loaded.preparation == dataclasses.asdict(PREPARATIONS["fashion-mnist"])
    assert km.preparation == loaded.preparation
    # The k-means features are pixel / 255: mean 0, std 1 in the same formula.
    assert (km.mean, km.std) == (0.0, 1.0)
    np.testing.assert_array_equal(loaded.train_x, cnn.train_x)
    np.testing.assert_array_equal(loaded.test_y, cnn.test_y)
    assert isinstance(loaded.test_x, np.memmap)  # mapped: a stage pays for the pages it reads


def test_loaded_arrays_are_private_copies_of_the_files(tiny_dir, tmp_path):
    cnn, _ = preprocess(tiny_dir, PARAMS, MNIST)
    save_processed(tmp_path / "cnn", cnn)
    before = (tmp_path / "cnn/train_x.npy").read_bytes()
    loaded = load_processed(tmp_path / "cnn", CNN_IMAGE)
    loaded.train_x[:] = -1  # writable, as torch.from_numpy wants, but the file does not change
    assert (tmp_path / "cnn/train_x.npy").read_bytes() == before


def test_missing_or_damaged_processed_files_are_clear_errors(tiny_dir, tmp_path):
    cnn, _ = preprocess(tiny_dir, PARAMS, MNIST)
    save_processed(tmp_path / "cnn", cnn)
    (tmp_path / "cnn/test_y.npy").unlink()
    with pytest.raises(PipelineError, match="test_y.npy: cannot read .*re-run preprocess"):
        load_processed(tmp_path / "cnn", CNN_IMAGE)
    (tmp_path / "cnn/test_y.npy").write_bytes(b"not an array")
    with pytest.raises(PipelineError, match="test_y.npy: cannot read"):
        load_processed(tmp_path / "cnn", CNN_IMAGE)
    np.save(tmp_path / "cnn/test_y.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PipelineError, match="test_y.npy: cannot read"):  # never unpickled
        load_processed(tmp_path / "cnn", CNN_IMAGE)
    # A folder from before meta.json recorded the preparation is re-made, not guessed at.
    save_processed(tmp_path / "cnn", cnn)
    meta = json.loads((tmp_path / "cnn/meta.json").read_text())
    del meta["preparation"]
    (tmp_path / "cnn/meta.json").write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match="meta.json: cannot read .*re-run preprocess"):
        load_processed(tmp_path / "cnn", CNN_IMAGE)


def test_a_failed_save_keeps_the_earlier_folder(tiny_dir, tmp_path):
    cnn, _ = preprocess(tiny_dir, PARAMS, MNIST)
    save_processed(tmp_path / "cnn", cnn)
    bad = dataclasses.replace(cnn, test_x=np.array([{}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        save_processed(tmp_path / "cnn", bad)
    np.testing.assert_array_equal(load_processed(tmp_path / "cnn", CNN_IMAGE).test_x, cnn.test_x)
    assert [p.name for p in tmp_path.iterdir()] == ["cnn"]  # no temporary folder left


def test_every_data_set_has_a_preparation():
    assert set(PREPARATIONS) == set(DATASETS)
    assert PREPARATIONS["mnist"] != PREPARATIONS["fashion-mnist"]


@pytest.mark.slow
def test_a_mirror_edit_makes_only_the_stages_that_read_the_mirrors_stale(repo_copy):
    # The preparation lives in processed.py, not beside the mirrors: demo_page (and every
    # stage after preprocess) does not depend on datasets.py.
    assert changed_stages(repo_copy) == {}
    datasets = repo_copy / "mnist_pipeline/datasets.py"
    mirror = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    assert mirror in datasets.read_text()
    datasets.write_text(datasets.read_text().replace(mirror, "https://mirror.example/mnist/"))
    assert set(changed_stages(repo_copy)) == {"download", "preprocess"}
