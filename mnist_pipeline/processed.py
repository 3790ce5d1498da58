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
PIXELS = 28 * 28


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
    # mnist_pipeline.datasets.Preparation as plain values: importing datasets here would
    # make every stage that reads these folders depend on the mirrors and checksums.
    preparation: dict

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


def load_processed(path: Path | str, uses: Collection[str] = ("train", "test")) -> ProcessedData:
    """The folder's arrays, memory-mapped; a missing or damaged file is a PipelineError.

    Shapes and labels are checked for both splits; the features of the splits the caller
    `uses` are checked for NaN and infinity. That reads them whole: 0.08-0.1 s for a
    full-size folder, and 180 MiB of peak RSS for training images a stage never reads.
    """
    path = Path(path)
    arrays = {name: _load(path / f"{name}.npy") for name in ARRAYS}
    try:
        meta = json.loads((path / "meta.json").read_text())
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
        _check(path, split, data, finite=split in uses)
    return data


def _check(path: Path, split: str, data: ProcessedData, finite: bool) -> None:
    """Refuse arrays that would give wrong numbers or a crash later: mismatched shapes,
    labels that name no class, non-finite features."""
    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    problem = None
    if x.dtype != np.float32 or x.ndim < 2 or np.prod(x.shape[1:]) != PIXELS:
        problem = f"{split}_x is {x.dtype} {x.shape}, not float32 images of 28x28"
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
