"""Prepare a picture of a digit or a garment the way its data set's images were made.

NIST's digits were fitted into a 20x20 box keeping their aspect ratio, anti-aliasing giving
grey levels, then placed in a 28x28 field with their centre of mass at its centre.
Fashion-MNIST's garments were trimmed, their longest edge resized to 28, and centred by
their bounding box. Both are white ink on black, one byte per pixel. A drawing or photo
must go through the same steps to look like the training data to the models, under its
data set's rule (mnist_pipeline.processed.Preparation, carried in the model's meta):

1. grey levels: luma of the RGB, transparent parts taken as white paper;
2. ink: the paper's level is the median of the border pixels, so dark ink on light paper
   and light ink on dark paper both work; ink is then scaled so that the strongest is 1,
   and ink under a tenth of that counts as paper (shadows, JPEG noise);
3. the ink's bounding box is scaled to fit the rule's box (20x20 or 28x28) by averaging
   over areas, then rounded to bytes like MNIST's pixels;
4. that box is placed in the 28x28 field with its centre of mass, or its own centre, on
   the field's centre.

The demo page does the same steps in JavaScript (`prepare` in stages/demo_page_models.js,
checked against this module by tests/test_page_models.py): keep the two alike, step for
step. Rounding is floor(x + 0.5) in both, and the centre of mass is computed from bytes, so
both sides give the same field up to float noise in step 3.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_pipeline.processed import Preparation
from mnist_pipeline.runtime import PipelineError

FIELD = 28  # the side of the image the models take
PAPER = 0.1  # ink weaker than this fraction of the strongest counts as paper
MIN_CONTRAST = 0.1  # an image whose ink stands less than this above the paper is blank


class BlankImageError(PipelineError):
    """The image has no ink to read: one uniform level, give or take noise."""


def prepare(rgba: np.ndarray, rule: Preparation) -> np.ndarray:
    """An (H, W, 4) uint8 RGBA picture -> the (28, 28) uint8 image of its ink, as `rule` says."""
    return center(fit_box(ink(grey_levels(rgba)), rule.box), rule.center)


def grey_levels(rgba: np.ndarray) -> np.ndarray:
    """Brightness in [0, 1] (ITU-R 601 luma), with transparent pixels taken as white."""
    rgb = rgba[..., :3].astype(np.float64)
    alpha = rgba[..., 3] / 255
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    return luma * alpha + (1 - alpha)


def ink(grey: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] for either polarity: the paper 0, the strongest ink 1.

    Raises BlankImageError when nothing stands out from the paper.
    """
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    paper = float(np.median(border))
    if paper > 0.5:  # light paper: the ink is dark
        grey, paper = 1 - grey, 1 - paper
    contrast = float(grey.max()) - paper
    if contrast < MIN_CONTRAST:
        raise BlankImageError("blank image: no ink stands out from the paper")
    strength = (grey - paper) / contrast
    strength[strength < PAPER] = 0
    return strength


def fit_box(strength: np.ndarray, box: int) -> np.ndarray:
    """The ink's bounding box scaled to fit box x box (aspect kept), as bytes 0-255."""
    rows = np.flatnonzero(strength.any(axis=1))
    cols = np.flatnonzero(strength.any(axis=0))
    crop = strength[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    side = max(height, width)
    out_h = max(1, _round(height * box / side))
    out_w = max(1, _round(width * box / side))
    scaled = area_weights(height, out_h) @ crop @ area_weights(width, out_w).T
    return np.floor(np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: output pixel i is the mean of the input over its share of it.

    Output pixel i covers [i, i + 1) * n_in / n_out of the input; each input pixel weighs
    by how much of it falls inside (a box filter, both shrinking and enlarging).
    """
    step = n_in / n_out
    start = np.arange(n_out)[:, None] * step
    pixel = np.arange(n_in)[None, :]
    overlap = np.minimum(start + step, pixel + 1) - np.maximum(start, pixel)
    return np.clip(overlap, 0, None) / step


def center(box: np.ndarray, by: str) -> np.ndarray:
    """Place `box` in a 28x28 field with its centre of mass (by="mass") or its own centre
    (by="box") on the field's centre.

    Pixel i spans [i, i + 1), so a centre at index c lies at c + 0.5, and the shift that
    puts it nearest to 14 is floor(14 - c): by its own centre, an odd margin's extra pixel
    goes left and top, as in Fashion-MNIST. Ink pushed past the edge is cut off.
    """
    weights = box.astype(np.float64)
    total = weights.sum()
    if total == 0:  # a few specks on a large picture average out to nothing
        raise BlankImageError("blank image: too little ink to show at 28x28 pixels")
    if by == "mass":
        cy = (weights.sum(axis=1) * np.arange(box.shape[0])).sum() / total
        cx = (weights.sum(axis=0) * np.arange(box.shape[1])).sum() / total
    else:
        cy, cx = (box.shape[0] - 1) / 2, (box.shape[1] - 1) / 2
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    top, left = math.floor(FIELD / 2 - cy), math.floor(FIELD / 2 - cx)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + box.shape[0], FIELD), min(left + box.shape[1], FIELD)
    field[y0:y1, x0:x1] = box[y0 - top : y1 - top, x0 - left : x1 - left]
    return field


def _round(x: float) -> int:
    # Half up, as JavaScript's Math.round; Python's round() would round half to even.
    return math.floor(x + 0.5)
