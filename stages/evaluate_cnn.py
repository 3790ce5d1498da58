"""Stage evaluate_cnn: score the trained CNN on the test set.

Reads: --model (models/cnn.pt), --data (data/processed/cnn); params cnn.test_batch_size,
compute.threads (it evaluates on the CPU).
Writes: --metrics (metrics/cnn.json: test loss and accuracy);
--made-with (made_with/evaluate_cnn.json: what trained the model and what scored it, each
as package versions, CPU, torch threads and device; beside the metrics, not among them, so
that `dvc metrics show` stays narrow);
--per-class (plots/cnn/per_class.csv: accuracy within each class);
--confusion (plots/cnn/confusion.csv: actual and predicted class of each test image);
--examples (plots/cnn/examples.png: the first six test images, the notebook's figure);
--misclassified (plots/cnn/misclassified.png: up to 36 misclassified test images).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mnist_pipeline.cnn import Net, evaluate, load_checkpoint, made_with, use_threads
from mnist_pipeline.config import check_batch_size, load_params
from mnist_pipeline.figures import image_grid
from mnist_pipeline.metrics import accuracy, confusion_rows, per_class_rows
from mnist_pipeline.processed import CNN_IMAGE, ProcessedData, load_processed
from mnist_pipeline.runtime import all_or_none, path_args, run_main, write_csv, write_json

log = logging.getLogger("stages.evaluate_cnn")

N_EXAMPLES = 6
MAX_MISCLASSIFIED = 36


def score(model: Net, data: ProcessedData, batch_size: int) -> tuple[dict, np.ndarray]:
    """Metrics for metrics/cnn.json and the predicted class of every test image."""
    loss, predicted = evaluate(model, data.test_x, data.test_y, batch_size)
    metrics = {"test_loss": loss, "test_accuracy": accuracy(data.test_y, predicted)}
    return metrics, predicted


def draw(data: ProcessedData, predicted: np.ndarray, examples: Path, misclassified: Path) -> None:
    names = data.classes
    n = min(N_EXAMPLES, len(data.test_y))
    image_grid(
        data.test_x[:n],
        [
            f"true {names[t]}\npred {names[p]}"
            for t, p in zip(data.test_y[:n], predicted[:n], strict=True)
        ],
        examples,
        title="Test images: true and predicted labels",
        ncols=3,
        scale=6,
        font_pt=12,
    )
    wrong = np.flatnonzero(predicted != data.test_y)[:MAX_MISCLASSIFIED]
    image_grid(
        data.test_x[wrong],
        [f"true {names[data.test_y[i]]}\npred {names[predicted[i]]}" for i in wrong],
        misclassified,
        title=f"Misclassified test images (first {len(wrong)})",
        scale=4,
        font_pt=9,
    )


def main() -> None:
    outputs = ("metrics", "made-with", "per-class", "confusion", "examples", "misclassified")
    args = path_args(__doc__, "model", "data", *outputs, outputs=outputs)
    everything = load_params()
    params = everything.cnn
    use_threads(everything.compute.threads)
    log.info("test_batch_size %d", params.test_batch_size)
    checkpoint = load_checkpoint(args.model)
    model = checkpoint.model
    log.info("model trained with %s", checkpoint.params)
    data = load_processed(args.data, CNN_IMAGE, uses=("test",))
    check_batch_size("cnn.test_batch_size", params.test_batch_size, len(data.test_y), "test images")
    metrics, predicted = score(model, data, params.test_batch_size)
    log.info("test_loss %.4f test_accuracy %.4f", metrics["test_loss"], metrics["test_accuracy"])
    paths = (args.metrics, args.made_with, args.per_class, args.confusion)
    paths += (args.examples, args.misclassified)
    with all_or_none(*paths) as (metrics_path, made, per_class, confusion, examples, wrong):
        write_json(metrics_path, metrics)
        write_json(made, {"train": checkpoint.made_with, "evaluate": made_with()})
        write_csv(per_class, per_class_rows(data.test_y, predicted, data.classes))
        write_csv(confusion, confusion_rows(data.test_y, predicted, data.classes))
        draw(data, predicted, examples, wrong)


if __name__ == "__main__":
    run_main(main)
