"""The format of data/processed/: one reader and one writer shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.arrays import load_arrays, save_arrays

_NAMES = ("train_x", "train_y", "test_x", "test_y", "classes")


@dataclass(frozen=True)
class ProcessedData:
    """Features and int64 labels for both splits, and the data set's class names."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]


def save_processed(path: Path | str, data: ProcessedData) -> None:
    save_arrays(
        path,
        train_x=data.train_x,
        train_y=data.train_y,
        test_x=data.test_x,
        test_y=data.test_y,
        classes=np.array(data.classes, dtype=str),
    )


def load_processed(path: Path | str) -> ProcessedData:
    arrays = load_arrays(path, _NAMES)
    return ProcessedData(
        train_x=arrays["train_x"],
        train_y=arrays["train_y"],
        test_x=arrays["test_x"],
        test_y=arrays["test_y"],
        classes=tuple(str(c) for c in arrays["classes"]),
    )
