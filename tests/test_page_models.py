"""The demo page's own arithmetic (stages/demo_page_models.js, the real file) against PyTorch,
mnist_pipeline.digits and the k-means model, on small fixtures: no `dvc repro`.

One headless Chromium run (1 to 3 s on these 2 cores) loads the script into a bare page,
hands it the data that stages.demo_page.page_data ships (a Net with seeded random weights,
random centroids) and pictures to prepare, and reports what the page's functions computed.
So a change to Net, to digits.prepare or to the nearest centroids that the page does not
follow fails here, in the unit suite.

Tolerances: the page computes in float64 from the float32 weights, as PyTorch does on the
same weights cast to float64; only the order of the sums differs, so the probabilities
agree to 1e-12 (measured: 6e-17; a float32 run differs by 3e-8 and would hide a small
error). The preparation rounds to bytes, where a different order of the same sums can tip
a value at an exact half: one level, on at most a few pixels (none on this machine).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import html
import io
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch import nn

from mnist_pipeline.cnn import Net
from mnist_pipeline.digits import BlankImageError, prepare
from mnist_pipeline.kmeans import KmeansModel
from mnist_pipeline.processed import PREPARATIONS, ProcessedData
from stages.demo_page import SCRIPTS, page_data
from tests.helpers import boot, chromium, rgba, seven

CLASSES = tuple(str(d) for d in range(10))
META = {"dataset": "mnist", "classes": list(CLASSES), "mean": 0.1307, "std": 0.3081}
RULES = PREPARATIONS  # each data set's rule: mnist's "digit", fashion-mnist's "garment"
NEAREST = 3  # as many as the page shows


def net(seed: int, **layers: Callable[[Net], nn.Module]) -> Net:
    """A Net with seeded random weights, some of its layers replaced: `layers` maps a
    layer's name to a function of the Net that makes the new layer."""
    torch.manual_seed(seed)
    model = Net()
    for name, make in layers.items():
        setattr(model, name, make(model))
    return model.eval()


def resized() -> Net:
    """Net with other layer sizes (3x3 kernels, other widths): the page must follow them."""
    return net(
        1,
        conv1=lambda _: nn.Conv2d(1, 6, 3),
        conv2=lambda _: nn.Conv2d(6, 16, 3),
        fc1=lambda _: nn.Linear(16 * 5 * 5, 32),  # 28 -> 26 -> 13 -> 11 -> 5
        fc2=lambda _: nn.Linear(32, 10),
    )


def shape(tensor: torch.Tensor) -> str:
    return f"[{','.join(map(str, tensor.shape))}]"


# Weights that do not fit the page's layers (whatever Net's own sizes), and what the page
# says of them.
BROKEN: dict[str, tuple[Callable[[], Net], Callable[[Net], str]]] = {
    "conv2 after a wider conv1": (
        lambda: net(2, conv1=lambda m: nn.Conv2d(1, m.conv1.out_channels + 3, m.conv1.kernel_size)),
        lambda m: (
            f"conv2.weight is {shape(m.conv2.weight)} and conv2.bias {shape(m.conv2.bias)}, "
            f"where its input needs [{m.conv2.out_channels},{m.conv1.out_channels},any,any]"
        ),
    ),
    "a layer the page lacks": (
        lambda: net(2, conv3=lambda _: nn.Conv2d(20, 20, 1)),
        lambda _: "the page does not use conv3.bias, conv3.weight",
    ),
    "fewer outputs than classes": (
        lambda: net(2, fc2=lambda m: nn.Linear(m.fc2.in_features, 7)),
        lambda _: "the CNN gives 7 values, for 10 classes",
    ),
}


def pictures() -> list[np.ndarray]:
    """RGBA pictures: a 7 in several sizes and polarities, blurred and JPEG-compressed (grey
    levels around the paper threshold), two boots, a blank page, and two specks far apart
    (too little ink for a 20x20 box, enough for 28x28)."""
    jpeg = io.BytesIO()
    seven(90, 250).save(jpeg, format="JPEG", quality=70)
    specks = np.full((20, 1000, 4), 255, np.uint8)
    specks[[5, 15], [5, 995], :3] = 0
    return [
        rgba(seven(200, 200)),
        rgba(seven(300, 120, ink="white", paper="black")),
        rgba(seven(60, 250, ink="#223355", paper="#eee8d5")),
        rgba(seven(240, 240).filter(ImageFilter.GaussianBlur(8))),
        rgba(Image.open(jpeg)),
        rgba(boot(300, 200)),
        rgba(boot(41, 97)),
        np.full((50, 80, 4), 255, np.uint8),
        specks,
    ]


def images() -> np.ndarray:
    """(n, 784) uint8: the prepared pictures (sparse, as the page's input) and random bytes."""
    prepared = [prepare(p, RULES["mnist"]).ravel() for p in pictures()[:7]]
    noise = np.random.default_rng(0).integers(0, 256, (5, 784), dtype=np.uint8)
    return np.vstack([*prepared, noise])


def kmeans() -> KmeansModel:
    rng = np.random.default_rng(1)
    return KmeansModel(rng.random((40, 784), dtype=np.float32), np.arange(40) % 10, CLASSES)


def shipped(cnn: Net) -> dict:
    """What stages.demo_page ships to the page for `cnn`, with the test images."""
    x = images().astype(np.float32) / 255
    y = np.arange(len(x)) % 10
    test = ProcessedData(x[:0], y[:0], x, y, CLASSES, "mnist", 0.0, 1.0, {})
    return page_data(cnn, META, kmeans(), test)


# Runs in the bare page after demo_page_models.js; reports into <pre id="report">. Each
# result is { value } or, where the page's function threw, { error }.
HARNESS_JS = """
function attempt(compute) {
  try {
    return { value: compute() };
  } catch (error) {
    return { error: error instanceof digitModels.ShapeMismatch ? error.message : error.stack };
  }
}
function computed(cnn) {
  const data = { ...CASES.data, cnn: cnn };
  const models = digitModels.load(data, CASES.nearest);
  return Array.from(data.test.labels, (_, i) => {
    const pixels = models.testImages.subarray(i * digitModels.PIXELS, (i + 1) * digitModels.PIXELS);
    return {
      probabilities: models.probabilities(pixels),
      nearest: models.nearest(pixels).map((found) => found.index),
    };
  });
}
function prepared(rule) {
  return CASES.pictures.map((picture) => {
    const data = Uint8ClampedArray.from(atob(picture.rgba), (c) => c.charCodeAt(0));
    const image = { data: data, width: picture.width, height: picture.height };
    try {
      return { value: Array.from(digitModels.prepare(image, rule)) };
    } catch (error) {
      return { error: error instanceof digitModels.BlankImage ? error.message : error.stack };
    }
  });
}
const CASES = JSON.parse(document.getElementById("cases").textContent);
const report = document.createElement("pre");
report.id = "report";
try {
  report.textContent = JSON.stringify({
    net: attempt(() => computed(CASES.data.cnn)),
    resized: attempt(() => computed(CASES.resized)),
    prepared: Object.fromEntries(Object.entries(CASES.rules).map(([k, r]) => [k, prepared(r)])),
    broken: Object.fromEntries(
      Object.entries(CASES.broken).map(([k, cnn]) => [k, attempt(() => computed(cnn))]),
    ),
  });
} catch (error) {
  report.textContent = JSON.stringify({ error: `${error}\\n${error.stack}` });
}
document.body.appendChild(report);
"""


@functools.cache
def page_results(binary: str) -> dict:
    """What the page's functions computed on the fixtures: one Chromium run per session."""
    cases = {
        "data": shipped(net(0)),
        "resized": shipped(resized())["cnn"],
        "broken": {name: shipped(make())["cnn"] for name, (make, _) in BROKEN.items()},
        "rules": {name: dataclasses.asdict(rule) for name, rule in RULES.items()},
        "pictures": [
            {"width": p.shape[1], "height": p.shape[0], "rgba": base64.b64encode(p).decode()}
            for p in pictures()
        ],
        "nearest": NEAREST,
    }
    blob = json.dumps(cases).replace("<", "\\u003c")
    with tempfile.TemporaryDirectory() as scratch:
        page = Path(scratch, "page-models.html")
        page.write_text(
            '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>\n'
            f'<script id="cases" type="application/json">{blob}</script>\n'
            f"<script>\n{SCRIPTS['MODELS'].read_text(encoding='utf-8')}\n</script>\n"
            f"<script>\n{HARNESS_JS}\n</script>\n</body></html>\n",
            encoding="utf-8",
        )
        dom = chromium(binary, "--dump-dom", page.as_uri(), profile=Path(scratch, "profile"))
    match = re.search(r'<pre id="report">(.*?)</pre>', dom, re.DOTALL)
    assert match, f"the page never reported; dumped DOM ends with:\n{dom[-2000:]}"
    report = json.loads(html.unescape(match.group(1)))
    assert "error" not in report, report.get("error")
    return report


@pytest.fixture
def results(chromium_binary) -> dict:
    return page_results(chromium_binary)


def torch_probabilities(cnn: Net, pixels: np.ndarray) -> np.ndarray:
    """Net's probabilities in float64, the page's input scaling: (pixel / 255 - mean) / std."""
    x = (pixels.astype(np.float64) / 255 - META["mean"]) / META["std"]
    with torch.no_grad():
        output = copy.deepcopy(cnn).double()(torch.from_numpy(x.reshape(-1, 1, 28, 28)))
    return output.exp().numpy()


@pytest.mark.parametrize("which", ["net", "resized"])
def test_page_cnn_gives_pytorchs_probabilities(results, which):
    cnn = net(0) if which == "net" else resized()
    expected = torch_probabilities(cnn, images())
    got = results[which]
    assert "error" not in got, f"the page: {got['error']}"
    page = np.array([image["probabilities"] for image in got["value"]])
    np.testing.assert_allclose(page, expected, rtol=0, atol=1e-12)
    # The answers depend on the picture: a page that ignored its input would fail above.
    assert np.ptp(expected, axis=0).max() > 1e-3


def test_page_finds_the_nearest_centroids_as_python_does(results):
    expected = kmeans().nearest_centroids(images() / 255, NEAREST)
    got = results["net"]
    assert "error" not in got, f"the page: {got['error']}"
    np.testing.assert_array_equal([image["nearest"] for image in got["value"]], expected)


@pytest.mark.parametrize("dataset", sorted(RULES))
def test_page_prepares_pictures_as_digits_prepare(results, dataset):
    for i, (picture, page) in enumerate(zip(pictures(), results["prepared"][dataset], strict=True)):
        try:
            field = prepare(picture, RULES[dataset]).astype(int)
        except BlankImageError as error:
            assert page == {"error": str(error)}, f"picture {i}"
            continue
        assert "error" not in page, f"picture {i}: the page says {page['error']}"
        difference = np.abs(np.array(page["value"]).reshape(28, 28) - field)
        # A rounding tie tips one level, on a few pixels; a changed rule moves far more.
        assert difference.max() <= 1 and np.count_nonzero(difference) <= 3, f"picture {i}"


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_page_refuses_weights_that_do_not_fit_its_layers(results, case):
    make, message = BROKEN[case]
    assert results["broken"][case] == {"error": message(make())}
