"""Stage plot_centroids: draw the chosen k-means model's centroids as 28x28 images.

Reads: --model (models/kmeans.npz).
Writes: --out (plots/kmeans/centroids.png: one image per centroid, titled with its label).
"""

from __future__ import annotations

import math
from pathlib import Path

from mnist_pipeline.figures import image_grid
from mnist_pipeline.kmeans import KmeansModel, load_model
from mnist_pipeline.runtime import path_args, run_main


def plot_centroids(model: KmeansModel, out: Path) -> None:
    k = len(model.centroids)
    image_grid(
        model.centroids,
        [model.classes[label] for label in model.cluster_labels],
        out,
        title=f"k-means centroids ({k} clusters), titled with each cluster's label",
        ncols=math.ceil(math.sqrt(k)),
        # 16 columns of 68 px for 256 centroids: the page shows the figure near its own size,
        # and titles of 10 px instead of the 6 px that scale 3 and 7 pt shrank to.
        scale=2,
        font_pt=9,
    )


def main() -> None:
    args = path_args(__doc__, "model", "out", outputs=("out",))
    plot_centroids(load_model(args.model), args.out)


if __name__ == "__main__":
    run_main(main)
