"""Stage train_cnn: train the notebook's CNN exactly as the notebook does.

Reads: --data (data/processed/cnn.npz); params cnn.* (seed, epochs, batch_size,
test_batch_size, lr, momentum, log_interval).
Writes: --model (models/cnn.pt, weights with the params that built them);
--train-log (plots/cnn/train_loss.csv: step, epoch, loss every log_interval batches);
--test-log (plots/cnn/test.csv: epoch, test loss and accuracy after each epoch).

The batches are slices of tensors already in memory, shuffled each epoch with a seeded
generator: the same work as the notebook's DataLoader (same network, batch size,
optimizer, epochs, data) without per-sample transforms.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from stages.cnn import Net, device, evaluate, save_checkpoint
from stages.config import CnnParams, load_params
from stages.metrics import accuracy
from stages.processed import ProcessedData, load_processed
from stages.runtime import progress, run_main, write_csv

log = logging.getLogger("stages.train_cnn")


@dataclass
class TrainResult:
    model: Net
    train_log: list[dict]  # step, epoch, loss
    test_log: list[dict]  # epoch, test_loss, test_accuracy


class SGD:
    """The notebook's optimizer, torch.optim.SGD(params, lr, momentum), step for step.

    The same update, bit for bit (tests/test_models.py compares the two): the first step
    sets each momentum buffer to the gradient, later steps do buf = momentum * buf + grad,
    and every step does p -= lr * buf. It exists because the first use of any torch.optim
    optimizer imports torch._dynamo, which takes about 1 s of this stage's 13-15.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float) -> None:
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:  # as torch.optim.SGD: a parameter without a gradient stays put
                continue
            buf = self.buffers[i]
            if buf is None:
                self.buffers[i] = buf = p.grad.clone()
            else:
                buf.mul_(self.momentum).add_(p.grad)
            p.add_(buf, alpha=-self.lr)


def train(data: ProcessedData, params: CnnParams) -> TrainResult:
    """Train a fresh Net on data.train_x/train_y; test after every epoch."""
    torch.manual_seed(params.seed)
    dev = device()
    if dev.type == "cuda":
        # cuDNN may otherwise pick non-deterministic convolution algorithms.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    # channels_last (NHWC): oneDNN's convolutions and above all max-pooling run about 1.5x
    # faster per step in this layout on CPU. Same network, same batches, same arithmetic.
    model = Net().to(dev, memory_format=torch.channels_last)
    optimizer = SGD(model.parameters(), lr=params.lr, momentum=params.momentum)
    x = torch.from_numpy(data.train_x).to(dev)
    y = torch.from_numpy(data.train_y).to(dev)
    shuffle = torch.Generator().manual_seed(params.seed)
    n_batches = (len(x) + params.batch_size - 1) // params.batch_size
    train_log, test_log = [], []

    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=shuffle).to(dev)
        batches = progress(range(n_batches), desc=f"epoch {epoch}/{params.epochs}", unit="batch")
        for batch in batches:
            index = order[batch * params.batch_size : (batch + 1) * params.batch_size]
            optimizer.zero_grad()
            loss = F.nll_loss(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            if batch % params.log_interval == 0:
                step = (epoch - 1) * n_batches + batch
                train_log.append({"step": step, "epoch": epoch, "loss": loss.item()})

        test_loss, predictions = evaluate(model, data.test_x, data.test_y, params.test_batch_size)
        test_accuracy = accuracy(data.test_y, predictions)
        test_log.append({"epoch": epoch, "test_loss": test_loss, "test_accuracy": test_accuracy})
        log.info(
            "epoch %d/%d train_loss %.4f test_loss %.4f test_accuracy %.4f",
            epoch,
            params.epochs,
            train_log[-1]["loss"],
            test_loss,
            test_accuracy,
        )
    # Back to the default layout, so that checkpoints hold ordinary contiguous tensors.
    return TrainResult(model.cpu().to(memory_format=torch.contiguous_format), train_log, test_log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train-log", type=Path, required=True)
    parser.add_argument("--test-log", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params).cnn
    log.info("params: %s; device %s, %d threads", params, device(), torch.get_num_threads())
    result = train(load_processed(args.data), params)
    save_checkpoint(args.model, result.model, params)
    write_csv(args.train_log, result.train_log)
    write_csv(args.test_log, result.test_log)


if __name__ == "__main__":
    run_main(main)
