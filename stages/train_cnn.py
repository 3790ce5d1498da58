"""Stage train_cnn: train the notebook's CNN exactly as the notebook does.

Reads: --data (data/processed/cnn); params cnn.* (seed, epochs, batch_size,
test_batch_size, lr, momentum, log_interval), compute.threads and compute.device.
Writes: --model (models/cnn.pt, weights with the params that built them, and the data
set's name, class names and normalization, read from --data, and what trained them:
package versions, CPU, torch threads);
--live (dvclive/, written by DVCLive while training runs): plots/metrics/train/
loss.tsv, the training loss every log_interval batches; plots/metrics/test/loss.tsv and
accuracy.tsv after each epoch; metrics.json, the latest of each.

The batches are slices of tensors already in memory, shuffled each epoch with a seeded
generator: the same work as the notebook's DataLoader (same network, batch size,
optimizer, epochs, data) without per-sample transforms.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from dvclive import Live
from scmrepo.exceptions import SCMError

from mnist_pipeline.cnn import Net, device, evaluate, made_with, save_checkpoint, use_threads
from mnist_pipeline.config import CnnParams, check_batch_size, load_params
from mnist_pipeline.metrics import accuracy
from mnist_pipeline.processed import CNN_IMAGE, ProcessedData, load_processed
from mnist_pipeline.runtime import PipelineError, path_args, progress, run_main

log = logging.getLogger("stages.train_cnn")


@dataclass
class TrainResult:
    model: Net
    train_log: list[dict]  # step, epoch, loss
    test_log: list[dict]  # epoch, test_loss, test_accuracy
    epoch_seconds: list[float]  # wall time of each epoch's training, without the test pass


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the kernel.

    With glibc's defaults every training step returns a few MB to the kernel and
    page-faults them back in on the next step (300-1,000 faults a step). Blocks under 32 MB
    now come from the heap, and the heap is not trimmed. Same results, same peak memory.
    Without glibc (macOS, Windows) it does nothing.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def train(
    data: ProcessedData,
    params: CnnParams,
    live: Live | None = None,
    dev: torch.device | None = None,
) -> TrainResult:
    """Train a fresh Net on data.train_x/train_y; test after every epoch.

    With `live`, each logged training loss (step: the batch, counted over all epochs) and
    each epoch's test loss and accuracy (step: the epoch) are written through DVCLive as
    they happen, so `dvc exp show` and editors show a running experiment's progress.
    """
    check_batch_size("cnn.batch_size", params.batch_size, len(data.train_y), "training images")
    check_batch_size("cnn.test_batch_size", params.test_batch_size, len(data.test_y), "test images")
    dev = dev or torch.device("cpu")
    model = seeded_net(params.seed, dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum)
    x = torch.from_numpy(data.train_x).to(dev)
    y = torch.from_numpy(data.train_y).to(dev)
    shuffle = torch.Generator().manual_seed(params.seed)
    result = TrainResult(model, train_log=[], test_log=[], epoch_seconds=[])
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(x), generator=shuffle).to(dev)
        result.train_log += train_epoch(model, optimizer, x, y, order, epoch, params, live)
        result.epoch_seconds.append(time.perf_counter() - started)
        result.test_log.append(evaluate_epoch(model, data, epoch, params, live))
        log.info(
            "epoch %d/%d train_loss %.4f test_loss %.4f test_accuracy %.4f (%.1f s)",
            epoch,
            params.epochs,
            result.train_log[-1]["loss"],
            result.test_log[-1]["test_loss"],
            result.test_log[-1]["test_accuracy"],
            time.perf_counter() - started,
        )
    # Back to the default layout, so that checkpoints hold ordinary contiguous tensors.
    result.model = model.cpu().to(memory_format=torch.contiguous_format)
    return result


def seeded_net(seed: int, dev: torch.device) -> Net:
    """A fresh Net, its weights drawn from `seed`, on `dev` in the layout training uses."""
    torch.manual_seed(seed)
    if dev.type == "cuda":
        # cuDNN may otherwise pick non-deterministic convolution algorithms.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    # channels_last (NHWC): oneDNN's convolutions and above all max-pooling run about 1.5x
    # faster per step in this layout on CPU. Same network, same batches, same arithmetic.
    return Net().to(dev, memory_format=torch.channels_last)


def train_epoch(
    model: Net,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    epoch: int,
    params: CnnParams,
    live: Live | None,
) -> list[dict]:
    """One pass over x, y in batches taken in `order`; return the logged training losses."""
    model.train()
    n_batches = (len(x) + params.batch_size - 1) // params.batch_size
    logged = []
    batches = progress(range(n_batches), desc=f"epoch {epoch}/{params.epochs}", unit="batches")
    for batch in batches:
        index = order[batch * params.batch_size : (batch + 1) * params.batch_size]
        optimizer.zero_grad()
        loss = F.nll_loss(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        if batch % params.log_interval == 0:
            step = (epoch - 1) * n_batches + batch
            # Checked where the loss is read anyway: once a weight is NaN, every later
            # loss is too, so the check sees it within log_interval batches.
            value = loss.item()
            _require_finite(value, f"the training loss at epoch {epoch}, batch {batch}")
            logged.append({"step": step, "epoch": epoch, "loss": value})
            if live:
                live.step = step
                live.log_metric("train/loss", value)
    return logged


def evaluate_epoch(
    model: Net, data: ProcessedData, epoch: int, params: CnnParams, live: Live | None
) -> dict:
    """Test after an epoch; with `live`, write the epoch's metrics for `dvc exp show`."""
    test_loss, predictions = evaluate(model, data.test_x, data.test_y, params.test_batch_size)
    _require_finite(test_loss, f"the test loss after epoch {epoch}")
    test_accuracy = accuracy(data.test_y, predictions)
    if live:
        live.step = epoch
        live.log_metric("test/loss", test_loss)
        live.log_metric("test/accuracy", test_accuracy)
        live.next_step()  # writes metrics.json: the latest epoch, while training goes on
    return {"epoch": epoch, "test_loss": test_loss, "test_accuracy": test_accuracy}


def _require_finite(loss: float, what: str) -> None:
    if not math.isfinite(loss):
        raise PipelineError(
            f"{what} is {loss}: training diverged; lower cnn.lr or cnn.momentum and run again"
        )


def remove_live_outputs(live: Path) -> None:
    """Remove what DVCLive wrote into `live`, and nothing else: a .gitignore there may be
    tracked by git (DVC wrote one before .gitignore listed DVCLive's files)."""
    for name in ("plots", "metrics.json"):
        path = live / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        live.rmdir()  # only when nothing else is left in it


def main() -> None:
    args = path_args(__doc__, "data", "model", "live", outputs=("model", "live"))
    keep_freed_memory()  # an epoch: 2.0-2.1 s with it, 2.5-4.1 s without (AMD EPYC VM)
    everything = load_params()
    params, compute = everything.cnn, everything.compute
    use_threads(compute.threads)
    dev = device(compute.device)
    log.info("params: %s; device %s, %d threads", params, dev, torch.get_num_threads())
    data = load_processed(args.data, CNN_IMAGE)
    # dvc.yaml declares these outputs itself (dvcyaml=False): a stage restored from the
    # run-cache never runs this code. No report page, no experiment commits of its own.
    try:
        live = Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None)
    except SCMError as exc:  # DVCLive asks git for HEAD, which a repo without commits lacks
        raise PipelineError(
            f"DVCLive cannot start ({exc}): make a first git commit, then run again"
        ) from None
    try:
        with live:
            result = train(data, params, live, dev)
        save_checkpoint(args.model, result.model, params, data.meta(), made_with(dev))
    except BaseException:
        # DVCLive writes as training goes (so that its progress can be followed): a run that
        # stops early removes what it wrote, leaving no outputs rather than half of them.
        remove_live_outputs(args.live)
        raise


if __name__ == "__main__":
    run_main(main)
