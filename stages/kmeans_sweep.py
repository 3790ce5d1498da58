"""Stage kmeans_sweep: MiniBatchKMeans for each cluster count, scored on the training set.

Reads: --data (data/processed/kmeans); params kmeans.n_clusters, kmeans.test_clusters,
kmeans.batch_size, kmeans.n_init, kmeans.max_iter, kmeans.random_state; compute.threads.
Writes: --plot (plots/kmeans/sweep.csv: inertia, homogeneity and accuracy per cluster
count, in increasing count); --model (models/kmeans.npz: centroids and cluster labels of
the kmeans.test_clusters model, and what fitted it: package versions, CPU, threads). The
per-count numbers are plot data, not metrics: as metrics they filled `dvc exp show` with
24 columns before the test accuracies.
"""

from __future__ import annotations

import logging

from sklearn.metrics import homogeneity_score

from mnist_pipeline.config import KmeansParams, check_batch_size, load_params
from mnist_pipeline.kmeans import (
    KmeansModel,
    fit,
    infer_cluster_labels,
    made_with,
    save_model,
    thread_limit,
)
from mnist_pipeline.metrics import accuracy
from mnist_pipeline.processed import FLAT_IMAGE, ProcessedData, load_processed
from mnist_pipeline.runtime import (
    all_or_none,
    check_free_space,
    path_args,
    progress,
    run_main,
    write_csv,
)

log = logging.getLogger("stages.kmeans_sweep")

# What kmeans.npz holds besides its float32 centroids (cluster labels, class names, what
# made it, zip headers): a few KiB for the largest sweeps.
MODEL_EXTRA_BYTES = 16 * 1024


def model_bytes(params: KmeansParams, features: int) -> int:
    """About the saved model's size, known before the sweep: a full disk stops the stage
    before its work, not after it."""
    return params.test_clusters * features * 4 + MODEL_EXTRA_BYTES


def sweep(data: ProcessedData, params: KmeansParams) -> tuple[list[dict], KmeansModel]:
    """One row of scores per cluster count (increasing), and the params.test_clusters model."""
    check_batch_size("kmeans.batch_size", params.batch_size, len(data.train_y), "training images")
    rows, chosen = [], None
    for k in progress(sorted(params.n_clusters), desc="k-means sweep", unit="fits"):
        estimator = fit(data.train_x, k, params)
        cluster_labels = infer_cluster_labels(estimator.labels_, data.train_y, k)
        row = {
            "n_clusters": k,
            "inertia": float(estimator.inertia_),
            "homogeneity": float(homogeneity_score(data.train_y, estimator.labels_)),
            "accuracy": accuracy(data.train_y, cluster_labels[estimator.labels_]),
        }
        log.info(
            "n_clusters %d inertia %.1f homogeneity %.4f accuracy %.4f",
            k,
            row["inertia"],
            row["homogeneity"],
            row["accuracy"],
        )
        rows.append(row)
        if k == params.test_clusters:
            centroids = estimator.cluster_centers_.astype("float32")
            chosen = KmeansModel(centroids, cluster_labels, data.classes, made_with())
    return rows, chosen


def main() -> None:
    args = path_args(__doc__, "data", "plot", "model", outputs=("plot", "model"))
    everything = load_params()
    params = everything.kmeans
    log.info("params: %s; %d threads", params, everything.compute.threads)
    data = load_processed(args.data, FLAT_IMAGE, uses=("train",))
    check_free_space(args.model, model_bytes(params, data.train_x.shape[1]))
    with thread_limit(everything.compute.threads):
        rows, model = sweep(data, params)
    with all_or_none(args.plot, args.model) as (plot, model_path):
        write_csv(plot, rows)
        save_model(model_path, model)


if __name__ == "__main__":
    run_main(main)
