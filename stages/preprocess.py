"""Stage preprocess: parse the raw IDX files into the arrays the models train on.

Reads: the download directory (data/raw/); params data.dataset (its name and class names),
preprocess.mean, preprocess.std.
Writes: --cnn (data/processed/cnn/): float32 images of shape (N, 1, 28, 28),
scaled to [0, 1] then normalized with (x - mean) / std, as torchvision's ToTensor and
Normalize do; --kmeans (data/processed/kmeans/): float32 rows of 784 pixels in [0, 1].
Both folders hold int64 labels, one .npy file per array, and meta.json: the data set's
name, class names, the features' mean and std (0 and 1 for k-means) and its preparation
of a user's picture, so that the models trained on them can carry these along
(mnist_pipeline.processed).
--first-images (plots/data/first_images.png): the first training images with their labels.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from mnist_pipeline.config import PreprocessParams, load_params
from mnist_pipeline.datasets import SIZES, Dataset, get_dataset
from mnist_pipeline.figures import image_grid
from mnist_pipeline.idx import IdxError, read_images, read_labels
from mnist_pipeline.processed import PREPARATIONS, ProcessedData, normalize, save_processed
from mnist_pipeline.runtime import all_or_none, path_args, run_main

log = logging.getLogger("stages.preprocess")

N_FIRST_IMAGES = 18


def load_split(raw_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, N x 28 x 28) and labels of one split ("train" or "t10k")."""
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images_path, labels_path = raw_dir / f"{images_name}.gz", raw_dir / f"{labels_name}.gz"
    images = read_images(images_path, SIZES[images_name])
    labels = read_labels(labels_path, SIZES[labels_name])
    if len(images) == 0:
        raise IdxError(f"{images_path} holds no images; the copy is damaged or not MNIST-like")
    if len(images) != len(labels):
        raise IdxError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the two files come from different copies"
        )
    return images, labels


def preprocess(
    raw_dir: Path, params: PreprocessParams, dataset: Dataset
) -> tuple[ProcessedData, ProcessedData]:
    """Return (cnn, kmeans) versions of the data set found in raw_dir."""
    train_images, train_y = load_split(raw_dir, "train")
    test_images, test_y = load_split(raw_dir, "t10k")

    # Each scaling is computed once and in place: these are 188 MB arrays.
    def unit(images: np.ndarray) -> np.ndarray:
        scaled = images.astype(np.float32)
        scaled /= np.float32(255)
        return scaled

    def normalized(unit_images: np.ndarray) -> np.ndarray:
        return normalize(unit_images, params.mean, params.std)[:, None, :, :]

    train_unit, test_unit = unit(train_images), unit(test_images)
    common = dict(
        train_y=train_y.astype(np.int64),
        test_y=test_y.astype(np.int64),
        classes=dataset.classes,
        dataset=dataset.name,
        preparation=dataclasses.asdict(PREPARATIONS[dataset.name]),
    )
    cnn = ProcessedData(
        train_x=normalized(train_unit),
        test_x=normalized(test_unit),
        mean=params.mean,
        std=params.std,
        **common,
    )
    kmeans = ProcessedData(
        train_x=train_unit.reshape(len(train_unit), -1),
        test_x=test_unit.reshape(len(test_unit), -1),
        mean=0.0,
        std=1.0,
        **common,
    )
    return cnn, kmeans


def draw_first_images(data: ProcessedData, path: Path) -> None:
    """The first training images with their labels, as the k-means notebook shows them."""
    n = min(N_FIRST_IMAGES, len(data.train_y))
    image_grid(
        data.train_x[:n],
        [data.classes[label] for label in data.train_y[:n]],
        path,
        title=f"The first {n} training images and their labels",
        ncols=6,
        scale=5,
        font_pt=11,
    )


def main() -> None:
    outputs = ("cnn", "kmeans", "first-images")
    args = path_args(__doc__, "raw", *outputs, outputs=outputs)
    params = load_params()
    log.info("params: %s", params.preprocess)
    cnn, kmeans = preprocess(args.raw, params.preprocess, get_dataset(params.data.dataset))
    folders = (args.cnn, args.kmeans)
    with all_or_none(*folders, args.first_images, directories=folders) as (cnn_dir, km_dir, png):
        save_processed(cnn_dir, cnn)
        save_processed(km_dir, kmeans)
        draw_first_images(kmeans, png)
    log.info("train %d images, test %d images", len(cnn.train_y), len(cnn.test_y))


if __name__ == "__main__":
    run_main(main)
