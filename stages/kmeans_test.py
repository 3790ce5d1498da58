"""Stage kmeans_test: score the chosen k-means model on the test set.

Reads: --model (models/kmeans.npz), --data (data/processed/kmeans).
Writes: --metrics (metrics/kmeans.json: the test accuracy, as kmeans_accuracy: a name no
other metrics file uses keeps `dvc exp show` narrow; the cluster count tested is the param
kmeans.test_clusters, which `dvc exp show` lists);
--per-class (plots/kmeans/per_class.csv: accuracy within each class);
--confusion (plots/kmeans/confusion.csv: actual and predicted class of each test image).
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import homogeneity_score

from mnist_pipeline.kmeans import KmeansModel, load_model
from mnist_pipeline.metrics import accuracy, confusion_rows, per_class_rows
from mnist_pipeline.processed import ProcessedData, load_processed
from mnist_pipeline.runtime import all_or_none, path_args, run_main, write_csv, write_json

log = logging.getLogger("stages.kmeans_test")


def score(model: KmeansModel, data: ProcessedData) -> tuple[dict, np.ndarray]:
    """Metrics for metrics/kmeans.json and the predicted class of every test image."""
    clusters = model.assign(data.test_x)
    predicted = model.cluster_labels[clusters]
    metrics = {
        "kmeans_accuracy": accuracy(data.test_y, predicted),
    }
    log.info("test_homogeneity %.4f", homogeneity_score(data.test_y, clusters))
    return metrics, predicted


def main() -> None:
    outputs = ("metrics", "per-class", "confusion")
    args = path_args(__doc__, "model", "data", *outputs, outputs=outputs)
    data = load_processed(args.data, uses=("test",))
    model = load_model(args.model)
    metrics, predicted = score(model, data)
    log.info("n_clusters %d test_accuracy %.4f", len(model.centroids), metrics["kmeans_accuracy"])
    with all_or_none(args.metrics, args.per_class, args.confusion) as (metrics_path, per, conf):
        write_json(metrics_path, metrics)
        write_csv(per, per_class_rows(data.test_y, predicted, data.classes))
        write_csv(conf, confusion_rows(data.test_y, predicted, data.classes))


if __name__ == "__main__":
    run_main(main)
