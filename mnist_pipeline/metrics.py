"""Classification metrics shared by the CNN and k-means evaluations."""

from __future__ import annotations

import numpy as np


def accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(y == predicted))


def class_label(index: int, classes: tuple[str, ...]) -> str:
    """A class name that sorts in the data set's order: "3 Dress" (MNIST's "3" stays "3").

    DVC's chart templates sort class axes alphabetically (Ankle boot, Bag, Coat, ...).
    """
    name = classes[index]
    return name if name == str(index) else f"{index} {name}"


def per_class_rows(y: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> list[dict]:
    """Accuracy within each true class, for a bar chart (classes absent from y skipped)."""
    return [
        {"class": class_label(k, classes), "accuracy": accuracy(y[y == k], predicted[y == k])}
        for k in range(len(classes))
        if np.any(y == k)
    ]


def confusion_rows(y: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> list[dict]:
    """One row per sample, with class labels, for DVC's confusion-matrix template."""
    labels = [class_label(k, classes) for k in range(len(classes))]
    return [
        {"actual": labels[a], "predicted": labels[p]} for a, p in zip(y, predicted, strict=True)
    ]
