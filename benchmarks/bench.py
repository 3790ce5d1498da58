"""Benchmark the pipeline against the two notebooks' way of doing the same work.

Run from the repository root:

    python benchmarks/bench.py --raw /usr/share/datasets/fashion-mnist \
        --out benchmarks/results.json [--full]

--raw is a directory holding the four IDX .gz files of MNIST or Fashion-MNIST (which one is
told by their checksums). One run measures:

- CNN training, seconds per epoch and images/s: the notebook's way (a torchvision data set
  over the same IDX files, DataLoader(batch_size=64, shuffle=True), per-sample ToTensor and
  Normalize) against stages.train_cnn.train, alternating for --rounds rounds of one epoch;
  then the test accuracy each reaches after --epochs epochs. A third side runs the
  notebook with the allocator setting every stage uses (runtime.keep_freed_memory), to
  show how much of the difference that setting alone makes.
- The pipeline's training GFLOP/s against the CPU's fp32 peak (derived from /proc/cpuinfo,
  and measured with a large sgemm and a large oneDNN convolution).
- The k-means sweep: MiniBatchKMeans with scikit-learn's defaults over float64 pixels/255
  (the notebook) against stages.kmeans_sweep.sweep; test accuracy with the kept model.
- Wall time and peak RSS of every stage, each run as `python -m stages.X` with the
  arguments written in dvc.yaml.
- Scaling of the CNN epoch and the k-means sweep with 6,000, 20,000 and 60,000 images.
- With --full: a cold `dvc repro` of a fresh copy of the project, a no-op `dvc repro`,
  and the notebook-equivalent scripts run one after the other.

Every timed piece of work runs in a fresh Python process (this script with --worker), so
allocator state, thread pools and caches of one measurement do not leak into the next;
both sides run with the same torch thread count (--threads), and the two sides take turns.
Writes the results as JSON (--out) and as a markdown report (--markdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "
SCALING_SIZES = (6_000, 20_000, 60_000)
# The notebook's normalization constants (MNIST's mean and std, used for both data sets).
NOTEBOOK_MEAN, NOTEBOOK_STD = 0.1307, 0.3081
# fp32 FLOP per cycle per core: SIMD lanes x 2 (a fused multiply-add is 2 FLOP) x FMA units.
# Two full-width FMA units per core: Skylake-SP Gold/Platinum, Ice Lake-SP, Sapphire Rapids,
# Zen 5, and Zen 2-3 for AVX2. An upper bound elsewhere: Zen 4 splits 512-bit FMAs into two
# 256-bit halves and many Xeon Silver/Bronze parts have one 512-bit unit (half this peak).
SIMD_RULES = (
    ("avx512f", 16, True),
    ("avx2", 8, True),  # counted as FMA only when the fma flag is present too
    ("avx", 8, False),
    ("sse2", 4, False),
)
FMA_UNITS = 2
# torchvision's data set class for each of the pipeline's data sets; it reads ROOT/CLASS/raw/.
TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

Json = dict[str, Any]


# ---------------------------------------------------------------------------------------
# Machine description and fp32 peak
# ---------------------------------------------------------------------------------------


def cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def lscpu_max_mhz() -> float | None:
    """lscpu's "CPU max MHz", which virtual machines often do not report."""
    if not shutil.which("lscpu"):
        return None
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"^CPU max MHz:\s*([\d.]+)", out, re.MULTILINE)
    return float(match.group(1)) if match else None


def fp32_peak(info: dict[str, str], cores: int) -> Json:
    """Nominal fp32 peak from the CPU flags, the core count and the clock, with its derivation."""
    flags = set(info.get("flags", "").split())
    lanes, fma = 1, False
    for flag, rule_lanes, rule_fma in SIMD_RULES:
        if flag in flags:
            lanes, fma = rule_lanes, rule_fma and "fma" in flags
            isa = flag + ("+fma" if fma else "")
            break
    else:
        isa = "scalar"
    # With FMA: units x lanes x 2 FLOP. Without: one add and one multiply port per cycle.
    flop_per_cycle = lanes * 2 * (FMA_UNITS if fma else 1)
    max_mhz = lscpu_max_mhz()
    mhz = max_mhz or float(info.get("cpu MHz", "0") or 0)
    clock_source = "lscpu CPU max MHz" if max_mhz else "/proc/cpuinfo cpu MHz"
    peak = flop_per_cycle * cores * mhz / 1e3
    per_unit = lanes * 2
    units = f" x {FMA_UNITS} FMA units" if fma else ""
    derivation = (
        f"{isa}: {lanes} fp32 lanes x 2 FLOP{units} = {flop_per_cycle} FLOP/cycle/core"
        f" ({per_unit} per unit); x {cores} cores (os.sched_getaffinity) x {mhz:.0f} MHz"
        f" ({clock_source}) = {peak:.0f} GFLOP/s"
    )
    return {
        "isa": isa,
        "flop_per_cycle_per_core": flop_per_cycle,
        "cores": cores,
        "mhz": mhz,
        "clock_source": clock_source,
        "gflops": peak,
        "derivation": derivation,
    }


def machine_description(threads: int) -> Json:
    """What this process can tell without importing torch (see worker_describe for the rest)."""
    info = cpuinfo()
    cores = len(os.sched_getaffinity(0))
    return {
        "cpu_model": info.get("model name", platform.processor() or "unknown"),
        "cores_available": cores,
        "cpu_mhz": float(info.get("cpu MHz", "0") or 0),
        "virtual_machine": "hypervisor" in info.get("flags", "").split(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch_threads": threads,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
        "peak": fp32_peak(info, cores),
    }


def training_flop_per_image() -> Json:
    """Multiply-adds of one forward pass of stages.cnn.Net, from its layers' shapes.

    A training step costs about three forward passes (forward, gradient of the input,
    gradient of the weights), the convention REFERENCE.md uses (~2.9 MFLOP per image).
    conv1 needs no input gradient, so the true count is a little lower (~2.6 MFLOP).
    """
    import torch
    from torch import nn

    from stages.cnn import Net

    model = Net()
    macs = {}

    def hook(name: str) -> Callable:
        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                macs[name] = output[0].numel() * k
            else:
                macs[name] = module.in_features * module.out_features

        return count

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.register_forward_hook(hook(name))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    forward_macs = sum(macs.values())
    return {
        "forward_macs_per_image": macs | {"total": forward_macs},
        "training_flop_per_image": 3 * 2 * forward_macs,
    }


# ---------------------------------------------------------------------------------------
# Workers: one measurement each, in a fresh process
# ---------------------------------------------------------------------------------------


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _torchvision_class(dataset: str) -> type:
    from torchvision import datasets

    return getattr(datasets, TORCHVISION_CLASSES[dataset])


def _notebook_train(model: Any, optimizer: Any, loader: Any, max_batches: int | None) -> None:
    """One epoch of the notebook's training loop (or its first max_batches batches)."""
    import torch.nn.functional as F

    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        if batch_idx == max_batches:
            break
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        if batch_idx % 10 == 0:
            loss.item()  # the notebook prints the loss every log_interval batches


def _notebook_test(model: Any, loader: Any) -> tuple[float, int]:
    """The notebook's test loop: summed NLL loss and the number of correct predictions."""
    import torch
    import torch.nn.functional as F

    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return test_loss, correct


def worker_cnn_notebook(spec: Json) -> Json:
    """The CNN notebook: torchvision data set + DataLoader with per-sample transforms."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    from stages.cnn import Net

    _set_threads(spec["threads"])
    start = time.perf_counter()
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((NOTEBOOK_MEAN,), (NOTEBOOK_STD,))]
    )
    cls = _torchvision_class(spec["dataset"])
    train_set = cls(spec["tv_root"], train=True, download=False, transform=transform)
    test_set = cls(spec["tv_root"], train=False, download=False, transform=transform)
    n_train = spec["n_train"]
    train_set.data, train_set.targets = train_set.data[:n_train], train_set.targets[:n_train]
    load_s = time.perf_counter() - start

    # Warm-up, untimed and before seeding (as the pipeline worker's): ten batches and one
    # test batch through a throwaway model, so one-off kernel set-up is not timed.
    if spec.get("warmup", True):
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
        _notebook_train(model, optimizer, DataLoader(train_set, batch_size=64), max_batches=10)
        _notebook_test(model, DataLoader(Subset(test_set, range(1000)), batch_size=1000))

    torch.manual_seed(1)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000, shuffle=True)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    epochs = []
    for epoch in range(1, spec["epochs"] + 1):
        start = time.perf_counter()
        _notebook_train(model, optimizer, train_loader, max_batches=None)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        test_loss, correct = _notebook_test(model, test_loader)
        test_s = time.perf_counter() - start
        epochs.append(
            {
                "epoch": epoch,
                "train_s": train_s,
                "test_s": test_s,
                "test_loss": test_loss / len(test_set),
                "test_accuracy": correct / len(test_set),
            }
        )
    return {"load_s": load_s, "n_train": len(train_set), "epochs": epochs}


def _load_training_subset(path: str, n_train: int) -> tuple[Any, float]:
    """The processed data with only its first n_train training images, and the seconds taken."""
    from stages.processed import load_processed

    start = time.perf_counter()
    data = load_processed(path)
    data = dataclasses.replace(data, train_x=data.train_x[:n_train], train_y=data.train_y[:n_train])
    return data, time.perf_counter() - start


def worker_cnn_pipeline(spec: Json) -> Json:
    """stages.train_cnn.train on data/processed/cnn.npz, with params.yaml's cnn section."""
    import stages.train_cnn as train_cnn
    from stages.config import load_params

    _set_threads(spec["threads"])
    data, load_s = _load_training_subset(spec["cnn_npz"], spec["n_train"])
    params = dataclasses.replace(load_params(spec["params"]).cnn, epochs=spec["epochs"])

    # Warm-up, untimed (as the notebook worker's): one epoch of ten batches and a test pass
    # over 1,000 images, so one-off kernel set-up is not timed. train() seeds itself.
    warm = dataclasses.replace(
        data,
        train_x=data.train_x[: 10 * params.batch_size],
        train_y=data.train_y[: 10 * params.batch_size],
        test_x=data.test_x[:1000],
        test_y=data.test_y[:1000],
    )
    train_cnn.train(warm, dataclasses.replace(params, epochs=1))

    # train() evaluates on the test set once at the end of every epoch: a wrapper around
    # that call marks where each epoch's training ends and its test pass begins.
    evaluate = train_cnn.evaluate
    marks: list[tuple[float, float]] = []

    def timed_evaluate(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = evaluate(*args, **kwargs)
        marks.append((t0, time.perf_counter()))
        return result

    train_cnn.evaluate = timed_evaluate
    start = time.perf_counter()
    result = train_cnn.train(data, params)
    total_s = time.perf_counter() - start
    epoch_starts = [start] + [end for _, end in marks[:-1]]
    epochs = [
        {
            "epoch": row["epoch"],
            "train_s": test_start - epoch_start,
            "test_s": test_end - test_start,
            "test_loss": row["test_loss"],
            "test_accuracy": row["test_accuracy"],
        }
        for row, epoch_start, (test_start, test_end) in zip(
            result.test_log, epoch_starts, marks, strict=True
        )
    ]
    return {"load_s": load_s, "n_train": spec["n_train"], "total_s": total_s, "epochs": epochs}


def _notebook_cluster_labels(clusters: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The notebook's majority vote, one cluster at a time."""
    labels = np.zeros(k, dtype=np.int64)
    for i in range(k):
        counts = np.bincount(y[clusters == i], minlength=10)
        labels[i] = np.argmax(counts)
    return labels


def worker_kmeans_notebook(spec: Json) -> Json:
    """The k-means notebook: MiniBatchKMeans, scikit-learn defaults, float64 pixels / 255."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import homogeneity_score

    _set_threads(spec["threads"])
    start = time.perf_counter()
    cls = _torchvision_class(spec["dataset"])
    train_set = cls(spec["tv_root"], train=True, download=False)
    test_set = cls(spec["tv_root"], train=False, download=False)
    n_train = spec["n_train"]
    x_train = train_set.data.numpy()[:n_train].reshape(n_train, -1) / 255.0
    y_train = train_set.targets.numpy()[:n_train]
    x_test = test_set.data.numpy().reshape(len(test_set), -1) / 255.0
    y_test = test_set.targets.numpy()
    load_s = time.perf_counter() - start

    rows, fit_s, kept, kept_labels = [], 0.0, None, None
    start = time.perf_counter()
    for k in spec["n_clusters"]:
        t0 = time.perf_counter()
        # scikit-learn's defaults; random_state fixed so that runs are comparable.
        kmeans = MiniBatchKMeans(n_clusters=k, random_state=spec["random_state"]).fit(x_train)
        fit_s += time.perf_counter() - t0
        labels = _notebook_cluster_labels(kmeans.labels_, y_train, k)
        rows.append(
            {
                "n_clusters": k,
                "inertia": float(kmeans.inertia_),
                "homogeneity": float(homogeneity_score(y_train, kmeans.labels_)),
                "accuracy": float(np.mean(labels[kmeans.labels_] == y_train)),
            }
        )
        if k == spec["test_clusters"]:
            kept, kept_labels = kmeans, labels
    sweep_s = time.perf_counter() - start
    start = time.perf_counter()
    test_accuracy = float(np.mean(kept_labels[kept.predict(x_test)] == y_test))
    test_s = time.perf_counter() - start
    return {
        "load_s": load_s,
        "sweep_s": sweep_s,
        "fit_s": fit_s,
        "test_s": test_s,
        "test_accuracy": test_accuracy,
        "rows": rows,
    }


def worker_kmeans_pipeline(spec: Json) -> Json:
    """stages.kmeans_sweep.sweep and the kept model's test accuracy, params from params.yaml."""
    import stages.kmeans_sweep as kmeans_sweep
    from stages.config import load_params
    from stages.metrics import accuracy

    _set_threads(spec["threads"])
    data, load_s = _load_training_subset(spec["kmeans_npz"], spec["n_train"])
    params = load_params(spec["params"]).kmeans

    fit = kmeans_sweep.fit
    fit_times: list[float] = []

    def timed_fit(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        estimator = fit(*args, **kwargs)
        fit_times.append(time.perf_counter() - t0)
        return estimator

    kmeans_sweep.fit = timed_fit
    start = time.perf_counter()
    rows, model = kmeans_sweep.sweep(data, params)
    sweep_s = time.perf_counter() - start
    start = time.perf_counter()
    test_accuracy = accuracy(data.test_y, model.predict(data.test_x))
    test_s = time.perf_counter() - start
    return {
        "load_s": load_s,
        "sweep_s": sweep_s,
        "fit_s": sum(fit_times),
        "test_s": test_s,
        "test_accuracy": test_accuracy,
        "rows": rows,
    }


def worker_measured_peak(spec: Json) -> Json:
    """Best GFLOP/s over short windows of a large sgemm (MKL) and a large oneDNN convolution.

    What the libraries reach on friendly shapes: a practical ceiling next to the nominal
    peak. On a shared virtual machine the windows vary; the spread is reported too.
    """
    import torch
    import torch.nn.functional as F

    _set_threads(spec["threads"])

    def windows(op: Callable[[], Any], flop: float, n: int = 12, seconds: float = 0.25) -> Json:
        for _ in range(3):
            op()
        rates = []
        for _ in range(n):
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                op()
                count += 1
            rates.append(count * flop / (time.perf_counter() - t0) / 1e9)
        return {"best": max(rates), "median": statistics.median(rates), "worst": min(rates)}

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    x = torch.randn(32, 128, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3).contiguous(memory_format=torch.channels_last)
    conv_flop = 2 * 32 * 128 * 128 * 9 * 26 * 26
    return {
        "sgemm_1024": windows(lambda: torch.mm(a, b), 2 * 1024**3),
        "conv_128x128x3x3_channels_last": windows(lambda: F.conv2d(x, w), conv_flop),
    }


def worker_describe(spec: Json) -> Json:
    """Library versions and the CNN's arithmetic, from a process that imports them."""
    import sklearn
    import torch
    import torchvision

    _set_threads(spec["threads"])
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torchvision": torchvision.__version__,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
    } | training_flop_per_image()


WORKERS: dict[str, Callable[[Json], Json]] = {
    "describe": worker_describe,
    "cnn-notebook": worker_cnn_notebook,
    "cnn-pipeline": worker_cnn_pipeline,
    "kmeans-notebook": worker_kmeans_notebook,
    "kmeans-pipeline": worker_kmeans_pipeline,
    "measured-peak": worker_measured_peak,
}


def run_worker_here(spec_json: str) -> None:
    spec = json.loads(spec_json)
    # Every stage runs with the allocator setting that runtime.run_main applies; the
    # pipeline's workers get it too, and the notebook's only when a comparison asks.
    if spec["task"].endswith("-pipeline") or spec.get("keep_freed_memory"):
        from stages.runtime import keep_freed_memory

        keep_freed_memory()
    result = WORKERS[spec["task"]](spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------
# Running children: wall time, exit status and peak RSS of exactly that process
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Child:
    returncode: int
    wall_s: float
    max_rss_mib: float
    output: str


def run_child(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> Child:
    """Run cmd; os.wait4 gives the resource usage of this child alone (ru_maxrss in KiB).

    Linux starts a child's peak RSS from its parent's resident size at fork, so the process
    that launches measurements imports no torch (its own peak is in launcher_max_rss_mib).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(proc.returncode, wall, usage.ru_maxrss / 1024, log_path.read_text())


@dataclasses.dataclass
class Setup:
    """Everything the measurements share: paths, the data set, thread count, environment."""

    raw: Path
    scratch: Path
    dataset: str
    threads: int
    project: Path  # a copy of the project with params.yaml pointing at the data set
    tv_root: Path  # the raw files laid out as torchvision expects them
    logs: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)
        env.update(
            PATH=bin_dir + os.pathsep + env.get("PATH", ""),
            PYTHONPATH=str(REPO),
            DATA_MIRROR=str(self.raw),
            DVC_NO_ANALYTICS="1",
            OMP_NUM_THREADS=str(self.threads),
            CI="1",  # plain log lines, no progress bars
        )
        return env

    @property
    def cnn_npz(self) -> Path:
        return self.project / "data/processed/cnn.npz"

    @property
    def kmeans_npz(self) -> Path:
        return self.project / "data/processed/kmeans.npz"

    @property
    def params(self) -> Path:
        return self.project / "params.yaml"


def worker(setup: Setup, task: str, **spec: Any) -> Json:
    """Run one measurement in a fresh interpreter and return its result (and its peak RSS)."""
    spec |= {
        "task": task,
        "threads": setup.threads,
        "dataset": setup.dataset,
        "tv_root": str(setup.tv_root),
        "cnn_npz": str(setup.cnn_npz),
        "kmeans_npz": str(setup.kmeans_npz),
        "params": str(setup.params),
    }
    name = f"{task}-{spec.get('n_train', '')}-{time.monotonic_ns()}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    child = run_child(cmd, REPO, setup.env, setup.logs / name)
    results = [line for line in child.output.splitlines() if line.startswith(RESULT_PREFIX)]
    if child.returncode != 0 or not results:
        raise RuntimeError(f"worker {task} failed ({child.returncode}):\n{child.output[-3000:]}")
    result = json.loads(results[-1][len(RESULT_PREFIX) :])
    result["process_max_rss_mib"] = child.max_rss_mib
    return result


# ---------------------------------------------------------------------------------------
# Setting up: which data set, the torchvision layout, a copy of the project
# ---------------------------------------------------------------------------------------


def detect_dataset(raw: Path) -> str:
    """The data set whose published md5s match the decompressed files in raw."""
    from stages.datasets import DATASETS, FILES

    digests = {}
    for name in FILES:
        path = raw / f"{name}.gz"
        if not path.is_file():
            raise SystemExit(f"{path} not found; --raw must hold the four IDX .gz files")
        with gzip.open(path, "rb") as stream:
            digests[name] = hashlib.file_digest(stream, "md5").hexdigest()
    for dataset in DATASETS.values():
        if all(dataset.md5[name] == digests[name] for name in FILES):
            return dataset.name
    raise SystemExit(f"{raw}: the files match no known data set's checksums")


def torchvision_layout(raw: Path, root: Path, dataset: str) -> Path:
    """Decompressed copies where torchvision's MNIST/FashionMNIST look (ROOT/CLASS/raw/)."""
    from stages.datasets import FILES

    folder = root / TORCHVISION_CLASSES[dataset] / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        with gzip.open(raw / f"{name}.gz", "rb") as src, open(folder / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def copy_project(dest: Path, dataset: str) -> Path:
    """The files `dvc repro` needs, with params.yaml's data.dataset set (comments kept)."""
    shutil.copytree(REPO / "stages", dest / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(REPO / name, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc/config", dest / ".dvc/config")
    text = (REPO / "params.yaml").read_text()
    text, count = re.subn(r"^(  dataset:\s*)\S+", rf"\g<1>{dataset}", text, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit("params.yaml: cannot find data.dataset to point it at the data set")
    (dest / "params.yaml").write_text(text)
    from stages.config import load_params

    load_params(dest / "params.yaml")  # still valid
    return dest


def stage_commands() -> list[tuple[str, list[str]]]:
    """Each stage's command line, exactly as dvc.yaml writes it, in dvc.yaml's order."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [(name, shlex.split(stage["cmd"])) for name, stage in stages.items()]


# ---------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------


def measure_stages(setup: Setup) -> list[Json]:
    """Run every stage once, in order, in the project copy: wall time and peak RSS each.

    This also produces data/processed/, which the other measurements read.
    """
    rows = []
    for name, cmd in stage_commands():
        if cmd[0] == "python":
            cmd = [sys.executable, *cmd[1:]]
        log.info("stage %s: %s", name, shlex.join(cmd))
        child = run_child(cmd, setup.project, setup.env, setup.logs / f"stage-{name}.log")
        if child.returncode != 0:
            raise RuntimeError(f"stage {name} failed:\n{child.output[-3000:]}")
        rows.append({"stage": name, "wall_s": child.wall_s, "max_rss_mib": child.max_rss_mib})
        log.info("stage %s: %.1f s, peak RSS %.0f MiB", name, child.wall_s, child.max_rss_mib)
    return rows


def _epoch_stats(run: Json) -> Json:
    train_s = sum(e["train_s"] for e in run["epochs"])
    test_s = sum(e["test_s"] for e in run["epochs"])
    n_epochs = len(run["epochs"])
    return {
        "train_s_per_epoch": train_s / n_epochs,
        "test_s_per_epoch": test_s / n_epochs,
        "images_per_s": run["n_train"] * n_epochs / train_s,
        "final_test_accuracy": run["epochs"][-1]["test_accuracy"],
    }


def _summary(rounds: list[Json], key: str) -> Json:
    notebook = [r["notebook"][key] for r in rounds]
    pipeline = [r["pipeline"][key] for r in rounds]
    return {
        "notebook_median": statistics.median(notebook),
        "notebook_min": min(notebook),
        "pipeline_median": statistics.median(pipeline),
        "pipeline_min": min(pipeline),
        "ratio_median": statistics.median(n / p for n, p in zip(notebook, pipeline, strict=True)),
    }


# The CNN comparison's sides: worker task and extra spec. "notebook_malloc" is the notebook
# with the pipeline's allocator setting (runtime.keep_freed_memory), to show what that
# setting alone is worth; it is measured only at full size.
CNN_SIDES: dict[str, tuple[str, Json]] = {
    "notebook": ("cnn-notebook", {}),
    "pipeline": ("cnn-pipeline", {}),
    "notebook_malloc": ("cnn-notebook", {"keep_freed_memory": True}),
}


def measure_cnn_rounds(setup: Setup, rounds: int, n_train: int = 60_000) -> Json:
    """Alternate one-epoch runs of the sides (order rotating each round); compare per round."""
    sides = list(CNN_SIDES) if n_train == 60_000 else ["notebook", "pipeline"]
    results = []
    for i in range(rounds):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        row: Json = {}
        for side in order:
            task, extra = CNN_SIDES[side]
            run = worker(setup, task, epochs=1, n_train=n_train, **extra)
            stats = _epoch_stats(run)
            epoch = run["epochs"][0]
            row[side] = stats | {
                "epoch_with_test_s": epoch["train_s"] + epoch["test_s"],
                "load_s": run["load_s"],
                "process_max_rss_mib": run["process_max_rss_mib"],
            }
            log.info(
                "cnn round %d %s: %.2f s train epoch (%.0f images/s), %.2f s test",
                i + 1,
                side,
                stats["train_s_per_epoch"],
                stats["images_per_s"],
                stats["test_s_per_epoch"],
            )
        results.append(row)
    out = {
        "n_train": n_train,
        "rounds": results,
        "train_epoch_s": _summary(results, "train_s_per_epoch"),
        "epoch_with_test_s": _summary(results, "epoch_with_test_s"),
        "images_per_s": {
            "notebook_median": statistics.median(r["notebook"]["images_per_s"] for r in results),
            "pipeline_median": statistics.median(r["pipeline"]["images_per_s"] for r in results),
        },
    }
    if "notebook_malloc" in sides:
        tuned = [{"notebook": r["notebook_malloc"], "pipeline": r["pipeline"]} for r in results]
        out["train_epoch_s_notebook_malloc"] = _summary(tuned, "train_s_per_epoch")
    return out


def measure_cnn_accuracy(setup: Setup, epochs: int) -> Json:
    out = {"epochs": epochs}
    for side in ("notebook", "pipeline"):
        run = worker(setup, f"cnn-{side}", epochs=epochs, n_train=60_000)
        out[side] = _epoch_stats(run) | {
            "per_epoch": run["epochs"],
            "process_max_rss_mib": run["process_max_rss_mib"],
        }
        log.info(
            "cnn %d epochs %s: test accuracy %.4f", epochs, side, out[side]["final_test_accuracy"]
        )
    out["accuracy_difference_points"] = 100 * (
        out["pipeline"]["final_test_accuracy"] - out["notebook"]["final_test_accuracy"]
    )
    return out


def measure_kmeans(setup: Setup, rounds: int, n_train: int = 60_000) -> Json:
    from stages.config import load_params

    params = load_params(setup.params).kmeans
    common = {
        "n_train": n_train,
        "n_clusters": list(params.n_clusters),
        "test_clusters": params.test_clusters,
        "random_state": params.random_state,
    }
    results = []
    for i in range(rounds):
        order = ("notebook", "pipeline") if i % 2 == 0 else ("pipeline", "notebook")
        row = {}
        for side in order:
            row[side] = worker(setup, f"kmeans-{side}", **common)
            log.info(
                "kmeans round %d %s: sweep %.2f s (fit %.2f s), test accuracy %.4f",
                i + 1,
                side,
                row[side]["sweep_s"],
                row[side]["fit_s"],
                row[side]["test_accuracy"],
            )
        results.append(row)
    return {
        "n_train": n_train,
        "rounds": results,
        "sweep_s": _summary(results, "sweep_s"),
        "fit_s": _summary(results, "fit_s"),
        "test_accuracy": {
            "notebook": results[0]["notebook"]["test_accuracy"],
            "pipeline": results[0]["pipeline"]["test_accuracy"],
        },
    }


def measure_scaling(setup: Setup, rounds: int, cnn: Json, kmeans: Json) -> list[Json]:
    """Medians over rounds at each size; the full size reuses the main comparisons."""

    def medians(comparison: Json, key: str) -> Json:
        return {side: comparison[key][f"{side}_median"] for side in ("notebook", "pipeline")}

    rows = []
    for n in SCALING_SIZES:
        if n == cnn["n_train"] == kmeans["n_train"]:
            cnn_n, kmeans_n = cnn, kmeans
        else:
            cnn_n = measure_cnn_rounds(setup, rounds, n_train=n)
            kmeans_n = measure_kmeans(setup, rounds, n_train=n)
        rows.append(
            {
                "n_train": n,
                "cnn_train_epoch_s": medians(cnn_n, "train_epoch_s"),
                "kmeans_sweep_s": medians(kmeans_n, "sweep_s"),
            }
        )
    return rows


def measure_gflops(setup: Setup, cnn: Json, machine: Json) -> Json:
    per_image = machine["training_flop_per_image"]
    measured = worker(setup, "measured-peak")
    peak = machine["peak"]["gflops"]
    achieved = {}
    for side in ("notebook", "pipeline"):
        images_per_s = cnn["images_per_s"][f"{side}_median"]
        gflops = images_per_s * per_image / 1e9
        achieved[side] = {"gflops": gflops, "fraction_of_nominal_peak": gflops / peak}
    return {
        "training_flop_per_image": per_image,
        "forward_macs_per_image": machine["forward_macs_per_image"],
        "nominal_peak": machine["peak"],
        "measured_ceilings": measured,
        "achieved": achieved,
        "epoch_lower_bound_s": 60_000 * per_image / (peak * 1e9),
    }


def measure_cold_pipeline(setup: Setup) -> Json:
    """A cold `dvc repro` of a fresh project copy and a no-op one; then the notebook scripts."""
    project = copy_project(Path(tempfile.mkdtemp(prefix="cold-", dir=setup.scratch)), setup.dataset)
    env = setup.env
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, env=env)
    dvc = [sys.executable, "-m", "dvc"]
    results: Json = {}
    for label in ("cold", "noop"):
        log.info("dvc repro (%s) in %s", label, project)
        child = run_child([*dvc, "repro"], project, env, setup.logs / f"dvc-repro-{label}.log")
        if child.returncode != 0:
            raise RuntimeError(f"dvc repro failed:\n{child.output[-3000:]}")
        results[f"dvc_repro_{label}_s"] = child.wall_s
        log.info("dvc repro (%s): %.1f s", label, child.wall_s)
    for name in ("cnn", "kmeans_test"):  # what the cold run reached, to compare with the rest
        metrics = json.loads((project / f"metrics/{name}.json").read_text())
        results[f"{name}_test_accuracy"] = metrics["test_accuracy"]

    # The notebooks as plain scripts, one after the other: CNN 5 epochs with a test pass
    # after each, then the k-means sweep and the test with the kept model.
    from stages.config import load_params

    params = load_params(project / "params.yaml")
    start = time.perf_counter()
    worker(setup, "cnn-notebook", epochs=params.cnn.epochs, n_train=60_000, warmup=False)
    worker(
        setup,
        "kmeans-notebook",
        n_train=60_000,
        n_clusters=list(params.kmeans.n_clusters),
        test_clusters=params.kmeans.test_clusters,
        random_state=params.kmeans.random_state,
    )
    results["notebook_scripts_s"] = time.perf_counter() - start
    log.info("notebook-equivalent scripts: %.1f s", results["notebook_scripts_s"])
    return results


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render_markdown(results: Json) -> str:
    m = results["machine"]
    s = results["settings"]
    lines = [
        "# Benchmarks: the pipeline against the notebooks' way",
        "",
        f"Generated by `python benchmarks/bench.py {s['command_line']}`.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores_available']} cores available, "
        f"{m['cpu_mhz']:.0f} MHz (/proc/cpuinfo)"
        + (", virtual machine" if m["virtual_machine"] else ""),
        f"- Memory: {m['memory_gib']} GiB; kernel {m['kernel']}",
        f"- Python {m['python']}, torch {m['torch']} ({m['torch_cpu_capability']}, "
        f"{m['torch_threads']} threads on both sides), torchvision {m['torchvision']}, "
        f"scikit-learn {m['scikit_learn']}, numpy {m['numpy']}",
        f"- Data set: {s['dataset']} (from {s['raw']}); load average at start "
        + ", ".join(f"{x:.2f}" for x in m["load_average_at_start"]),
        "",
    ]
    cnn = results["cnn"]
    t, e = cnn["train_epoch_s"], cnn["epoch_with_test_s"]
    lines += [
        f"## CNN, one epoch of {cnn['n_train']:,} images "
        f"({len(cnn['rounds'])} rounds, the sides taking turns)",
        "",
        _row("measure", "notebook (DataLoader)", "pipeline (train_cnn.train)", "speed-up"),
        _row("---", "---:", "---:", "---:"),
        _row(
            "training epoch, s (median; min)",
            f"{t['notebook_median']:.2f}; {t['notebook_min']:.2f}",
            f"{t['pipeline_median']:.2f}; {t['pipeline_min']:.2f}",
            f"{t['ratio_median']:.2f}x",
        ),
        _row(
            "epoch with test pass, s (median)",
            f"{e['notebook_median']:.2f}",
            f"{e['pipeline_median']:.2f}",
            f"{e['ratio_median']:.2f}x",
        ),
        _row(
            "training images/s (median)",
            f"{cnn['images_per_s']['notebook_median']:,.0f}",
            f"{cnn['images_per_s']['pipeline_median']:,.0f}",
            "",
        ),
    ]
    tuned = cnn.get("train_epoch_s_notebook_malloc")
    if tuned:
        lines.append(
            _row(
                "training epoch, s, the notebook with the pipeline's allocator setting "
                "(median; min)",
                f"{tuned['notebook_median']:.2f}; {tuned['notebook_min']:.2f}",
                f"{tuned['pipeline_median']:.2f}; {tuned['pipeline_min']:.2f}",
                f"{tuned['ratio_median']:.2f}x",
            )
        )
    acc = results.get("cnn_accuracy")
    if acc:
        per_epoch = {side: acc[side]["train_s_per_epoch"] for side in ("notebook", "pipeline")}
        lines.append(
            _row(
                f"test accuracy after {acc['epochs']} epochs",
                f"{acc['notebook']['final_test_accuracy']:.4f}",
                f"{acc['pipeline']['final_test_accuracy']:.4f}",
                f"{acc['accuracy_difference_points']:+.2f} points",
            )
        )
        lines.append(
            _row(
                f"training epoch, s (mean of the {acc['epochs']}-epoch runs)",
                f"{per_epoch['notebook']:.2f}",
                f"{per_epoch['pipeline']:.2f}",
                f"{per_epoch['notebook'] / per_epoch['pipeline']:.2f}x",
            )
        )
        lines.append(
            _row(
                f"peak RSS of the process, MiB ({acc['epochs']}-epoch run)",
                f"{acc['notebook']['process_max_rss_mib']:.0f}",
                f"{acc['pipeline']['process_max_rss_mib']:.0f}",
                "",
            )
        )
    g = results["gflops"]
    peak = g["nominal_peak"]
    ceilings = g["measured_ceilings"]
    lines += [
        "",
        "## CNN arithmetic against the fp32 peak",
        "",
        f"- Work: {g['forward_macs_per_image']['total']:,} multiply-adds per image forward; "
        f"x 2 FLOP x 3 (forward + two backward products) = "
        f"{g['training_flop_per_image'] / 1e6:.2f} MFLOP per image per training step.",
        f"- Nominal peak: {peak['derivation']}.",
        f"- Measured ceilings with {m['torch_threads']} threads (best / median / worst of 0.25 s "
        f"windows): sgemm 1024 {_spread(ceilings['sgemm_1024'])} GFLOP/s; oneDNN conv "
        f"{_spread(ceilings['conv_128x128x3x3_channels_last'])} GFLOP/s.",
        f"- An epoch of 60,000 images cannot take less than {g['epoch_lower_bound_s']:.2f} s "
        "at the nominal peak.",
    ]
    conv_best = ceilings["conv_128x128x3x3_channels_last"]["best"]
    if conv_best > peak["gflops"]:
        lines.append(
            "- The measured convolution beats the nominal peak: the cores run faster than the "
            "clock /proc/cpuinfo reports (turbo), so the nominal figure is a low estimate."
        )
    lines += [
        "",
        _row("side", "achieved GFLOP/s", "of nominal peak", "of measured conv ceiling (best)"),
        _row("---", "---:", "---:", "---:"),
    ]
    for side in ("notebook", "pipeline"):
        a = g["achieved"][side]
        lines.append(
            _row(
                side,
                f"{a['gflops']:.1f}",
                f"{100 * a['fraction_of_nominal_peak']:.1f}%",
                f"{100 * a['gflops'] / conv_best:.1f}%",
            )
        )
    km = results["kmeans"]
    lines += [
        "",
        f"## k-means sweep over {km['n_train']:,} images "
        f"({len(km['rounds'])} rounds, the sides taking turns)",
        "",
        _row(
            "measure", "notebook (float64, defaults)", "pipeline (kmeans_sweep.sweep)", "speed-up"
        ),
        _row("---", "---:", "---:", "---:"),
        _row(
            "whole sweep, s (median; min)",
            f"{km['sweep_s']['notebook_median']:.2f}; {km['sweep_s']['notebook_min']:.2f}",
            f"{km['sweep_s']['pipeline_median']:.2f}; {km['sweep_s']['pipeline_min']:.2f}",
            f"{km['sweep_s']['ratio_median']:.2f}x",
        ),
        _row(
            "fitting only, s (median)",
            f"{km['fit_s']['notebook_median']:.2f}",
            f"{km['fit_s']['pipeline_median']:.2f}",
            f"{km['fit_s']['ratio_median']:.2f}x",
        ),
        _row(
            "test accuracy, kept model",
            f"{km['test_accuracy']['notebook']:.4f}",
            f"{km['test_accuracy']['pipeline']:.4f}",
            "",
        ),
        _row(
            "peak RSS of the process, MiB",
            f"{km['rounds'][0]['notebook']['process_max_rss_mib']:.0f}",
            f"{km['rounds'][0]['pipeline']['process_max_rss_mib']:.0f}",
            "",
        ),
        "",
        "## Stages, each run alone as in dvc.yaml",
        "",
        _row("stage", "wall s", "peak RSS MiB"),
        _row("---", "---:", "---:"),
    ]
    for row in results["stages"]:
        lines.append(_row(row["stage"], f"{row['wall_s']:.1f}", f"{row['max_rss_mib']:.0f}"))
    lines += [
        "",
        "## Scaling with the number of training images (medians over the rounds)",
        "",
        _row(
            "training images",
            "CNN epoch s, notebook",
            "CNN epoch s, pipeline",
            "k-means sweep s, notebook",
            "k-means sweep s, pipeline",
        ),
        _row("---:", "---:", "---:", "---:", "---:"),
    ]
    for row in results["scaling"]:
        c, k = row["cnn_train_epoch_s"], row["kmeans_sweep_s"]
        lines.append(
            _row(
                f"{row['n_train']:,}",
                f"{c['notebook']:.2f}",
                f"{c['pipeline']:.2f}",
                f"{k['notebook']:.2f}",
                f"{k['pipeline']:.2f}",
            )
        )
    cold = results.get("pipeline_cold")
    if cold:
        lines += [
            "",
            "## Whole pipeline",
            "",
            _row("run", "wall s"),
            _row("---", "---:"),
            _row("`dvc repro`, fresh copy (download to plots)", f"{cold['dvc_repro_cold_s']:.1f}"),
            _row("`dvc repro` again, nothing changed", f"{cold['dvc_repro_noop_s']:.1f}"),
            _row(
                "(test accuracy reached by `dvc repro`: CNN, k-means)",
                f"{cold['cnn_test_accuracy']:.4f}, {cold['kmeans_test_test_accuracy']:.4f}",
            ),
            _row(
                "notebook-equivalent scripts (CNN, k-means sweep and test)",
                f"{cold['notebook_scripts_s']:.1f}",
            ),
        ]
    lines += [
        "",
        "Each number comes from a fresh Python process (start-up and imports not timed); the",
        "two sides alternate. Per-round values are in the JSON file. On a shared virtual machine",
        "the same work can take twice as long from one minute to the next: compare medians and",
        "minimums, not single runs. The pipeline's side always runs with the allocator",
        "setting that every stage uses (stages.runtime.keep_freed_memory), the k-means sweep",
        "included; the notebook's side has it only in the CNN row that says so.",
        "",
    ]
    return "\n".join(lines)


def _spread(stats: Json) -> str:
    return f"{stats['best']:.0f} / {stats['median']:.0f} / {stats['worst']:.0f}"


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="directory with the four IDX .gz files")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results.json"), help="results as JSON"
    )
    parser.add_argument(
        "--markdown", type=Path, help="markdown report (default: RESULTS.md beside --out)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for the accuracy comparison")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads, the same for both sides (default: the cores available)",
    )
    parser.add_argument("--full", action="store_true", help="also time a cold `dvc repro`")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling runs")
    parser.add_argument("--scratch", type=Path, help="scratch directory (default: a new one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--from-json", type=Path, help="only write the markdown report for an earlier JSON file"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if str(REPO) not in sys.path:  # run as a script from benchmarks/: find the stages package
        sys.path.insert(0, str(REPO))
    if args.worker:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        run_worker_here(args.worker)
        return
    markdown = args.markdown or args.out.with_name("RESULTS.md")
    if args.from_json:
        markdown.write_text(render_markdown(json.loads(args.from_json.read_text())))
        return
    if args.raw is None:
        parser.error("--raw is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    raw = args.raw.resolve()
    dataset = detect_dataset(raw)
    log.info("data set %s in %s; scratch %s; %d threads", dataset, raw, scratch, args.threads)
    setup = Setup(
        raw=raw,
        scratch=scratch,
        dataset=dataset,
        threads=args.threads,
        project=copy_project(Path(tempfile.mkdtemp(prefix="project-", dir=scratch)), dataset),
        tv_root=torchvision_layout(raw, scratch / "torchvision", dataset),
        logs=scratch / "logs",
    )
    started = time.perf_counter()
    machine = machine_description(args.threads)
    log.info("fp32 peak: %s", machine["peak"]["derivation"])
    results: Json = {
        "machine": machine,
        "settings": {
            "command_line": shlex.join(sys.argv[1:]),
            "raw": str(args.raw),
            "dataset": dataset,
            "rounds": args.rounds,
            "epochs": args.epochs,
            "threads": args.threads,
        },
    }
    try:
        described = worker(setup, "describe")
        described.pop("process_max_rss_mib")
        machine |= described
        # Children inherit this process's peak RSS as their starting ru_maxrss (fork copies
        # the memory accounting), so this process imports no torch; record its own peak.
        machine["launcher_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["stages"] = measure_stages(setup)  # also writes data/processed/ for the rest
        results["cnn"] = measure_cnn_rounds(setup, args.rounds)
        results["cnn_accuracy"] = measure_cnn_accuracy(setup, args.epochs)
        results["gflops"] = measure_gflops(setup, results["cnn"], machine)
        results["kmeans"] = measure_kmeans(setup, args.rounds)
        results["scaling"] = (
            []
            if args.no_scaling
            else measure_scaling(setup, args.rounds, results["cnn"], results["kmeans"])
        )
        results["pipeline_cold"] = measure_cold_pipeline(setup) if args.full else None
    finally:
        if not args.keep and args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    machine["load_average_at_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - started

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    report = render_markdown(results)
    markdown.write_text(report)
    print(report)
    log.info("wrote %s and %s in %.0f s", args.out, markdown, results["total_s"])


if __name__ == "__main__":
    main()
