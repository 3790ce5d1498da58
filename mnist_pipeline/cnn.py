"""The notebook's CNN, its evaluation loop, and the checkpoint format (models/cnn.pt)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_pipeline.config import CnnParams
from mnist_pipeline.environment import describe
from mnist_pipeline.processed import meta_problem
from mnist_pipeline.runtime import PipelineError, atomic_path, damaged


class Net(nn.Module):
    """conv(1->10,5) -> pool -> relu -> conv(10->20,5) -> dropout2d -> pool -> relu
    -> fc(320->50) -> relu -> dropout -> fc(50->10) -> log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


# The packages whose versions can change the CNN's numbers.
PACKAGES = ("torch", "numpy")


def made_with(dev: torch.device | None = None) -> dict:
    """The environment, CPU, torch thread count and device of a CNN result."""
    return describe(PACKAGES, torch.get_num_threads()) | {"device": str(dev or "cpu")}


def use_threads(threads: int) -> None:
    """compute.threads for torch (its own pool, and OpenMP's for oneDNN)."""
    torch.set_num_threads(threads)


def device(choice: str = "auto") -> torch.device:
    """compute.device: `auto` takes the accelerator torch finds (CUDA, Apple's MPS, ...) and
    the notebook's CPU path otherwise; a named device must be there."""
    if choice == "auto":
        found = (
            torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        )
        return found or torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(choice, False):
        raise PipelineError(
            f"compute.device: {choice} is not available here; set compute.device to auto or cpu"
        )
    return torch.device(choice)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, np.ndarray]:
    """Mean NLL loss over all samples and the predicted class of each, in batches."""
    model.eval()
    dev = next(model.parameters()).device
    total_loss = 0.0
    predictions = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size]).to(dev)
        yb = torch.from_numpy(y[start : start + batch_size]).to(dev)
        output = model(xb)
        total_loss += F.nll_loss(output, yb, reduction="sum").item()
        predictions.append(output.argmax(dim=1).cpu().numpy())
    return total_loss / len(x), np.concatenate(predictions)


def save_checkpoint(
    path: Path | str, model: Net, params: CnnParams, meta: dict, made_with: dict | None = None
) -> None:
    """Weights together with the params that built them, loadable with weights_only=True.

    `meta` describes the input the weights expect (ProcessedData.meta: the data set's name,
    its class names, the mean and std of (pixel / 255 - mean) / std, and the preparation of
    a user's picture), so that the file alone is enough to predict: no params.yaml or data
    set table needed. `made_with` (made_with() below) says what trained them.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Saving to a buffer, not a path: torch names the archive's inner folder after the file,
    # and the temporary file's random name would make equal weights give different bytes.
    buffer = io.BytesIO()
    checkpoint = {
        "state_dict": state,
        "params": dataclasses.asdict(params),
        "meta": meta,
        "made_with": made_with or {},
    }
    checkpoint["digest"] = digest(state, meta)
    torch.save(checkpoint, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def digest(state: dict[str, torch.Tensor], meta: dict) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes, in name order, then of `meta`
    as sorted JSON.

    Stored with the weights: a flipped bit in a weight otherwise loads without complaint
    and gives a plausible-looking, wrong accuracy, and a changed mean or class name a wrong
    answer. The whole network is 88 KB.
    """
    sha = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        sha.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        sha.update(tensor.numpy().tobytes())
    sha.update(json.dumps(meta, sort_keys=True).encode())
    return sha.hexdigest()


def _holds_a_pickle(path: Path | str) -> bool:
    """Whether a zip archive has the data.pkl member that torch.save writes."""
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/data.pkl") for name in archive.namelist())


class Checkpoint(NamedTuple):
    model: Net  # on the CPU
    params: dict  # the cnn params that trained it
    meta: dict  # the input it expects (save_checkpoint)
    made_with: dict  # what trained it: made_with(); {} in a file from before it was recorded


def load_checkpoint(path: Path | str) -> Checkpoint:
    """The saved Net, with what describes it, its digest checked."""
    model = Net()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["state_dict"])
        params, meta, saved_digest = checkpoint["params"], checkpoint["meta"], checkpoint["digest"]
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run `dvc repro train_cnn` to make it") from None
    # A damaged file fails inside torch.load in many ways: EOFError (empty file),
    # UnicodeDecodeError (a flipped byte in a name), RuntimeError, UnpicklingError, OSError
    # (cut short), ... Say what it is in words; torch's own message can be pages long.
    except Exception as exc:
        if Path(path).is_dir():
            what = "a folder, not a model file"
        elif not zipfile.is_zipfile(path):
            what = "not a PyTorch model file (cut short, or another kind of file)"
        elif not _holds_a_pickle(path):
            what = "a zip archive, but not a PyTorch model file"
        elif isinstance(exc, KeyError):
            what = f"a PyTorch file, but not a model that train_cnn saved (no {exc})"
        else:
            what = f"a PyTorch model file damaged inside ({type(exc).__name__})"
        raise damaged(path, what, "train_cnn") from None
    problem = meta_problem(meta, n_classes=model.fc2.out_features)
    if problem:
        raise damaged(path, f"its {problem}, so the file is damaged", "train_cnn")
    if saved_digest != digest(checkpoint["state_dict"], meta):
        what = "its weights or meta do not match the digest saved with them, so it is damaged"
        raise damaged(path, what, "train_cnn")
    return Checkpoint(model, params, meta, checkpoint.get("made_with", {}))
