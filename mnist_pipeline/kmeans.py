"""k-means as the notebook uses it: fit, label clusters by majority vote, classify.

The saved model (models/kmeans.npz) holds only arrays: the centroids, each cluster's
label, the class names and what fitted it (JSON text). Loading it runs no code, unlike a
pickled estimator.

scikit-learn is imported inside the functions that use it: importing it takes about 1 s,
and plot_centroids, which only reads the saved arrays, should not pay for it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import threadpoolctl

from mnist_pipeline.environment import describe
from mnist_pipeline.runtime import PipelineError, atomic_path, damaged

if TYPE_CHECKING:  # only an annotation: kmeans_test and plot_centroids do not read params
    from sklearn.cluster import MiniBatchKMeans

    from mnist_pipeline.config import KmeansParams


ROWS_AT_A_TIME = 2048  # rows of x whose distances nearest_centroids computes at once


@dataclass(frozen=True)
class KmeansModel:
    centroids: np.ndarray  # (k, 784) float32
    cluster_labels: np.ndarray  # (k,) int64: the class each cluster stands for
    classes: tuple[str, ...]
    made_with: dict = field(default_factory=dict)  # what fitted it: made_with() below

    def nearest_centroids(self, x: np.ndarray, n: int = 1) -> np.ndarray:
        """(len(x), n): the indices of the n centroids nearest to each row of x, nearest
        first, ties to the lower index.

        The one nearest-centroid rule of the pipeline (kmeans_test, mnist-predict, and what
        the demo page is checked against): squared Euclidean distances in float64, as the
        page's JavaScript computes them. numpy, not scikit-learn: mnist-predict would pay
        about 1 s to import it. On the full Fashion-MNIST test set scikit-learn's search
        (pairwise_distances_argmin) finds the same centroid for every image; the closest
        call there is 8.6e-5 between the two nearest, against float64 rounding of 1e-12.
        """
        centroids = self.centroids.astype(np.float64)
        squares = np.einsum("ij,ij->i", centroids, centroids)
        found = []
        # In blocks of rows: kmeans_test's 10,000 rows at once took 355 MB, in blocks 220 MB.
        for start in range(0, len(x), ROWS_AT_A_TIME):
            rows = np.asarray(x[start : start + ROWS_AT_A_TIME], dtype=np.float64)
            distances = np.einsum("ij,ij->i", rows, rows)[:, None] - 2 * rows @ centroids.T
            distances += squares
            # argmin takes the first of equal values, as the stable sort does.
            found.append(
                distances.argmin(axis=1)[:, None]
                if n == 1
                else np.argsort(distances, axis=1, kind="stable")[:, :n]
            )
        return np.concatenate(found) if found else np.empty((0, n), dtype=np.intp)

    def predicted_classes(self, x: np.ndarray) -> np.ndarray:
        """The class index of each row of x: the label of its nearest centroid."""
        return self.cluster_labels[self.nearest_centroids(x)[:, 0]]


# The packages whose versions can change a k-means result.
PACKAGES = ("scikit-learn", "scipy", "numpy")


def thread_limit(threads: int) -> threadpoolctl.ThreadpoolController:
    """A context in which scikit-learn's OpenMP and the BLAS use `threads` threads
    (compute.threads). scikit-learn is imported first: only loaded libraries are limited."""
    import sklearn.cluster  # noqa: F401 - loads the OpenMP runtime to be limited

    return threadpoolctl.threadpool_limits(limits=threads)


def made_with() -> dict:
    """The environment, CPU and thread count of a k-means result (scikit-learn's OpenMP)."""
    threads = max((pool["num_threads"] for pool in threadpoolctl.threadpool_info()), default=1)
    return describe(PACKAGES, threads)


def fit(x: np.ndarray, n_clusters: int, params: KmeansParams) -> MiniBatchKMeans:
    """MiniBatchKMeans with every result-changing argument taken from params."""
    if n_clusters > len(x):
        raise PipelineError(
            f"kmeans.n_clusters: {n_clusters} clusters need at least as many training images, "
            f"but there are {len(x)}"
        )
    from sklearn.cluster import MiniBatchKMeans

    return MiniBatchKMeans(
        n_clusters=n_clusters,
        batch_size=params.batch_size,
        n_init=params.n_init,
        max_iter=params.max_iter,
        random_state=params.random_state,
    ).fit(x)


def infer_cluster_labels(clusters: np.ndarray, y: np.ndarray, n_clusters: int) -> np.ndarray:
    """The most common true label in each cluster (ties: the smaller label).

    A cluster no training image fell into gets the most common label overall.
    """
    counts = np.zeros((n_clusters, int(y.max()) + 1), dtype=np.int64)
    np.add.at(counts, (clusters, y), 1)
    labels = counts.argmax(axis=1)
    labels[counts.sum(axis=1) == 0] = np.bincount(y).argmax()
    return labels.astype(np.int64)


def save_model(path: Path | str, model: KmeansModel) -> None:
    """An uncompressed .npz of plain arrays (np.savez: fixed member dates, equal bytes)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez(
            file,
            centroids=model.centroids,
            cluster_labels=model.cluster_labels,
            classes=np.array(model.classes, dtype=str),
            made_with=np.array(json.dumps(model.made_with, sort_keys=True)),
        )


# The most centroids a model the pipeline made can have: config.MAX_CLUSTERS, the largest
# count kmeans.n_clusters allows (a test ties the two; importing config here would make
# plot_centroids depend on it). A file declaring 10 million asked numpy for 29 GiB before
# anything was checked, and 4,096 centroids took plot_centroids 6.1 s and 2.2 GB.
MAX_CENTROIDS = 1024
MAX_CLASSES = 100  # the data sets have 10
MAX_TEXT = 65_536  # characters in a class name or the made_with record

# Each member's allowed (kind, shape) before it is read: dtype kinds as numpy.dtype.kind,
# None for a length checked against MAX_CENTROIDS or MAX_CLASSES.
_MEMBERS = {
    "centroids": ("f", ("k", 28 * 28)),
    "cluster_labels": ("iu", ("k",)),
    "classes": ("U", ("c",)),
    "made_with": ("U", ()),
}


def load_model(path: Path | str) -> KmeansModel:
    """The model saved by save_model; loading never unpickles, so it never runs code."""
    not_npz = "not an .npz model (cut short, or another kind of file)"
    if Path(path).is_dir():
        raise damaged(path, "a folder, not a model file", "kmeans_sweep")
    if Path(path).exists() and not zipfile.is_zipfile(path):  # a .npy or a text file, say
        raise damaged(path, not_npz, "kmeans_sweep")
    try:
        problem = _declared_problem(path)
        if problem:
            raise damaged(path, f"{problem}, so the file is damaged", "kmeans_sweep")
        with np.load(path, allow_pickle=False) as arrays:
            model = KmeansModel(
                centroids=arrays["centroids"],
                cluster_labels=arrays["cluster_labels"],
                classes=tuple(str(c) for c in arrays["classes"]),
                made_with=json.loads(str(arrays["made_with"])) if "made_with" in arrays else {},
            )
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run `dvc repro kmeans_sweep` to make it") from None
    except (zipfile.BadZipFile, EOFError):  # a zip whose members are cut short
        raise damaged(path, not_npz, "kmeans_sweep") from None
    except KeyError as exc:
        what = f"an .npz file, but not a model that kmeans_sweep saved (no {exc})"
        raise damaged(path, what, "kmeans_sweep") from None
    except (OSError, ValueError) as exc:
        what = f"an .npz model damaged inside ({' '.join(str(exc).split())})"
        raise damaged(path, what, "kmeans_sweep") from None
    problem = _problem(model)
    if problem:
        raise damaged(path, f"{problem}, so the file is damaged", "kmeans_sweep")
    return model


def _declared_problem(path: Path | str) -> str | None:
    """What the arrays' headers declare that no model of the pipeline can be, read before
    any array is allocated: a header may claim billions of centroids in a file of bytes."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if name not in _MEMBERS:
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
            problem = _shape_problem(name, shape, dtype)
            if problem:
                return problem
    return None


def _shape_problem(name: str, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    kinds, allowed = _MEMBERS[name]
    limits = {"k": MAX_CENTROIDS, "c": MAX_CLASSES}
    fits = len(shape) == len(allowed) and all(
        1 <= size <= limits[want] if isinstance(want, str) else size == want
        for size, want in zip(shape, allowed, strict=False)
    )
    if dtype.kind not in kinds or (dtype.kind == "U" and dtype.itemsize // 4 > MAX_TEXT):
        return f"{name} is declared as {dtype}, which a model of the pipeline never holds"
    if not fits:
        what = {
            "centroids": f"(k, {28 * 28}) with k from 1 to {MAX_CENTROIDS}",
            "cluster_labels": f"(k,) with k from 1 to {MAX_CENTROIDS}",
            "classes": f"(c,) with c from 1 to {MAX_CLASSES}",
            "made_with": "() (one text)",
        }[name]
        return f"{name} is declared with shape {shape}, not {what}"
    return None


def _problem(model: KmeansModel) -> str | None:
    """What makes a loaded model unusable (it would crash or draw garbage), if anything.
    Each array's own shape and kind were checked from its header (_declared_problem)."""
    centroids, labels = model.centroids, model.cluster_labels
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(centroids),):
        return f"cluster_labels are {labels.dtype} {labels.shape}, not {len(centroids)} integers"
    if labels.min() < 0 or labels.max() >= len(model.classes):
        return f"a cluster label is outside 0-{len(model.classes) - 1}"
    unprintable = [c for c in model.classes if not c.isprintable()]
    if unprintable:
        return f"class name {unprintable[0]!r} holds control characters"
    if not np.isfinite(centroids).all():
        return "centroids hold NaN or infinite values"
    return None
