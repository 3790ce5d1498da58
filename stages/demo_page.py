"""Stage demo_page: one self-contained HTML page to draw a digit (or a garment) and see both
models answer.

Reads: --cnn (models/cnn.pt), --kmeans (models/kmeans.npz), --data (data/processed/kmeans:
the first test images and their labels).
Writes: --out (demo/index.html): the page (stages/demo_page.html) with its two scripts
(stages/demo_page_models.js: the arithmetic, no DOM; stages/demo_page.js: the UI), both
models' weights and N_TEST_IMAGES test images inlined. The page prepares a drawing as
mnist_pipeline.digits does, under the preparation in the CNN's meta, and runs both models
in plain JavaScript, with the CNN's layer sizes read from the weights' shapes: it loads
nothing from the network and opens from file://.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np

from mnist_pipeline.cnn import Net, load_checkpoint
from mnist_pipeline.kmeans import KmeansModel, load_model
from mnist_pipeline.processed import FLAT_IMAGE, ProcessedData, load_processed, preparation_of
from mnist_pipeline.runtime import atomic_path, path_args, run_main

log = logging.getLogger("stages.demo_page")

N_TEST_IMAGES = 300  # 235 KB of pixels; with the 256x784 centroids the page stays under 2 MB
TEMPLATE = Path(__file__).with_name("demo_page.html")
# The scripts that fill the template's /*MODELS*/ and /*SCRIPT*/ markers; the data fills /*DATA*/.
SCRIPTS = {
    "MODELS": Path(__file__).with_name("demo_page_models.js"),
    "SCRIPT": Path(__file__).with_name("demo_page.js"),
}


def _base64(array: np.ndarray, dtype: str) -> str:
    # Little-endian, as the typed arrays of every browser in use read them.
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def page_data(cnn: Net, meta: dict, kmeans: KmeansModel, test: ProcessedData) -> dict:
    """Everything the page's script needs, as JSON-ready values; arrays as base64."""
    n = min(N_TEST_IMAGES, len(test.test_y))
    # The k-means features are pixel / 255 in float32: rounding recovers MNIST's bytes.
    pixels = np.rint(np.asarray(test.test_x[:n]) * 255).astype(np.uint8)
    return {
        "dataset": meta["dataset"],
        "classes": meta["classes"],
        "mean": meta["mean"],
        "std": meta["std"],
        "preparation": dataclasses.asdict(preparation_of(meta)),
        "cnn": {
            name: {"shape": list(tensor.shape), "data": _base64(tensor.numpy(), "<f4")}
            for name, tensor in cnn.state_dict().items()
        },
        "kmeans": {
            "centroids": _base64(kmeans.centroids, "<f4"),
            "labels": kmeans.cluster_labels.tolist(),
            "classes": list(kmeans.classes),
        },
        "test": {"images": _base64(pixels, "u1"), "labels": test.test_y[:n].tolist()},
    }


def build_page(data: dict) -> str:
    """The template with the scripts and the data inlined."""
    # Inside a <script>, "</script" ends it and "<!--" can swallow the page's own script:
    # JSON has "<" only inside strings, where "\u003c" means the same and parses as nothing.
    # The scripts have neither (tests/test_demo_page.py checks).
    parts = {name: path.read_text(encoding="utf-8") for name, path in SCRIPTS.items()}
    parts["DATA"] = json.dumps(data, separators=(",", ":"), sort_keys=True).replace("<", "\\u003c")
    # One pass: a marker inside what is inlined (a class named "/*SCRIPT*/") stays as it is.
    marker = re.compile(r"/\*(" + "|".join(parts) + r")\*/")
    return marker.sub(lambda match: parts[match[1]], TEMPLATE.read_text(encoding="utf-8"))


def main() -> None:
    args = path_args(__doc__, "cnn", "kmeans", "data", "out", outputs=("out",))
    checkpoint = load_checkpoint(args.cnn)
    cnn, meta = checkpoint.model, checkpoint.meta
    test = load_processed(args.data, FLAT_IMAGE, uses=("test",))
    page = build_page(page_data(cnn, meta, load_model(args.kmeans), test))
    with atomic_path(args.out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("%s: %d bytes, data set %s", args.out, len(page.encode("utf-8")), meta["dataset"])


if __name__ == "__main__":
    run_main(main)
