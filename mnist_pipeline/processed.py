"""The format of data/processed/: one folder per model, one standard .npy file per array.

A folder holds train_x, train_y, test_x, test_y (int64 labels) and classes (the data set's
class names), each as NAME.npy. np.load maps each file copy-on-write (mmap_mode="c"), so a
stage that reads only the test split touches only those pages, and nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.runtime import PipelineError, atomic_path


@dataclass(frozen=True)
class ProcessedData:
    """Features and int64 labels for both splits, and the data set's class names."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]


def save_processed(path: Path | str, data: ProcessedData) -> None:
    """Write the folder whole or not at all (it replaces an earlier one in one step)."""
    arrays = {
        "train_x": data.train_x,
        "train_y": data.train_y,
        "test_x": data.test_x,
        "test_y": data.test_y,
        "classes": np.array(data.classes, dtype=str),
    }
    with atomic_path(path, directory=True) as tmp:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)


def load_processed(path: Path | str) -> ProcessedData:
    """The folder's arrays, memory-mapped; a missing or damaged file is a PipelineError."""
    path = Path(path)
    arrays = {
        name: _load(path / f"{name}.npy")
        for name in ("train_x", "train_y", "test_x", "test_y", "classes")
    }
    classes = tuple(str(c) for c in arrays.pop("classes"))
    return ProcessedData(**arrays, classes=classes)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise PipelineError(f"{path}: cannot read ({exc}); re-run preprocess") from None
