"""The format of data/processed/: one folder per model, one standard .npy file per array.

A folder holds train_x, train_y, test_x, test_y (int64 labels), each as NAME.npy, and
meta.json: the data set's name, its class names, the scaling of the features
(x = (pixel / 255 - mean) / std), and how a user's picture is prepared to look like the
images. np.load maps each array file copy-on-write (mmap_mode="c"), so a stage that reads
only the test split touches only those pages, and nothing is unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.runtime import PipelineError, atomic_path, write_json

ARRAYS = ("train_x", "train_y", "test_x", "test_y")
# The shape of one image in each folder: channels, height, width for torch's conv2d in
# data/processed/cnn, one row of pixels for k-means in data/processed/kmeans.
CNN_IMAGE = (1, 28, 28)
FLAT_IMAGE = (28 * 28,)
MAX_CLASSES = 100  # the data sets have 10
MAX_NAME = 100  # characters in a data set's or a class's name


@dataclass(frozen=True)
class Preparation:
    """How a user's picture is made to look like a data set's images (mnist_pipeline.digits).

    The ink's bounding box is fitted into `box` x `box` pixels, keeping its aspect ratio,
    then placed in the 28x28 field with its centre of mass (`center="mass"`) or the centre
    of its bounding box (`center="box"`) on the field's centre. `subject` is what the
    pictures show ("digit"), for the demo page's wording. preprocess records it in
    meta.json, and the models carry it in their meta.
    """

    subject: str
    box: int
    center: str

    def __post_init__(self) -> None:
        if self.center not in ("mass", "box") or not 1 <= self.box <= 28:
            raise PipelineError(f"unknown preparation {self}: re-run preprocess and train_cnn")


# Each data set's preparation, by params data.dataset (mnist_pipeline.datasets.DATASETS).
PREPARATIONS = {
    # LeCun et al.: size-normalized to fit a 20x20 box, centred by centre of mass.
    "mnist": Preparation(subject="digit", box=20, center="mass"),
    # Xiao et al. 2017: trimmed, longest edge resized to 28, centred on a 28x28 canvas.
    # The odd pixel of a margin goes left and top, as center="box" places it.
    "fashion-mnist": Preparation(subject="garment", box=28, center="box"),
}


def preparation_of(meta: dict) -> Preparation:
    """The preparation a model's meta records; MNIST's for a model trained before models
    recorded it (the preparation of every picture then)."""
    if "preparation" not in meta:
        return PREPARATIONS["mnist"]
    try:
        return Preparation(**meta["preparation"])
    except TypeError:  # not a mapping, or other fields than Preparation's
        raise PipelineError(
            f"unknown preparation {meta['preparation']!r}: re-run preprocess and train_cnn"
        ) from None


@dataclass(frozen=True)
class ProcessedData:
    """Features and int64 labels for both splits, and what the features are.

    The features of an image with pixels 0-255 are (pixel / 255 - mean) / std.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    dataset: str  # params data.dataset
    mean: float
    std: float
    preparation: dict  # Preparation's fields, as meta.json holds them

    def meta(self) -> dict:
        """What a model trained on these arrays must know about its input, as plain values."""
        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "mean": self.mean,
            "std": self.std,
            "preparation": self.preparation,
        }


def normalize(unit_images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std in float32, as torchvision's Normalize does, on a new array."""
    scaled = unit_images - np.float32(mean)
    scaled /= np.float32(std)
    return scaled


def save_processed(path: Path | str, data: ProcessedData) -> None:
    """Write the folder whole or not at all (it replaces an earlier one in one step)."""
    with atomic_path(path, directory=True) as tmp:
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(data, name), allow_pickle=False)
        write_json(tmp / "meta.json", data.meta())


def load_processed(
    path: Path | str, image: tuple[int, ...], uses: Collection[str] = ("train", "test")
) -> ProcessedData:
    """The folder's arrays, memory-mapped; a missing or damaged file is a PipelineError.

    `image` is the shape of one image the caller computes with (CNN_IMAGE or FLAT_IMAGE).
    Shapes, meta.json and labels are checked for both splits; the features of the splits the
    caller `uses` are checked for NaN and infinity. That reads them whole: 0.08-0.1 s for a
    full-size folder, and 180 MiB of peak RSS for training images a stage never reads.
    """
    path = Path(path)
    arrays = {name: _load(path / f"{name}.npy") for name in ARRAYS}
    try:
        meta = json.loads((path / "meta.json").read_text())
        problem = meta_problem(meta)
        if problem or "preparation" not in meta:  # models from before may lack it; a folder not
            raise ValueError(problem or "it records no preparation")
        data = ProcessedData(
            **arrays,
            classes=tuple(meta["classes"]),
            dataset=meta["dataset"],
            mean=float(meta["mean"]),
            std=float(meta["std"]),
            preparation=dict(meta["preparation"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{path / 'meta.json'}: cannot read ({exc}); re-run preprocess"
        ) from None
    for split in ("train", "test"):
        _check(path, split, data, image, finite=split in uses)
    return data


def meta_problem(meta: object, n_classes: int | None = None) -> str | None:
    """What makes `meta` (ProcessedData.meta(), as meta.json or a model holds it) unusable,
    if anything: a later stage or the predict command would crash on it, print a terminal
    escape from it, or compute with a scaling preprocess never makes."""
    keys = {"dataset", "classes", "mean", "std"}  # and "preparation", since models record it
    if not isinstance(meta, dict) or set(meta) - {"preparation"} != keys:
        found = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        return f"meta holds {found}, not the keys {sorted(keys | {'preparation'})}"
    classes, dataset = meta["classes"], meta["dataset"]
    if not _is_name(dataset):
        return f"the data set's name {dataset!r} is not a short line of text"
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        return f"classes are {type(classes).__name__}, not a list of 1-{MAX_CLASSES} names"
    if n_classes is not None and len(classes) != n_classes:
        return f"{len(classes)} class names for a model of {n_classes} classes"
    bad = next((c for c in classes if not _is_name(c)), None)
    if bad is not None:
        return f"class name {bad!r} is not a short line of text"
    for key, low, high in (("mean", 0.0, 1.0), ("std", 0.001, 1.0)):  # PreprocessParams'
        value = meta[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{key} is {type(value).__name__} {value!r}, not a number"
        if not low <= value <= high:  # NaN fails this too
            return f"{key} {value!r} is outside [{low}, {high}]"
    if "preparation" not in meta:  # a model from before models recorded it: MNIST's
        return None
    rule = meta["preparation"]
    fields = {"subject": str, "box": int, "center": str}
    if not isinstance(rule, dict) or set(rule) != set(fields):
        return f"preparation is {rule!r}, not a mapping of {', '.join(fields)}"
    if not all(type(rule[k]) is kind for k, kind in fields.items()) or not _is_name(
        rule["subject"]
    ):
        return f"preparation {rule!r} holds values of the wrong kind"
    return None


def _is_name(value: object) -> bool:
    """Printable text (no terminal escapes, no line breaks) of 1 to MAX_NAME characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and value.isprintable()


def _check(
    path: Path, split: str, data: ProcessedData, image: tuple[int, ...], finite: bool
) -> None:
    """Refuse arrays that would give wrong numbers or a crash later: mismatched shapes,
    labels that name no class, non-finite features."""
    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    problem = None
    if x.dtype != np.float32 or x.shape[1:] != image:
        problem = f"{split}_x is {x.dtype} {x.shape}, not float32 images of shape {image}"
    elif y.dtype != np.int64 or y.shape != (len(x),):
        problem = f"{split}_y is {y.dtype} {y.shape}, not {len(x)} int64 labels"
    elif len(y) and (y.min() < 0 or y.max() >= len(data.classes)):
        bad = y.max() if y.max() >= len(data.classes) else y.min()
        problem = f"{split}_y holds label {bad}, outside 0-{len(data.classes) - 1}"
    # The float64 sum of float32 values cannot overflow, so it is finite exactly when every
    # value is, and it needs no temporary array (isfinite(x).all() makes one of N bytes).
    elif finite and not np.isfinite(x.sum(dtype=np.float64)):
        problem = f"{split}_x holds NaN or infinite values"
    if problem:
        raise PipelineError(f"{path}: {problem}; the folder is damaged: re-run preprocess")


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise PipelineError(f"{path}: cannot read ({exc}); re-run preprocess") from None
