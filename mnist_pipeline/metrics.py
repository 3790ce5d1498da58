"""Classification metrics shared by the CNN and k-means evaluations."""

from __future__ import annotations

import numpy as np


def accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(y == predicted))


def per_class_accuracy(
    y: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]
) -> dict[str, float]:
    """Accuracy within each true class, keyed by class name (classes absent from y skipped)."""
    return {
        name: accuracy(y[y == k], predicted[y == k])
        for k, name in enumerate(classes)
        if np.any(y == k)
    }


def confusion_rows(y: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> list[dict]:
    """One row per sample, with class names, for DVC's confusion-matrix template."""
    return [
        {"actual": classes[a], "predicted": classes[p]} for a, p in zip(y, predicted, strict=True)
    ]
