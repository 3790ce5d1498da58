"""The demo page: its size budget, and in headless Chromium with no network, its answers.

The browser test loads a copy of the page built by `dvc repro` (and of the page the stage
builds from the same model relabelled as Fashion-MNIST's, to try that preparation) with a
script added at the end. That script runs every embedded test image through the page's own
inference, then draws two strokes on the canvas with PointerEvents, as a pen would, and
writes what the page did (the canvas pixels, the 28x28 input it showed, its answer and how
long it took) into the DOM as JSON, which `--dump-dom` hands back. Python then checks all of
it against PyTorch, the k-means model and mnist_pipeline.digits, and the command-line tool.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from mnist_pipeline.cnn import Net, load_checkpoint, save_checkpoint
from mnist_pipeline.config import CnnParams
from mnist_pipeline.datasets import get_dataset
from mnist_pipeline.digits import prepare
from mnist_pipeline.kmeans import KmeansModel
from mnist_pipeline.predict import Models, predict_files
from mnist_pipeline.processed import (
    CNN_IMAGE,
    FLAT_IMAGE,
    PREPARATIONS,
    ProcessedData,
    load_processed,
)
from stages.demo_page import N_TEST_IMAGES, SCRIPTS, build_page, page_data
from tests.helpers import (
    ARTIFACTS,
    ROOT,
    boot,
    chromium,
    instrumented_copy,
    page_report,
    rgba,
    run,
    screenshot,
    seven,
)

MAX_PAGE_BYTES = 2_000_000


def test_full_size_page_stays_under_two_megabytes():
    # The real models' shapes: 21,840 CNN weights, 256 centroids, 10,000 test images.
    rng = np.random.default_rng(0)
    classes = tuple(f"class {i}" for i in range(10))
    meta = {
        "dataset": "fashion-mnist",
        "classes": list(classes),
        "mean": 0.286,
        "std": 0.353,
        "preparation": dataclasses.asdict(PREPARATIONS["fashion-mnist"]),
    }
    kmeans = KmeansModel(rng.random((256, 784), dtype=np.float32), np.arange(256) % 10, classes)
    test_x = rng.integers(0, 256, size=(10_000, 784)).astype(np.float32) / 255
    test = ProcessedData(
        train_x=test_x[:0],
        train_y=np.zeros(0, np.int64),
        test_x=test_x,
        test_y=np.arange(10_000) % 10,
        classes=classes,
        dataset="fashion-mnist",
        mean=0.0,
        std=1.0,
        preparation=meta["preparation"],
    )
    page = build_page(page_data(Net(), meta, kmeans, test))
    assert len(page.encode("utf-8")) <= MAX_PAGE_BYTES
    # Nothing that a browser would fetch: no URLs, no external scripts, styles or images.
    assert not re.search(r"https?:|\bsrc=|\bhref=|@import|url\(", page)
    data = json.loads(re.search(r'<script id="data"[^>]*>(.*?)</script>', page, re.S).group(1))
    assert len(data["test"]["labels"]) == N_TEST_IMAGES
    pixels = np.frombuffer(base64.b64decode(data["test"]["images"]), np.uint8)
    np.testing.assert_array_equal(pixels, np.rint(test_x[:N_TEST_IMAGES] * 255).ravel())
    assert data["preparation"] == {"subject": "garment", "box": 28, "center": "box"}
    # A model from before meta recorded its preparation: the page prepares as for MNIST.
    del meta["preparation"]
    assert page_data(Net(), meta, kmeans, test)["preparation"] == {
        "subject": "digit",
        "box": 20,
        "center": "mass",
    }


def test_inlined_scripts_cannot_end_their_script_element_and_are_dependencies():
    # "</script" would end the inlined script early; "<!--" can swallow the next one.
    for path in SCRIPTS.values():
        source = path.read_text(encoding="utf-8").lower()
        assert "</script" not in source and "<!--" not in source, path.name
    # dvc.yaml lists each inlined file, so that an edit to either rebuilds the page.
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["demo_page"]["deps"]
    assert {f"stages/{path.name}" for path in SCRIPTS.values()} <= set(deps)


def small_page(cnn: Net, classes: tuple[str, ...]) -> str:
    """The page for `cnn`, 16 random centroids and 20 random test images."""
    meta = {"dataset": "mnist", "classes": list(classes), "mean": 0.1307, "std": 0.3081}
    rng = np.random.default_rng(0)
    kmeans = KmeansModel(rng.random((16, 784), dtype=np.float32), np.arange(16) % 10, classes)
    images = rng.random((20, 784), dtype=np.float32)
    labels = np.arange(20) % 10
    test = ProcessedData(images[:0], labels[:0], images, labels, classes, "mnist", 0.0, 1.0, {})
    return build_page(page_data(cnn, meta, kmeans, test))


def test_page_says_when_the_cnn_does_not_fit_its_layers(chromium_binary, tmp_path):
    # Net changed (a conv layer added) and the page's script did not follow: it must say so
    # on the page, not answer with numbers from the wrong network.
    cnn = Net()
    cnn.conv3 = nn.Conv2d(20, 20, 1)
    (tmp_path / "index.html").write_text(small_page(cnn, tuple("0123456789")), encoding="utf-8")
    dom = chromium(
        chromium_binary, "--dump-dom", (tmp_path / "index.html").as_uri(), profile=tmp_path / "p"
    )
    status = re.search(r'<p id="status">(.*?)</p>', dom, re.S).group(1)
    assert status == html.escape(
        "This page cannot run the models it was built with: the page does not use "
        "conv3.bias, conv3.weight. Make NET in stages/demo_page_models.js match Net in "
        "mnist_pipeline/cnn.py, then run `dvc repro demo_page`.",
        quote=False,
    )
    assert '<button id="clear" type="button" disabled="">' in dom
    assert '<div id="bars"></div>' in dom  # no bars, no answer


# At the end of <body>, after the page's own script. With #screenshot in the URL it only
# draws, for the screenshot; otherwise it also checks and reports.
CHECK_JS = """
window.addEventListener("load", function () {
  var demo = window.digitDemo;
  var canvas = document.getElementById("draw");
  var box = canvas.getBoundingClientRect();
  function send(type, x, y) {
    canvas.dispatchEvent(new PointerEvent(type, {
      bubbles: true, cancelable: true, pointerId: 7, pointerType: "pen", isPrimary: true,
      clientX: box.left + x, clientY: box.top + y,
      buttons: type === "pointerup" ? 0 : 1, pressure: type === "pointerup" ? 0 : 0.5,
    }));
  }
  // A stroke through the given corners, one pointermove every 4 pixels; returns the
  // milliseconds its pointerup took to be answered.
  function stroke(corners) {
    send("pointerdown", corners[0][0], corners[0][1]);
    for (var c = 1; c < corners.length; c++) {
      var from = corners[c - 1], to = corners[c];
      var steps = Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / 4);
      for (var s = 1; s <= steps; s++) {
        send("pointermove", from[0] + (to[0] - from[0]) * s / steps,
             from[1] + (to[1] - from[1]) * s / steps);
      }
    }
    var end = corners[corners.length - 1];
    var started = performance.now();
    send("pointerup", end[0], end[1]);
    return performance.now() - started;
  }
  var strokeMs = [stroke([[80, 60], [205, 62], [120, 235]]), stroke([[105, 150], [185, 148]])];
  if (location.hash === "#screenshot") return;

  var images = [];
  for (var i = 0; i < demo.testCount; i++) {
    var answer = demo.predict(demo.testImage(i));
    images.push({ probabilities: answer.probabilities, nearest: answer.nearest[0].index });
  }
  // Pictures from Python (any size, either polarity) through the page's own preparation.
  var prepared = window.__pictures.map(function (picture) {
    var text = atob(picture.rgba);
    var bytes = Uint8ClampedArray.from(text, function (c) { return c.charCodeAt(0); });
    var image = new ImageData(bytes, picture.width, picture.height);
    return Array.from(demo.prepare(image, demo.preparation));
  });
  var rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  var text = "";
  for (var j = 0; j < rgba.length; j += 8192) {
    text += String.fromCharCode.apply(null, rgba.subarray(j, j + 8192));
  }
  var input = document.getElementById("input").getContext("2d").getImageData(0, 0, 28, 28).data;
  var report = document.createElement("pre");
  report.id = "demo-check";
  report.textContent = JSON.stringify({
    images: images,
    prepared: prepared,
    canvas: { width: canvas.width, height: canvas.height, rgba: btoa(text) },
    input: Array.from(input).filter(function (v, k) { return k % 4 === 0; }),
    answer: document.getElementById("answer").textContent,
    status: document.getElementById("status").textContent,
    preparation: demo.preparation,
    heading: document.getElementById("heading").textContent,
    title: document.title,
    centroids: Array.from(document.querySelectorAll("#centroids figcaption"),
                          function (e) { return e.textContent; }),
    strokeMs: strokeMs,
    pageLatencyMs: demo.state.latencyMs,
    fetched: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
    errors: window.__demoErrors,
  });
  document.body.appendChild(report);
});
"""
ERRORS_JS = """
window.__demoErrors = [];
window.addEventListener("error", function (event) { window.__demoErrors.push(event.message); });
"""


HOSTILE_NAMES = ["<!--<script>", "</script><b>bold</b>", "&amp;", *"3456789"]


def test_no_class_name_changes_how_the_page_parses(chromium_binary, tmp_path):
    # "<!--<script>" in a <script> element swallowed the page's own script: a blank page.
    page = small_page(Net(), tuple(HOSTILE_NAMES))
    blob = re.search(r'<script id="data"[^>]*>(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob)["classes"] == HOSTILE_NAMES
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    dom = chromium(
        chromium_binary, "--dump-dom", (tmp_path / "index.html").as_uri(), profile=tmp_path / "p"
    )
    # The script ran (it writes the heading) and showed each name as text, not markup.
    assert '<h1 id="heading">Draw a digit</h1>' in dom
    for name in HOSTILE_NAMES[:3]:
        assert f">{html.escape(name, quote=False)}<" in dom, name


def sample_pictures() -> list[np.ndarray]:
    """RGBA pictures of a 7 (square, wide, tall, light on dark, tinted, JPEG-compressed) and
    of a boot, whose centre of mass is far from its box's."""
    buffer = io.BytesIO()
    seven(90, 400).save(buffer, format="JPEG", quality=80)
    pictures = [
        seven(200, 200),
        seven(300, 120, ink="white", paper="black"),
        seven(60, 250, ink="#223355", paper="#eee8d5"),
        Image.open(buffer),
        boot(300, 200),
    ]
    return [rgba(picture) for picture in pictures]


def check_script(pictures: list[np.ndarray]) -> str:
    """CHECK_JS, with the pictures for the page to prepare as window.__pictures."""
    listed = [
        {"width": p.shape[1], "height": p.shape[0], "rgba": base64.b64encode(p).decode()}
        for p in pictures
    ]
    return f"window.__pictures = {json.dumps(listed)};\n{CHECK_JS}"


def fashion_page(repo: Path, directory: Path) -> tuple[Path, Path]:
    """The tiny CNN relabelled as trained on Fashion-MNIST, and the page the demo_page stage
    builds from it: (model, page), both in `directory`."""
    cnn, params, meta, _ = load_checkpoint(repo / "models/cnn.pt")
    fashion = get_dataset("fashion-mnist")
    meta = {
        **meta,
        "dataset": fashion.name,
        "classes": list(fashion.classes),
        "preparation": dataclasses.asdict(PREPARATIONS[fashion.name]),
    }
    model, page = directory / "cnn.pt", directory / "index.html"
    save_checkpoint(model, cnn, CnnParams(**params), meta)
    paths = {"cnn": model, "kmeans": repo / "models/kmeans.npz", "out": page}
    paths["data"] = repo / "data/processed/kmeans"
    run([sys.executable, "-m", "stages.demo_page", *(f"--{k}={v}" for k, v in paths.items())], ROOT)
    return model, page


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_demo_page_answers_like_the_models_offline(
    dataset, reproduced_repo, chromium_binary, tmp_path
):
    cnn_path, page = reproduced_repo / "models/cnn.pt", reproduced_repo / "demo/index.html"
    if dataset == "fashion-mnist":
        cnn_path, page = fashion_page(reproduced_repo, tmp_path)
    assert page.stat().st_size <= MAX_PAGE_BYTES
    pictures = sample_pictures()
    copy = tmp_path / "demo-check.html"
    instrumented_copy(page, copy, ERRORS_JS, check_script(pictures))
    report = page_report(chromium_binary, copy, "demo-check", tmp_path / "profile")

    # Every embedded test image: the page's CNN and k-means against PyTorch and Python.
    cnn_data = load_processed(reproduced_repo / "data/processed/cnn", CNN_IMAGE)
    km_data = load_processed(reproduced_repo / "data/processed/kmeans", FLAT_IMAGE)
    models = Models(cnn_path, reproduced_repo / "models/kmeans.npz")
    # The page prepares the way the model's meta says, and says what to draw.
    rule = models.preparation
    assert rule == PREPARATIONS[dataset]
    assert report["preparation"] == dataclasses.asdict(rule)
    assert report["heading"] == f"Draw a {rule.subject}"
    assert report["title"] == f"Draw a {rule.subject}: the pipeline's models"
    n = len(report["images"])
    assert n == min(N_TEST_IMAGES, len(cnn_data.test_y))
    with torch.no_grad():
        expected = models.cnn(torch.from_numpy(np.asarray(cnn_data.test_x[:n]))).exp().numpy()
    page_probabilities = np.array([image["probabilities"] for image in report["images"]])
    np.testing.assert_array_equal(page_probabilities.argmax(1), expected.argmax(1))
    assert np.abs(page_probabilities - expected).max() < 1e-4
    kmeans = models.kmeans
    page_nearest = [image["nearest"] for image in report["images"]]
    np.testing.assert_array_equal(page_nearest, kmeans.nearest_centroids(km_data.test_x[:n])[:, 0])

    # The page prepares pictures as mnist_pipeline.digits does (up to a rounding tie).
    for picture, page_field in zip(pictures, report["prepared"], strict=True):
        field = prepare(picture, rule).astype(int)
        assert np.abs(np.array(page_field).reshape(28, 28) - field).max() <= 1

    # The drawing: the canvas's pixels prepared in Python give the input the page showed.
    canvas = report["canvas"]
    drawn = np.frombuffer(base64.b64decode(canvas["rgba"]), np.uint8)
    drawn = drawn.reshape(canvas["height"], canvas["width"], 4)
    field = prepare(drawn, rule)
    page_input = np.array(report["input"], dtype=int).reshape(28, 28)
    assert np.abs(page_input - field).max() <= 1
    (answer,) = models.predictions(field[None])
    shown_class = report["answer"].rsplit(" (", 1)[0]
    assert shown_class == models.classes[answer.probabilities.argmax()]
    label = kmeans.classes[kmeans.cluster_labels[answer.nearest_centroids[0]]]
    assert report["centroids"][0] == f"{label} (#{answer.nearest_centroids[0]})"
    # The 50 ms budget is measured, not asserted: these machines are shared and noisy. The
    # figures land beside the screenshot for a person (and the closing notes) to read.
    ARTIFACTS.mkdir(exist_ok=True)
    suffix = "" if dataset == "mnist" else f"-{dataset}"
    timings = {"stroke_ms": report["strokeMs"], "page_latency_ms": report["pageLatencyMs"]}
    (ARTIFACTS / f"demo_timings{suffix}.json").write_text(json.dumps(timings, indent=2) + "\n")
    # What is asserted: the page measured the last stroke's latency and shows that figure.
    shown = re.fullmatch(r"Answered (\d+) ms after the end of the stroke\.", report["status"])
    assert shown, report["status"]
    assert report["pageLatencyMs"] >= 0 and abs(int(shown[1]) - report["pageLatencyMs"]) <= 0.5

    # The command-line tool, given the same pixels as a PNG, says the same.
    Image.fromarray(drawn).save(tmp_path / "drawing.png")
    (line,), errors = predict_files(models, [tmp_path / "drawing.png"])
    assert errors == []
    assert f": CNN {shown_class} (" in line and f"k-means: {label} (centroid" in line

    shot = f"demo{suffix}.png"
    screenshot(chromium_binary, f"{copy.as_uri()}#screenshot", shot, "1100,560", tmp_path / "p")
