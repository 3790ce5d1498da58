"""Image figures (digit grids) written the same way by every stage that draws them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global figure state

from mnist_pipeline.runtime import atomic_path

SIDE = 28  # image side, pixels
PAD = 3  # blank pixels around each image
DPI = 80
HEADER_PX = 30  # screen pixels for the figure's title


@dataclass(frozen=True)
class Grid:
    """Where the images go: cells of SIDE + 2 * PAD image pixels, `label` more for a title."""

    ncols: int
    nrows: int
    label: int  # image pixels above each image for its title

    @property
    def cell_w(self) -> int:
        return SIDE + 2 * PAD

    @property
    def cell_h(self) -> int:
        return SIDE + 2 * PAD + self.label

    @classmethod
    def for_images(cls, n: int, titles: list[str], ncols: int, scale: int, font_pt: float):
        ncols = max(1, min(ncols, n))
        lines = max((t.count("\n") + 1 for t in titles), default=1)
        label = math.ceil(lines * font_pt * 1.3 * DPI / 72 / scale)
        return cls(ncols, max(1, math.ceil(n / ncols)), label)


def image_grid(
    images: np.ndarray,
    titles: list[str],
    path: Path | str,
    title: str,
    ncols: int = 6,
    scale: int = 3,
    font_pt: float = 7,
) -> None:
    """Draw 28x28 images in a grid, each with its title above it, as a PNG with no timestamp.

    `scale` is screen pixels per image pixel and `font_pt` the size of the image titles:
    small for a grid of 256 centroids, large where a few images should read at 100% zoom.

    Each image is scaled to its own [min, max], as imshow does for a single image.
    """
    images = np.asarray(images, dtype=np.float32).reshape(-1, SIDE, SIDE)
    grid = Grid.for_images(len(images), titles, ncols, scale, font_pt)
    fig = _figure(mosaic(images, grid), grid, titles[: len(images)], scale, font_pt)
    if len(images) == 0:
        fig.text(0.5, 0.4, "(none)", ha="center", va="center")
    header = HEADER_PX / fig.get_figheight() / DPI  # the title's band, as a fraction
    fig.text(0.5, 1 - header / 2, title, ha="center", va="center", fontsize=10)
    with atomic_path(path) as tmp:
        # Matplotlib writes its version as PNG metadata; drop it so bytes depend on data only.
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})


def mosaic(images: np.ndarray, grid: Grid) -> np.ndarray:
    """One white image with each image, scaled to [0, 1], in its cell."""
    # One mosaic and one imshow, not a subplot per image: plot_centroids 6.7 s -> 0.8 s.
    out = np.ones((grid.nrows * grid.cell_h, grid.ncols * grid.cell_w), dtype=np.float32)
    low = images.min(axis=(1, 2), keepdims=True)
    span = np.maximum(images.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    for i, image in enumerate((images - low) / span):
        row, col = divmod(i, grid.ncols)
        top, left = row * grid.cell_h + grid.label + PAD, col * grid.cell_w + PAD
        out[top : top + SIDE, left : left + SIDE] = image
    return out


def _figure(
    pixels: np.ndarray, grid: Grid, titles: list[str], scale: int, font_pt: float
) -> Figure:
    """The mosaic at `scale` screen pixels per pixel under a band for the title, and each
    image's title above it."""
    width_px, height_px = pixels.shape[1] * scale, pixels.shape[0] * scale
    width_px = max(width_px, 480)  # room for the title over small grids
    fig = Figure(figsize=(width_px / DPI, (height_px + HEADER_PX) / DPI), dpi=DPI)
    ax = fig.add_axes(
        (0, 0, pixels.shape[1] * scale / width_px, height_px / (height_px + HEADER_PX))
    )
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    ax.axis("off")
    for i, text in enumerate(titles):
        row, col = divmod(i, grid.ncols)
        x, y = col * grid.cell_w + grid.cell_w / 2, row * grid.cell_h + grid.label + PAD - 0.5
        ax.text(x, y, text, ha="center", va="bottom", fontsize=font_pt, linespacing=1.1)
    return fig
