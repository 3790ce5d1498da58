"""Stage kmeans_test: score the chosen k-means model on the test set.

Reads: --model (models/kmeans.npz), --data (data/processed/kmeans); params
compute.threads.
Writes: --metrics (metrics/kmeans.json: the test accuracy, as kmeans_accuracy: a name no
other metrics file uses keeps `dvc exp show` narrow; the cluster count tested is the param
kmeans.test_clusters, which `dvc exp show` lists);
--made-with (made_with/kmeans_test.json: what fitted the model and what scored it, each
as package versions, CPU and threads);
--per-class (plots/kmeans/per_class.csv: accuracy within each class);
--confusion (plots/kmeans/confusion.csv: actual and predicted class of each test image).
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import homogeneity_score

from mnist_pipeline.config import load_params
from mnist_pipeline.kmeans import KmeansModel, load_model, made_with, thread_limit
from mnist_pipeline.metrics import accuracy, confusion_rows, per_class_rows
from mnist_pipeline.processed import FLAT_IMAGE, ProcessedData, load_processed
from mnist_pipeline.runtime import (
    all_or_none,
    damaged,
    path_args,
    run_main,
    write_csv,
    write_json,
)

log = logging.getLogger("stages.kmeans_test")


def score(model: KmeansModel, data: ProcessedData) -> tuple[dict, np.ndarray]:
    """Metrics for metrics/kmeans.json and the predicted class of every test image."""
    clusters = model.nearest_centroids(data.test_x)[:, 0]
    predicted = model.cluster_labels[clusters]
    metrics = {
        "kmeans_accuracy": accuracy(data.test_y, predicted),
    }
    log.info("test_homogeneity %.4f", homogeneity_score(data.test_y, clusters))
    return metrics, predicted


def main() -> None:
    outputs = ("metrics", "made-with", "per-class", "confusion")
    args = path_args(__doc__, "model", "data", *outputs, outputs=outputs)
    data = load_processed(args.data, FLAT_IMAGE, uses=("test",))
    model = load_model(args.model)
    if len(model.centroids) > len(data.train_y):  # kmeans.fit refuses to make such a model
        what = (
            f"{len(model.centroids)} centroids, more than the {len(data.train_y)} training "
            f"images in {args.data} that k-means fits them to"
        )
        raise damaged(args.model, what, "kmeans_sweep")
    with thread_limit(load_params().compute.threads):
        metrics, predicted = score(model, data)
        scored_with = made_with()  # the threads in force
    log.info("n_clusters %d test_accuracy %.4f", len(model.centroids), metrics["kmeans_accuracy"])
    paths = (args.metrics, args.made_with, args.per_class, args.confusion)
    with all_or_none(*paths) as (metrics_path, made, per, conf):
        write_json(metrics_path, metrics)
        write_json(made, {"fit": model.made_with, "test": scored_with})
        write_csv(per, per_class_rows(data.test_y, predicted, data.classes))
        write_csv(conf, confusion_rows(data.test_y, predicted, data.classes))


if __name__ == "__main__":
    run_main(main)
