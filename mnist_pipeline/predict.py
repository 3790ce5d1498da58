"""Predict the class of your own pictures with the pipeline's two models.

    mnist-predict IMAGE [IMAGE ...] [--cnn PATH] [--kmeans PATH]

(`mnist-predict` is installed in .venv/bin by scripts/setup.sh; it runs with the project's
environment whether or not that is activated.)

For each image (PNG, JPEG or anything else Pillow reads; any size; dark ink on light paper
or light on dark) it prints one line: the CNN's class and probability, its top three, and
the label of the nearest k-means centroid. Each picture is first prepared the way the
model's data set made its images (mnist_pipeline.digits, under the rule in the model's
meta). The models default to the paths that dvc.yaml's `artifacts:` gives them, so from
the project root no option is needed after `dvc repro`.

A file that is not an image, or a blank one, gets a one-line error and the others are still
read; the exit status is then 1. A missing model stops at once, naming the stage to run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_pipeline.cnn import load_checkpoint
from mnist_pipeline.datasets import preparation_of
from mnist_pipeline.digits import prepare
from mnist_pipeline.kmeans import load_model
from mnist_pipeline.processed import normalize
from mnist_pipeline.runtime import PipelineError

TOP = 3  # how many of the CNN's classes and of the nearest centroids to report


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # the CNN's, one per class
    nearest: np.ndarray  # indices of the TOP nearest k-means centroids, nearest first


class Models:
    """Both trained models, loaded from their files, with what they know about their input."""

    def __init__(self, cnn_path: Path, kmeans_path: Path) -> None:
        checkpoint = load_checkpoint(cnn_path)
        self.cnn, self.meta = checkpoint.model, checkpoint.meta
        self.cnn.eval()
        self.kmeans = load_model(kmeans_path)
        self.classes: tuple[str, ...] = tuple(self.meta["classes"])
        self.preparation = preparation_of(self.meta)

    def predict(self, images: np.ndarray) -> list[Prediction]:
        """Both models' answers for uint8 images of shape (N, 28, 28), prepared."""
        unit = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
        x = normalize(unit, self.meta["mean"], self.meta["std"]).reshape(-1, 1, 28, 28)
        with torch.no_grad():
            probabilities = self.cnn(torch.from_numpy(x)).exp().numpy()
        nearest = self.kmeans.nearest(unit, TOP)
        return [Prediction(p, n) for p, n in zip(probabilities, nearest, strict=True)]

    def describe(self, prediction: Prediction) -> str:
        """One line: the CNN's class, its top three, the nearest centroid's label."""
        order = np.argsort(-prediction.probabilities, kind="stable")[:TOP]
        top = ", ".join(f"{self.classes[i]} {prediction.probabilities[i]:.1%}" for i in order)
        centroid = int(prediction.nearest[0])
        label = self.kmeans.classes[self.kmeans.cluster_labels[centroid]]
        return (
            f"CNN {self.classes[order[0]]} ({prediction.probabilities[order[0]]:.1%}); "
            f"top {TOP}: {top}; k-means: {label} (centroid {centroid})"
        )


def read_image(path: Path) -> np.ndarray:
    """The picture as (H, W, 4) uint8 RGBA, turned upright as its EXIF data says."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGBA"))
    except FileNotFoundError:
        raise PipelineError("no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise PipelineError(f"cannot read it as an image ({reason})") from None


def model_paths(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, tuple[Path, str | None]]:
    """Artifact name -> (path, the stage that writes it), from dvc.yaml; {} without one."""
    if not dvc_yaml.is_file():
        return {}
    spec = yaml.safe_load(dvc_yaml.read_text())
    writers = {
        str(out if isinstance(out, str) else next(iter(out))): name
        for name, stage in spec.get("stages", {}).items()
        for out in stage.get("outs", [])
    }
    return {
        name: (Path(artifact["path"]), writers.get(artifact["path"]))
        for name, artifact in spec.get("artifacts", {}).items()
    }


def load_models(cnn: Path | None, kmeans: Path | None) -> Models:
    """The models at the given paths, or where dvc.yaml puts them; a clear error if missing."""
    known = model_paths()
    paths = {}
    for name, given in (("cnn", cnn), ("kmeans", kmeans)):
        if given is None and name not in known:
            raise PipelineError(f"no dvc.yaml here to find the {name} model: pass --{name} PATH")
        path, stage = (given, None) if given is not None else known[name]
        if not path.is_file():
            make = f"; run `dvc repro {stage}` to make it" if stage else ""
            raise PipelineError(f"{path}: model not found{make}")
        paths[name] = path
    return Models(paths["cnn"], paths["kmeans"])


def predict_files(models: Models, files: list[Path]) -> tuple[list[str], list[str]]:
    """(result lines, error lines): one line per file, each starting with its name."""
    lines, errors, images, names = [], [], [], []
    for path in files:
        try:
            images.append(prepare(read_image(path), models.preparation))
            names.append(path)
        except PipelineError as exc:
            errors.append(f"{path}: {exc}")
    if images:
        for path, prediction in zip(names, models.predict(np.stack(images)), strict=True):
            lines.append(f"{path}: {models.describe(prediction)}")
    return lines, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist-predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="pictures to classify: PNG, JPEG or any other format Pillow reads, any size",
    )
    parser.add_argument(
        "--cnn",
        type=Path,
        metavar="PATH",
        help="the CNN's weights (default: dvc.yaml's cnn artifact, models/cnn.pt)",
    )
    parser.add_argument(
        "--kmeans",
        type=Path,
        metavar="PATH",
        help="the k-means model (default: dvc.yaml's kmeans artifact, models/kmeans.npz)",
    )
    args = parser.parse_args(argv)
    try:
        models = load_models(args.cnn, args.kmeans)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lines, errors = predict_files(models, args.images)
    for line in lines:
        print(line)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 1 if errors else 0


def cli() -> None:
    """The `mnist-predict` console script."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
