"""Peak memory and time of `mnist-predict` on large and odd pictures.

    .venv/bin/python benchmarks/pictures_bench.py --label after [--only 5mp-jpeg fifo]

From the repository root. Makes each picture in a scratch folder (a drawn 7 on white; the
big PNGs compress to kilobytes, though the 1-bit one takes 900 MB to make), an untrained
CNN and random k-means centroids (what the command prints does not matter here, only what
it costs), then runs the command once per picture in its own process under
`/usr/bin/time -f "%M %e"`: peak RSS and wall seconds. A FIFO nobody writes to is stopped
after --timeout seconds. Each label's figures go into benchmarks/pictures.json (run it once
with --label before on the old code, once with --label after) and the table for
RESULTS.md is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mnist_pipeline.cnn import Net, save_checkpoint
from mnist_pipeline.config import CnnParams
from mnist_pipeline.kmeans import KmeansModel, save_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "pictures.json"
CLASSES = [str(d) for d in range(10)]


def seven(mode: str, width: int, height: int, ink: int = 0, paper: int = 255) -> Image.Image:
    """A 7 drawn across the middle of a width x height picture, ink and paper grey levels."""
    image = Image.new("L", (width, height), paper)
    side = min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    points = [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]
    draw = ImageDraw.Draw(image)
    draw.line([(x0 + x * side, y0 + y * side) for x, y in points], ink, max(2, side // 12))
    return image.convert(mode)


def sixteen_bit(path: Path) -> None:
    """Grey ink (20000 of 65535) on white, 16 bits per pixel."""
    strength = np.asarray(seven("L", 1000, 1000, ink=255, paper=0), dtype=np.float64) / 255
    Image.fromarray(np.rint(65535 - strength * (65535 - 20000)).astype(np.uint16)).save(path)


CASES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "small-png": ("200x200 PNG (the baseline)", lambda p: seven("RGB", 200, 200).save(p)),
    "5mp-jpeg": ("2592x1944 JPEG (5 MP)", lambda p: seven("RGB", 2592, 1944).save(p, quality=90)),
    "48mp-jpeg": ("8000x6000 JPEG (48 MP)", lambda p: seven("RGB", 8000, 6000).save(p, quality=90)),
    "20mp-strip": ("20000x1000 PNG strip (20 MP)", lambda p: seven("RGB", 20000, 1000).save(p)),
    "108mp-png": ("12000x9000 grey PNG (108 MP)", lambda p: seven("L", 12000, 9000).save(p)),
    "108mp-palette": (
        "12000x9000 palette PNG (108 MP)",
        lambda p: seven("L", 12000, 9000).convert("P").save(p),
    ),
    "13k-png": ("13000x13000 grey PNG (169 MP)", lambda p: seven("L", 13000, 13000).save(p)),
    "30k-png": (
        "30000x30000 1-bit PNG (900 MP)",
        lambda p: Image.new("1", (30000, 30000), 1).save(p),
    ),
    "16bit-png": ("1000x1000 16-bit PNG, grey ink", sixteen_bit),
    "fifo": ("a FIFO nobody writes to", os.mkfifo),
}
SUFFIX = {"5mp-jpeg": ".jpg", "48mp-jpeg": ".jpg", "fifo": ""}


def write_models(folder: Path) -> list[str]:
    params = CnnParams(1, 1, 64, 100, 0.05, 0.5, 2)
    meta = {"dataset": "mnist", "classes": CLASSES, "mean": 0.1307, "std": 0.3081}
    torch.manual_seed(0)
    save_checkpoint(folder / "cnn.pt", Net(), params, meta)
    centroids = np.random.default_rng(0).random((16, 784), dtype=np.float32)
    save_model(folder / "kmeans.npz", KmeansModel(centroids, np.arange(16) % 10, tuple(CLASSES)))
    return ["--cnn", str(folder / "cnn.pt"), "--kmeans", str(folder / "kmeans.npz")]


def measure(picture: Path, models: list[str], timeout: float) -> dict:
    command = ["/usr/bin/time", "-f", "%M %e", str(Path(sys.executable).parent / "mnist-predict")]
    # Its own process group, so that a stopped run's python goes too, not only `time`.
    with subprocess.Popen(
        [*command, str(picture), *models],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            said = f"blocked: stopped after {timeout:.0f} s"
            return {"rss_mib": None, "seconds": None, "status": None, "said": said}
    *said, figures = stderr.strip().splitlines()
    said = [line for line in said if not line.startswith("Command exited with non-zero status")]
    rss_kib, seconds = figures.split()
    said = [*stdout.splitlines(), *said]
    return {
        "rss_mib": round(int(rss_kib) / 1024),
        "seconds": float(seconds),
        "status": process.returncode,
        "said": " / ".join(said if len(said) <= 3 else [f"{len(said)} lines", said[-1]]).replace(
            str(picture), "PICTURE"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="before or after: where the figures go")
    parser.add_argument("--only", nargs="+", choices=CASES, help="these cases only")
    parser.add_argument("--timeout", type=float, default=20, help="seconds before a run is stopped")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        models = write_models(folder)
        for name in args.only or CASES:
            what, make = CASES[name]
            picture = folder / f"{name}{SUFFIX.get(name, '.png')}"
            make(picture)
            figures = measure(picture, models, args.timeout)
            results.setdefault(name, {"picture": what})[args.label] = figures
            print(name, figures, flush=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| picture | before: MiB, s | after: MiB, s | before, the user saw | after |")
    print("| --- | ---: | ---: | --- | --- |")
    for result in results.values():
        cells = []
        for label in ("before", "after"):
            r = result.get(label, {})
            cells.append(f"{r.get('rss_mib', '-')}, {r.get('seconds', '-')}")
        seen = [
            f"{result.get(label, {}).get('said', '-')} (exit {result.get(label, {}).get('status')})"
            for label in ("before", "after")
        ]
        print(f"| {result['picture']} | {cells[0]} | {cells[1]} | {seen[0]} | {seen[1]} |")


if __name__ == "__main__":
    main()
