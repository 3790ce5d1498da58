"""The data sets the pipeline knows: their files, checksums, public mirrors and class names.

How a user's picture is prepared to look like their images is in mnist_pipeline.processed
(Preparation): the stages that need only that do not depend on the mirrors here."""

from __future__ import annotations

from dataclasses import dataclass

from mnist_pipeline.config import ParamsError

# The four IDX files, in the order the pipeline reads them. Mirrors serve each as NAME.gz.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Each file's decompressed size in bytes, the same in both data sets (60,000 training and
# 10,000 test images of 28x28). A copy may be smaller (data.verify: false accepts any
# well-formed copy), never larger: downloads and decompression stop there.
SIZES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    # md5 of each file's *decompressed* content: mirrors re-compress, so .gz bytes differ.
    md5: dict[str, str]
    mirrors: tuple[str, ...]


DATASETS = {
    "mnist": Dataset(
        name="mnist",
        classes=tuple(str(d) for d in range(10)),
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        mirrors=(
            # Debian's dataset-fashion-mnist package: a local copy, tried first since it
            # answers at once where it is installed and is skipped where it is not.
            "/usr/share/datasets/fashion-mnist/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
    ),
}


def get_dataset(name: str) -> Dataset:
    """The data set named by params data.dataset; a ParamsError naming the key if unknown."""
    if name not in DATASETS:
        raise ParamsError(
            f"data.dataset: unknown data set {name!r}; choose one of {', '.join(sorted(DATASETS))}"
        )
    return DATASETS[name]
