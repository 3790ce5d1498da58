"""Predict the class of your own pictures with the pipeline's two models.

    mnist-predict IMAGE [IMAGE ...] [--cnn PATH] [--kmeans PATH]

(`mnist-predict` is installed in .venv/bin by scripts/setup.sh; it runs with the project's
environment whether or not that is activated.)

For each image (PNG, JPEG or anything else Pillow reads, up to MAX_PIXELS, 150 megapixels;
dark ink on light paper or light on dark; 16-bit, 32-bit and float pictures by their range)
it prints one line: the CNN's class and probability, its top three, and the label of the
nearest k-means centroid. A picture over SIDE (2048) pixels a side is first reduced to that
by averaging blocks of pixels (JPEGs as they are decoded), so that a phone photo costs tens
of MB rather than GB. Each picture is then prepared the way the model's data set made its
images (mnist_pipeline.digits, under the rule in the model's meta). The models default to
the paths that dvc.yaml's `artifacts:` gives them, so from the project root no option is
needed after `dvc repro`.

A file that is not an image, a blank one, one over the size cap, or a path that is not a
regular file (a folder, a FIFO, a device) gets a one-line error and the others are still
read; the exit status is then 1. A missing model stops at once, naming the stage to run.
Ctrl-C prints one line and exits 130.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from ruamel.yaml import YAML, YAMLError

from mnist_pipeline.cnn import load_checkpoint
from mnist_pipeline.digits import prepare
from mnist_pipeline.kmeans import load_model
from mnist_pipeline.processed import normalize, preparation_of
from mnist_pipeline.runtime import PipelineError, file_kind

TOP = 3  # how many of the CNN's classes and of the nearest centroids to report
# The largest picture read, in pixels: a 108-megapixel phone photo (12000 x 9000) with
# room to spare, and under Pillow's decompression-bomb limit (179 MP), which would refuse
# first without saying the size. Decoding one takes up to 4 bytes a pixel (RGB, RGBA).
MAX_PIXELS = 150_000_000
# Pictures are reduced to at most this many pixels a side before any float work (about
# 50 bytes a pixel): a digit a tenth of the picture wide still spans 200 pixels, ten times
# the 20-pixel box it is scaled to, so its 28 x 28 image barely changes.
SIDE = 2048
BAND = 1 << 22  # pixels converted at a time where a big picture's mode must change first


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # the CNN's, one per class
    nearest_centroids: np.ndarray  # indices of the TOP nearest k-means centroids, nearest first


class Models:
    """Both trained models, loaded from their files, with what they know about their input."""

    def __init__(self, cnn_path: Path, kmeans_path: Path) -> None:
        checkpoint = load_checkpoint(cnn_path)
        self.cnn, self.meta = checkpoint.model, checkpoint.meta
        self.cnn.eval()
        self.kmeans = load_model(kmeans_path)
        self.classes: tuple[str, ...] = tuple(self.meta["classes"])
        self.preparation = preparation_of(self.meta)

    def predictions(self, images: np.ndarray) -> list[Prediction]:
        """Both models' answers for uint8 images of shape (N, 28, 28), prepared."""
        unit = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
        x = normalize(unit, self.meta["mean"], self.meta["std"]).reshape(-1, 1, 28, 28)
        with torch.no_grad():
            probabilities = self.cnn(torch.from_numpy(x)).exp().numpy()
        nearest = self.kmeans.nearest_centroids(unit, TOP)
        return [Prediction(p, n) for p, n in zip(probabilities, nearest, strict=True)]

    def describe(self, prediction: Prediction) -> str:
        """One line: the CNN's class, its top three, the nearest centroid's label."""
        order = np.argsort(-prediction.probabilities, kind="stable")[:TOP]
        top = ", ".join(f"{self.classes[i]} {prediction.probabilities[i]:.1%}" for i in order)
        centroid = int(prediction.nearest_centroids[0])
        label = self.kmeans.classes[self.kmeans.cluster_labels[centroid]]
        return (
            f"CNN {self.classes[order[0]]} ({prediction.probabilities[order[0]]:.1%}); "
            f"top {TOP}: {top}; k-means: {label} (centroid {centroid})"
        )


def read_image(path: Path) -> np.ndarray:
    """The picture as (H, W, 4) uint8 RGBA, turned upright as its EXIF data says, and
    reduced by area averaging to at most SIDE pixels a side.

    Pictures of more than MAX_PIXELS are refused before they are decoded, and so is
    anything that is not a regular file (a FIFO would block, a device never end).
    """
    try:
        st_mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise PipelineError("no such file") from None
    except OSError as exc:
        raise PipelineError(f"cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(st_mode):
        kind = file_kind(st_mode)
        raise PipelineError(f"not a picture file but {kind}: give the path of a picture file")
    try:
        with warnings.catch_warnings():
            # Pillow warns about pictures over 89 megapixels; MAX_PIXELS is checked here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return np.asarray(_reduced(image).convert("RGBA"))
    except Image.DecompressionBombError:
        # Pillow refuses these when it opens them, before their size can be asked.
        size = f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
        raise PipelineError(too_large(size)) from None
    except FileNotFoundError:
        raise PipelineError("no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise PipelineError(f"cannot read it as an image ({reason})") from None


def too_large(size: str) -> str:
    return (
        f"too large: {size}, and the most this command reads is {MAX_PIXELS / 1e6:g} "
        "megapixels; scale it down (the models see 28 x 28 pixels) and try again"
    )


def _reduced(image: Image.Image) -> Image.Image:
    """`image` upright and at most SIDE pixels a side, in a mode Image.convert("RGBA")
    reads right: L, LA, RGB or RGBA. Wide pixels (16-bit, 32-bit int, float) are scaled
    to 8 bits by their range (wide_to_bytes)."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        size = f"{width} x {height} pixels ({width * height / 1e6:.3g} megapixels)"
        raise PipelineError(too_large(size))
    factor = math.ceil(max(width, height) / SIDE)
    if factor > 1:  # JPEG decodes at 1/2, 1/4 or 1/8 of the size for the asking
        image.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
    factor = math.ceil(max(image.size) / SIDE)
    if image.mode.startswith("I;16"):
        image = converted_and_reduced(image, "I", factor)
    elif image.mode == "1":
        image = converted_and_reduced(image, "L", factor)
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        # Palettes and other colour spaces: their values cannot be averaged as they are.
        image = converted_and_reduced(image, "RGBA", factor)
    elif factor > 1:
        image = image.reduce(factor)  # the mean of each factor x factor block
    image = ImageOps.exif_transpose(image)
    return wide_to_bytes(image) if image.mode in ("I", "F") else image


def converted_and_reduced(image: Image.Image, mode: str, factor: int) -> Image.Image:
    """image.convert(mode).reduce(factor), a band of BAND pixels at a time when it is
    reduced: converted whole, a palette or 1-bit picture would take up to 4 bytes a pixel more."""
    if factor == 1:
        return image.convert(mode)
    rows = factor * max(1, BAND // (factor * image.width))  # whole blocks in each band
    bands = [
        image.crop((0, top, image.width, min(top + rows, image.height)))
        .convert(mode)
        .reduce(factor)
        for top in range(0, image.height, rows)
    ]
    reduced = Image.new(mode, (bands[0].width, sum(band.height for band in bands)))
    for index, band in enumerate(bands):
        reduced.paste(band, (0, index * bands[0].height))
    reduced.info.update(image.info)  # its EXIF orientation among them
    return reduced


def wide_to_bytes(image: Image.Image) -> Image.Image:
    """An "I" or "F" picture as "L": 0 to 65535 (16-bit pictures), or 0 to 1 (floats), to
    0 to 255, or the pixels' own lowest to highest where they do not fit that range."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise PipelineError("cannot read it as an image (some of its pixels are NaN or infinite)")
    low, high = float(values.min()), float(values.max())
    usual = 1.0 if image.mode == "F" else 65535.0
    if low >= 0 and high <= usual:
        low, high = 0.0, usual
    levels = (values - low) / ((high - low) or 1) * 255
    return Image.fromarray(np.floor(levels + 0.5).astype(np.uint8))


def model_paths(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, tuple[Path, str | None]]:
    """Artifact name -> (path, the stage that writes it), from dvc.yaml; {} without one.

    Read with ruamel.yaml's safe loader, as DVC reads dvc.yaml (YAML 1.2), and already
    loaded here by mnist_pipeline.config; asking DVC's Python API (Repo.artifacts and
    Repo.index) finds the same paths but adds 2.3-3.9 s to the command's start-up.
    """
    if not dvc_yaml.is_file():
        return {}
    try:
        spec = YAML(typ="safe").load(dvc_yaml.read_text())
        writers = {
            str(out if isinstance(out, str) else next(iter(out))): name
            for name, stage in spec.get("stages", {}).items()
            for out in stage.get("outs", [])
        }
        return {
            name: (Path(artifact["path"]), writers.get(artifact["path"]))
            for name, artifact in spec.get("artifacts", {}).items()
        }
    except (OSError, UnicodeDecodeError, YAMLError, AttributeError, KeyError, TypeError):
        raise PipelineError(
            f"{dvc_yaml}: cannot read its artifacts (not the project's dvc.yaml?); "
            "pass --cnn PATH and --kmeans PATH"
        ) from None


def load_models(cnn: Path | None, kmeans: Path | None) -> Models:
    """The models at the given paths, or where dvc.yaml puts them; a clear error if missing."""
    known = model_paths() if cnn is None or kmeans is None else {}
    paths = {}
    for name, given in (("cnn", cnn), ("kmeans", kmeans)):
        if given is None and name not in known:
            raise PipelineError(f"no dvc.yaml here names a {name} model: pass --{name} PATH")
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
        for path, prediction in zip(names, models.predictions(np.stack(images)), strict=True):
            lines.append(f"{path}: {models.describe(prediction)}")
    return lines, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist-predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help=(
            "pictures to classify: PNG, JPEG or any other format Pillow reads, up to "
            f"{MAX_PIXELS / 1e6:g} megapixels; larger ones are refused, and any over {SIDE} "
            "pixels a side is first reduced to that by averaging"
        ),
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
        lines, errors = predict_files(models, args.images)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: nothing was printed yet, and nothing will be
        print("error: interrupted: no picture was answered; run it again", file=sys.stderr)
        return 130
    for line in lines:
        print(line)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 1 if errors else 0


def cli() -> None:
    """The `mnist-predict` console script."""
    sys.exit(main())
