"""Tiny synthetic IDX data sets: ten classes a small CNN and k-means can tell apart."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from mnist_pipeline.datasets import FILES
from mnist_pipeline.idx import write_idx


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class is a bright 7x6 block at its own place on a 3x4 grid, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        r = 2 + row * 9 + int(rng.integers(0, 2))
        c = 1 + col * 6 + int(rng.integers(0, 2))
        images[i, r : r + 7, c : c + 6] = rng.integers(180, 256, size=(7, 6), dtype=np.uint8)
    return images


def write_tiny_dataset(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0):
    """Write the four NAME.gz files; return the md5 of each file's decompressed content."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_y = np.arange(n_train) % 10
    test_y = np.arange(n_test) % 10
    rng.shuffle(train_y)
    rng.shuffle(test_y)
    arrays = dict(
        zip(
            FILES,
            (make_images(train_y, rng), train_y, make_images(test_y, rng), test_y),
            strict=True,
        )
    )
    md5 = {}
    for name, array in arrays.items():
        path = directory / f"{name}.gz"
        write_idx(path, array)
        md5[name] = hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()
    return md5
