"""Image figures (digit grids) written the same way by every stage that draws them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global figure state

from mnist_pipeline.runtime import atomic_path

SIDE = 28  # image side, pixels
PAD = 3  # blank pixels around each image
DPI = 80
HEADER_PX = 30  # screen pixels for the figure's title


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
    # One mosaic and one imshow, not a subplot per image: plot_centroids 6.7 s -> 0.8 s.
    images = np.asarray(images, dtype=np.float32).reshape(-1, SIDE, SIDE)
    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, math.ceil(len(images) / ncols))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    label = math.ceil(lines * font_pt * 1.3 * DPI / 72 / scale)  # image pixels per title
    cell_w, cell_h = SIDE + 2 * PAD, SIDE + 2 * PAD + label

    mosaic = np.ones((nrows * cell_h, ncols * cell_w), dtype=np.float32)  # white
    low = images.min(axis=(1, 2), keepdims=True)
    span = np.maximum(images.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    for i, image in enumerate((images - low) / span):
        row, col = divmod(i, ncols)
        top, left = row * cell_h + label + PAD, col * cell_w + PAD
        mosaic[top : top + SIDE, left : left + SIDE] = image

    width_px, height_px = mosaic.shape[1] * scale, mosaic.shape[0] * scale
    width_px = max(width_px, 480)  # room for the title over small grids
    fig = Figure(figsize=(width_px / DPI, (height_px + HEADER_PX) / DPI), dpi=DPI)
    ax = fig.add_axes(
        (0, 0, mosaic.shape[1] * scale / width_px, height_px / (height_px + HEADER_PX))
    )
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    ax.axis("off")
    for i, text in enumerate(titles[: len(images)]):
        row, col = divmod(i, ncols)
        x, y = col * cell_w + cell_w / 2, row * cell_h + label + PAD - 0.5
        ax.text(x, y, text, ha="center", va="bottom", fontsize=font_pt, linespacing=1.1)
    if len(images) == 0:
        fig.text(0.5, 0.4, "(none)", ha="center", va="center")
    fig.text(
        0.5,
        1 - (HEADER_PX / 2) / (height_px + HEADER_PX),
        title,
        ha="center",
        va="center",
        fontsize=10,
    )
    with atomic_path(path) as tmp:
        # Matplotlib writes its version as PNG metadata; drop it so bytes depend on data only.
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
