"""Image figures (digit grids) written the same way by every stage that draws them."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or dvc queue workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.runtime import atomic_path  # noqa: E402


def image_grid(
    images: np.ndarray,
    titles: list[str],
    path: Path | str,
    title: str,
    ncols: int = 6,
) -> None:
    """Draw 28x28 images in a grid, each with its title, as a PNG with no timestamp."""
    images = np.asarray(images).reshape(len(images), 28, 28)
    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, math.ceil(len(images) / ncols))
    # Constrained layout keeps the suptitle clear of the panel titles; tight_layout does not.
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(max(4.0, 1.6 * ncols), 1.8 * nrows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image, cmap="gray", interpolation="none")
        ax.set_title(label, fontsize=8)
    if len(images) == 0:
        axes[0, 0].text(0.5, 0.5, "(none)", ha="center", va="center")
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        # Matplotlib writes its version as PNG metadata; drop it so bytes depend on data only.
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
