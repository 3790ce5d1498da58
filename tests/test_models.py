"""The CNN's shapes, training determinism and checkpoint; k-means labelling and model file."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.abc
import sys
import zipfile
from importlib.metadata import version

import numpy as np
import pytest
import torch

from mnist_pipeline.cnn import Net, device, evaluate, load_checkpoint, save_checkpoint
from mnist_pipeline.config import PreprocessParams
from mnist_pipeline.datasets import get_dataset
from mnist_pipeline.kmeans import (
    KmeansModel,
    fit,
    infer_cluster_labels,
    load_model,
    made_with,
    save_model,
)
from mnist_pipeline.runtime import PipelineError
from stages import train_cnn
from stages.kmeans_sweep import sweep
from stages.preprocess import preprocess
from stages.train_cnn import TrainResult, keep_freed_memory, train
from tests.helpers import TINY_CNN, TINY_KMEANS

CLASSES = tuple(str(d) for d in range(10))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return preprocess(tiny_dir, PreprocessParams(0.1307, 0.3081), get_dataset("mnist"))


@pytest.fixture(scope="module")
def trained(tiny) -> TrainResult:
    """The CNN trained once on the tiny data, for the tests that only read the result."""
    return train(tiny[0], TINY_CNN)


def test_net_shapes_match_the_notebook():
    net = Net()
    x = torch.zeros(3, 1, 28, 28)
    conv = torch.nn.functional.max_pool2d(
        net.conv2(torch.nn.functional.max_pool2d(net.conv1(x), 2)), 2
    )
    assert conv.shape == (3, 20, 4, 4)  # flattened: the 320 inputs of fc1
    assert net.fc1.in_features == 320 and net.fc2.out_features == 10
    out = net.eval()(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(3))  # log-probabilities
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == (250 + 10) + (5000 + 20) + (16000 + 50) + (500 + 10)


def test_training_learns_and_is_deterministic(tiny, trained):
    first, second = trained, train(tiny[0], TINY_CNN)
    assert first.test_log == second.test_log and first.train_log == second.train_log
    for a, b in zip(
        first.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert first.test_log[-1]["test_accuracy"] > 0.9
    assert first.train_log[-1]["loss"] < first.train_log[0]["loss"]
    # 600 images in batches of 64 -> 10 batches an epoch, logged at 0, 2, 4, 6, 8.
    assert [row["step"] for row in first.train_log] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_keep_freed_memory_sets_glibcs_thresholds_and_nothing_elsewhere(monkeypatch):
    # What it saves (page faults per training step) is a benchmark figure:
    # benchmarks/memory_bench.py. Here: what it asks of the C library, and that a C library
    # without mallopt (macOS, Windows, musl builds without it) is left alone.
    calls = []

    class Glibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(train_cnn.ctypes, "CDLL", lambda name: Glibc())
    keep_freed_memory()
    # M_MMAP_THRESHOLD (-3): blocks under 32 MiB from the heap; M_TRIM_THRESHOLD (-1): the
    # heap is trimmed only past 1 GiB free.
    assert sorted(calls) == [(-3, 32 << 20), (-1, 1 << 30)]
    monkeypatch.setattr(train_cnn.ctypes, "CDLL", lambda name: object())
    assert keep_freed_memory() is None


def test_checkpoint_round_trip_is_reproducible(tmp_path, tiny, trained):
    cnn_data, model = tiny[0], trained.model
    save_checkpoint(tmp_path / "a.pt", model, TINY_CNN, cnn_data.meta())
    save_checkpoint(tmp_path / "b.pt", model, TINY_CNN, cnn_data.meta())
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded, params, meta, _ = load_checkpoint(tmp_path / "a.pt")
    assert params["lr"] == TINY_CNN.lr and params["epochs"] == TINY_CNN.epochs
    # Self-describing: what a user needs to prepare an input and name the answer.
    assert meta == {
        "dataset": "mnist",
        "classes": [str(d) for d in range(10)],
        "mean": 0.1307,
        "std": 0.3081,
        "preparation": {"subject": "digit", "box": 20, "center": "mass"},
    }
    before = evaluate(model, cnn_data.test_x, cnn_data.test_y, 100)
    after = evaluate(loaded, cnn_data.test_x, cnn_data.test_y, 100)
    assert before[0] == after[0] and np.array_equal(before[1], after[1])


# The cheapest fixes first: DVC's cached copy, then re-running train_cnn alone.
FIX_CNN = (
    r"restore it with `dvc checkout --force .*` or make it again with "
    r"`dvc repro --force --single-item environment train_cnn`"
)


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "cnn.pt").write_bytes(b"garbage")
    with pytest.raises(PipelineError, match=FIX_CNN):
        load_checkpoint(tmp_path / "cnn.pt")
    # Other files given as a model: said in words, in full, not cut off mid-word.
    np.save(tmp_path / "array.npy", np.zeros(3))
    with zipfile.ZipFile(tmp_path / "archive.zip", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    for name, what in [
        ("array.npy", "not a PyTorch model file"),
        ("archive.zip", "a zip archive, but not a PyTorch model file"),
        (".", "a folder, not a model file"),
    ]:
        with pytest.raises(PipelineError, match=f": {what}.*" + FIX_CNN):
            load_checkpoint(tmp_path / name)
    for name, what in [
        ("array.npy", "not an .npz model"),
        ("archive.zip", "an .npz file, but not a model that kmeans_sweep saved"),
        (".", "a folder, not a model file"),
    ]:
        with pytest.raises(PipelineError, match=f": {what}.*kmeans_sweep made$"):
            load_model(tmp_path / name)
    # A text file given as a model: said in words, in full, not cut off mid-word.
    (tmp_path / "notes.txt").write_text("weights_only " * 100)
    with pytest.raises(PipelineError) as error:
        load_checkpoint(tmp_path / "notes.txt")
    assert str(error.value).startswith(
        f"{tmp_path / 'notes.txt'}: not a PyTorch model file (cut short, or another kind of file)"
    )
    assert str(error.value).endswith("otherwise give the path of a file that train_cnn made")
    torch.save({"weights": {}}, tmp_path / "other.pt")  # no state_dict key
    with pytest.raises(PipelineError, match=FIX_CNN):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"state_dict": {"fc1.weight": torch.zeros(1)}, "params": {}}, tmp_path / "bad.pt")
    with pytest.raises(PipelineError, match=FIX_CNN):
        load_checkpoint(tmp_path / "bad.pt")


def test_cluster_labels_are_the_majority_label():
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y = np.array([3, 3, 3, 7, 7, 1, 2, 2, 1])
    # Cluster 2 ties labels 1 and 2: the smaller wins. Cluster 3 is empty: it gets the most
    # common label overall (3).
    assert infer_cluster_labels(clusters, y, n_clusters=4).tolist() == [3, 7, 1, 3]


def test_nearest_centroids_are_ordered_by_squared_distance_ties_to_the_lower_index():
    # Exact in binary: distances 1, 1, 0.25 and 2 from the blank image; 0 and 1 tie.
    centroids = np.zeros((4, 784), np.float32)
    centroids[0, 0] = centroids[1, 1] = 1
    centroids[2, 0] = 0.5
    centroids[3, :2] = 1
    model = KmeansModel(centroids, np.array([5, 6, 7, 8]), CLASSES)
    blank = np.zeros((1, 784), np.float32)
    assert model.nearest_centroids(blank, 4).tolist() == [[2, 0, 1, 3]]
    assert model.nearest_centroids(blank).tolist() == [[2]]
    assert model.predicted_classes(blank).tolist() == [7]  # the nearest centroid's label
    # Random pictures: the order of the squared distances, computed the direct way.
    rng = np.random.default_rng(0)
    model = KmeansModel(rng.random((16, 784), np.float32), np.arange(16) % 10, CLASSES)
    x = rng.random((50, 784), np.float32)
    direct = ((x[:, None, :].astype(np.float64) - model.centroids[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(model.nearest_centroids(x, 3), direct.argsort(axis=1)[:, :3])


def test_kmeans_model_predicts_like_sklearn_and_loads_without_pickle(tmp_path, tiny):
    _, km_data = tiny
    estimator = fit(km_data.train_x, 16, TINY_KMEANS)
    # Every result-changing argument comes from params, and the fit saw every image.
    params = estimator.get_params()
    assert {k: params[k] for k in ("n_clusters", "batch_size", "n_init", "max_iter")} == {
        "n_clusters": 16,
        "batch_size": TINY_KMEANS.batch_size,
        "n_init": TINY_KMEANS.n_init,
        "max_iter": TINY_KMEANS.max_iter,
    }
    assert params["random_state"] == TINY_KMEANS.random_state
    assert estimator.cluster_centers_.shape == (16, 784)
    assert estimator.labels_.shape == km_data.train_y.shape
    labels = infer_cluster_labels(estimator.labels_, km_data.train_y, 16)
    centroids = estimator.cluster_centers_.astype("float32")
    model = KmeansModel(centroids, labels, km_data.classes, made_with())
    clusters = model.nearest_centroids(km_data.test_x)[:, 0]
    np.testing.assert_array_equal(clusters, estimator.predict(km_data.test_x))
    save_model(tmp_path / "km.npz", model)
    with zipfile.ZipFile(tmp_path / "km.npz") as archive:
        members = ["centroids.npy", "classes.npy", "cluster_labels.npy", "made_with.npy"]
        assert sorted(archive.namelist()) == members
    with np.load(tmp_path / "km.npz", allow_pickle=False) as arrays:
        assert arrays["centroids"].shape == (16, 784)
    loaded = load_model(tmp_path / "km.npz")
    assert loaded.classes == km_data.classes
    # What fitted it, as found in this environment: a model from elsewhere says its own.
    assert loaded.made_with == model.made_with
    assert loaded.made_with["scikit-learn"] == version("scikit-learn")
    assert loaded.made_with["threads"] >= 1 and loaded.made_with["cpu"]
    predicted = loaded.predicted_classes(km_data.test_x)
    np.testing.assert_array_equal(predicted, model.predicted_classes(km_data.test_x))
    assert np.mean(predicted == km_data.test_y) > 0.9


def test_fit_refuses_more_clusters_than_images(tiny):
    _, km_data = tiny
    with pytest.raises(PipelineError, match="700 clusters need at least as many training images"):
        fit(km_data.train_x, 700, TINY_KMEANS)


class RefuseScikitLearn(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path=None, target=None) -> None:
        if name.partition(".")[0] == "sklearn":
            raise ImportError(f"{name} imported")


def test_plot_centroids_does_not_import_scikit_learn():
    # Importing scikit-learn costs about 1 s; drawing the centroids needs only the arrays.
    # The project's modules are imported afresh, with scikit-learn unloaded and refused,
    # then the modules of before are put back.
    fresh = ("stages", "mnist_pipeline", "sklearn")
    saved = {name: m for name, m in sys.modules.items() if name.partition(".")[0] in fresh}
    refuse = RefuseScikitLearn()
    for name in saved:
        del sys.modules[name]
    sys.meta_path.insert(0, refuse)
    try:
        importlib.import_module("stages.plot_centroids")
    finally:
        sys.meta_path.remove(refuse)
        for name in [name for name in sys.modules if name.partition(".")[0] in fresh]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_damaged_checkpoints_are_refused_at_load(tmp_path, tiny, trained):
    model = trained.model
    save_checkpoint(tmp_path / "cnn.pt", model, TINY_CNN, tiny[0].meta())
    good = (tmp_path / "cnn.pt").read_bytes()
    weights = model.state_dict()["fc1.weight"].numpy().tobytes()
    at = good.index(weights[:64]) + 100
    damaged = {
        "empty": b"",  # EOFError inside torch.load
        "flipped weight": good[:at] + bytes([good[at] ^ 0x10]) + good[at + 1 :],
        # A non-UTF-8 byte in a tensor name in the pickle: UnicodeDecodeError.
        "flipped name": good.replace(b"conv1.weight", b"conv1.w\xffight", 1),
    }
    for case, data in damaged.items():
        (tmp_path / "cnn.pt").write_bytes(data)
        with pytest.raises(PipelineError, match="cnn.pt: .*" + FIX_CNN) as error:
            load_checkpoint(tmp_path / "cnn.pt")
        assert "\n" not in str(error.value), case
    (tmp_path / "cnn.pt").write_bytes(damaged["flipped weight"])
    with pytest.raises(PipelineError, match="do not match the digest"):
        load_checkpoint(tmp_path / "cnn.pt")


def test_a_diverging_training_stops_with_an_error(tiny):
    cnn_data = tiny[0]
    poisoned = dataclasses.replace(cnn_data, train_x=cnn_data.train_x.copy())
    poisoned.train_x[7] = np.inf  # as a diverging step would make the weights
    with pytest.raises(PipelineError, match=r"training loss at epoch 1, batch \d+ is nan"):
        train(poisoned, TINY_CNN)


def test_batch_sizes_are_bounded_by_the_data(tiny):
    cnn_data, km_data = tiny
    # 601, not 10**9: CnnParams itself refuses a batch over MAX_CNN_BATCH (test_config).
    with pytest.raises(PipelineError, match="cnn.batch_size: 601 is not allowed.*at most 600"):
        train(cnn_data, dataclasses.replace(TINY_CNN, batch_size=601))
    with pytest.raises(PipelineError, match="cnn.test_batch_size: 201 .*at most 200"):
        train(cnn_data, dataclasses.replace(TINY_CNN, test_batch_size=201))
    with pytest.raises(PipelineError, match="kmeans.batch_size: 601 .*at most 600"):
        sweep(km_data, dataclasses.replace(TINY_KMEANS, batch_size=601))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cluster_labels": np.full(16, 12)}, "cluster label is outside 0-9"),
        ({"cluster_labels": np.full(16, -1)}, "cluster label is outside 0-9"),
        ({"centroids": np.full((16, 784), np.nan, np.float32)}, "NaN or infinite"),
        ({"centroids": np.zeros((16, 10), np.float32)}, "not \\(k, 784\\)"),
        ({"cluster_labels": np.zeros(3, np.int64)}, "not 16 integers"),
    ],
    ids=["label-12", "label-minus-1", "nan-centroids", "shape", "labels-count"],
)
def test_damaged_kmeans_models_are_refused_at_load(tmp_path, change, message):
    arrays = {
        "centroids": np.zeros((16, 784), np.float32),
        "cluster_labels": np.arange(16) % 10,
        "classes": np.array(list("0123456789")),
        **change,
    }
    np.savez(tmp_path / "km.npz", **arrays)
    with pytest.raises(
        PipelineError,
        match=f"km.npz: .*{message}.*dvc repro --force --single-item environment kmeans_sweep",
    ):
        load_model(tmp_path / "km.npz")


def test_the_device_is_chosen_by_compute_device(monkeypatch):
    assert device("cpu") == torch.device("cpu")
    # A machine without a usable accelerator (a CUDA build names cuda even without a GPU).
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device("auto") == torch.device("cpu")
    with pytest.raises(PipelineError, match="^compute.device: cuda is not available here"):
        device("cuda")
    with pytest.raises(PipelineError, match="set compute.device to auto or cpu$"):
        device("mps")
    # One with a GPU: auto takes it, and a named device that is there is given.
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device("auto") == torch.device("cuda")
    assert device("cuda") == torch.device("cuda")
