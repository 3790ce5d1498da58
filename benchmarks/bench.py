"""Benchmark the pipeline against the two notebooks' way of doing the same work.

From the repository root: the full run, then a smoke test (its timings mean nothing). Each
run reports its own wall time at the end (and in the JSON):

    .venv/bin/python benchmarks/bench.py --raw /usr/share/datasets/fashion-mnist --full --rounds 5
    .venv/bin/python benchmarks/bench.py --raw /usr/share/datasets/fashion-mnist \
        --rounds 1 --epochs 1 --n-train 6000 --out /tmp/bench.json --markdown /tmp/bench.md

Measured, each in a fresh process (this file with --worker), --threads torch threads:
- CNN epoch of --n-train images: the notebook (torchvision data set, DataLoader, transforms),
  the notebook with train_cnn's allocator setting, stages.train_cnn.train (epoch_seconds);
  then each one's test accuracy after --epochs epochs.
- k-means sweep: MiniBatchKMeans, scikit-learn's defaults, float64 pixels, against
  stages.kmeans_sweep.sweep; the kept model's test accuracy.
- Each stage alone with dvc.yaml's command line, in a copy of the project made as the tests
  make theirs (tests/helpers.py: the notebooks' params, set to --dataset and cnn.epochs =
  --epochs): wall time and peak RSS.
- With --full, through hyperfine: a cold `dvc repro` of a fresh copy, a no-op one, and the
  notebook-equivalent scripts.
The sides take turns for --rounds rounds (hyperfine: --rounds runs each). Writes JSON (--out)
and a markdown report (--markdown): tables, then benchmarks/NOTES.md as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from itertools import islice
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = str(Path(__file__).resolve())
# torchvision's class for each data set; it reads decompressed IDX files from ROOT/CLASS/raw/.
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
# A training step of mnist_pipeline.cnn.Net, per image: 480,500 multiply-adds forward (conv1
# 144,000, conv2 320,000, fc1 16,000, fc2 500) x 2 FLOP x 3 (forward, input and weight
# gradients) = 2.88 MFLOP.
TRAIN_FLOP_PER_IMAGE = 480_500 * 2 * 3
CNN_SIDES = {  # report label: (worker, extra spec); the last is the base of the ratios
    "notebook (DataLoader)": ("cnn_notebook", {}),
    "notebook + keep_freed_memory()": ("cnn_notebook", {"keep_freed_memory": True}),
    # train_cnn's main() applies the allocator setting before training; so does this side.
    "pipeline (train_cnn.train)": ("cnn_pipeline", {"keep_freed_memory": True}),
}
KMEANS_SIDES = {
    "notebook (float64, defaults)": ("kmeans_notebook", {}),
    "pipeline (kmeans_sweep.sweep)": ("kmeans_pipeline", {}),
}


def cnn_notebook(spec: dict) -> dict:
    """Worker: the CNN notebook, a torchvision data set and DataLoader, per-sample transforms."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_pipeline.cnn import Net

    torch.set_num_threads(spec["threads"])
    norm = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = getattr(datasets, TORCHVISION[spec["dataset"]])
    train_set = dataset(spec["tv_root"], train=True, transform=norm)
    test_set = dataset(spec["tv_root"], train=False, transform=norm)
    train_set.data = train_set.data[: spec["n_train"]]
    train_set.targets = train_set.targets[: spec["n_train"]]

    def train_epoch(model, optimizer, batches):
        model.train()
        for i, (x, y) in enumerate(batches):
            optimizer.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            optimizer.step()
            if i % 10 == 0:
                loss.item()  # the notebook prints the loss every 10 batches

    if spec["warmup"]:  # untimed: one-off kernel set-up and the optimizer's first-use imports
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
        train_epoch(model, optimizer, islice(DataLoader(train_set, batch_size=64), 10))
    torch.manual_seed(1)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader, epoch_s = DataLoader(test_set, batch_size=1000), []
    for _ in range(spec["epochs"]):
        start = time.perf_counter()
        train_epoch(model, optimizer, loader)
        epoch_s.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test_loader)
    return {"seconds": statistics.mean(epoch_s), "test_accuracy": correct / len(test_set)}


def _project(spec: dict, model: str):
    """The project copy's params, and its processed data cut to the first n_train images."""
    from mnist_pipeline.config import load_params
    from mnist_pipeline.processed import CNN_IMAGE, FLAT_IMAGE, load_processed

    image = CNN_IMAGE if model == "cnn" else FLAT_IMAGE
    data = load_processed(Path(spec["project"], "data/processed", model), image)
    n = spec["n_train"]
    data = dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
    return load_params(Path(spec["project"], "params.yaml")), data


def cnn_pipeline(spec: dict) -> dict:
    """Worker: stages.train_cnn.train, whose epoch_seconds time each epoch's training."""
    import torch

    from stages.train_cnn import train

    torch.set_num_threads(spec["threads"])
    params, data = _project(spec, "cnn")
    params = dataclasses.replace(params.cnn, epochs=spec["epochs"])
    if spec["warmup"]:  # untimed, as the notebook's: ten batches (and a test pass)
        n = 10 * params.batch_size
        warm = dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
        train(warm, dataclasses.replace(params, epochs=1))
    result = train(data, params)
    accuracy = result.test_log[-1]["test_accuracy"]
    return {"seconds": statistics.mean(result.epoch_seconds), "test_accuracy": accuracy}


def kmeans_notebook(spec: dict) -> dict:
    """Worker: the k-means notebook, MiniBatchKMeans with defaults on float64 pixels / 255."""
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import homogeneity_score

    from mnist_pipeline.config import load_params
    from mnist_pipeline.datasets import FILES
    from mnist_pipeline.idx import read_idx

    params = load_params(Path(spec["project"], "params.yaml")).kmeans
    x, y, x_test, y_test = (read_idx(Path(spec["raw"], f"{name}.gz")) for name in FILES)
    x, y = x[: spec["n_train"]].reshape(-1, 784) / 255.0, y[: spec["n_train"]]
    rows, start = [], time.perf_counter()
    for k in params.n_clusters:
        # random_state fixed so that runs compare; the rest are scikit-learn's defaults.
        kmeans = MiniBatchKMeans(n_clusters=k, random_state=params.random_state).fit(x)
        # The notebook's majority vote, one cluster at a time.
        labels = [np.bincount(y[kmeans.labels_ == i], minlength=10).argmax() for i in range(k)]
        labels = np.array(labels)
        accuracy = float(np.mean(labels[kmeans.labels_] == y))
        homogeneity = homogeneity_score(y, kmeans.labels_)
        rows.append({"n_clusters": k, "accuracy": accuracy, "homogeneity": homogeneity})
        if k == params.test_clusters:
            kept, kept_labels = kmeans, labels
    seconds = time.perf_counter() - start
    predicted = kept_labels[kept.predict(x_test.reshape(-1, 784) / 255.0)]
    return {"seconds": seconds, "test_accuracy": float(np.mean(predicted == y_test)), "rows": rows}


def kmeans_pipeline(spec: dict) -> dict:
    """Worker: stages.kmeans_sweep.sweep, and the kept model's test accuracy."""
    from mnist_pipeline.metrics import accuracy
    from stages.kmeans_sweep import sweep

    params, data = _project(spec, "kmeans")
    start = time.perf_counter()
    rows, model = sweep(data, params.kmeans)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(data.test_y, model.predicted_classes(data.test_x))
    return {"seconds": seconds, "test_accuracy": test_accuracy, "rows": rows}


def run_worker(task: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec.get("keep_freed_memory"):
        from stages.train_cnn import keep_freed_memory

        keep_freed_memory()
    print(json.dumps(globals()[task](spec)), flush=True)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Runs one command and writes "WALL_S PEAK_RSS_KIB" to argv[1]. A child's peak RSS starts
# from its parent's (it begins as a copy of it, and exec keeps the larger peak), so each
# command is started by this small stdlib-only process, not by the launcher, which imports
# the tests' helpers (numpy among them).
MEASURE = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - start} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def run_measured(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and output of one child; os.wait4 reports that child alone."""
    with tempfile.TemporaryFile("w+") as out, tempfile.NamedTemporaryFile("r") as figures:
        measured = [sys.executable, "-S", "-c", MEASURE, figures.name, *cmd]
        returncode = subprocess.run(
            measured, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
        out.seek(0)
        output = out.read()
        wall, rss_kib = (float(x) for x in (figures.read() or "0 0").split())
    if returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed ({returncode}):\n{output[-3000:]}")
    return wall, rss_kib / 1024, output


def worker(task: str, spec: dict, env: dict) -> dict:
    cmd = [sys.executable, BENCH, "--worker", task, json.dumps(spec)]
    _, rss, output = run_measured(cmd, REPO, env)
    return json.loads(output.splitlines()[-1]) | {"peak_rss_mib": rss}


def compare(sides: dict, spec: dict, rounds: int, env: dict) -> dict:
    """Each side once a round, the order rotating; per side the median and minimum seconds,
    the median of the per-round ratios to the last side's, the largest peak RSS, each run."""
    names, runs = list(sides), {name: [] for name in sides}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            runs[name].append(worker(sides[name][0], spec | sides[name][1], env))
            say(f"round {i + 1}, {name}: {runs[name][-1]['seconds']:.2f} s")
    base = [r["seconds"] for r in runs[names[-1]]]
    return {
        name: {
            "median_s": statistics.median(r["seconds"] for r in rs),
            "min_s": min(r["seconds"] for r in rs),
            "ratio": statistics.median(r["seconds"] / b for r, b in zip(rs, base, strict=True)),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "runs": rs,
        }
        for name, rs in runs.items()
    }


def copy_project(dest: Path, dataset: str, epochs: int) -> Path:
    """What `dvc repro` needs, in a git repo of its own, with dataset and epochs set."""
    from tests.helpers import copy_project  # the tests' copy: the same files, params, config

    return copy_project(dest, {"data": {"dataset": dataset}, "cnn": {"epochs": epochs}})


def measure_stages(project: Path, env: dict) -> list[dict]:
    """Every stage once, in dvc.yaml's order, with the command line dvc.yaml gives it."""
    rows = []
    for name, stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].items():
        wall, rss, _ = run_measured(shlex.split(stage["cmd"]), project, env)
        rows.append({"stage": name, "wall_s": wall, "peak_rss_mib": rss})
        say(f"stage {name}: {wall:.1f} s, {rss:.0f} MiB")
    return rows


def measure_whole(scratch: Path, spec: dict, runs: int, env: dict) -> list[dict]:
    """hyperfine: a cold `dvc repro` of a fresh copy, a no-op one, the notebook scripts."""
    copy_project(scratch / "fresh", spec["dataset"], spec["epochs"])
    full = spec | {"n_train": 60_000, "warmup": False}  # as much work as `dvc repro` does
    notebooks = " && ".join(
        shlex.join([sys.executable, BENCH, "--worker", task, json.dumps(full)])
        for task in ("cnn_notebook", "kmeans_notebook")
    )
    # Before every cold run, a new copy of the untouched project: no outputs, no DVC cache,
    # no hash database, whatever the stages write. The no-op runs follow the last cold one.
    reset = "rm -rf cold && cp -a fresh cold"
    cmd = ["hyperfine", "--runs", str(runs), "--style", "basic", "--export-json", "hf.json"]
    for name, prepare, command in [
        ("dvc repro, fresh copy (download to plots)", reset, "cd cold && dvc repro"),
        ("dvc repro, nothing changed", "true", "cd cold && dvc repro"),
        ("notebook-equivalent scripts (CNN, then k-means)", "true", notebooks),
    ]:
        cmd += ["--command-name", name, "--prepare", prepare, command]
    subprocess.run(cmd, cwd=scratch, env=env, check=True, stdout=sys.stderr)
    return json.loads((scratch / "hf.json").read_text())["results"]


def describe_cpu(cores: int) -> tuple[str, int | None]:
    """The CPU's name and nominal fp32 GFLOP/s from /proc/cpuinfo: SIMD lanes x 2 FLOP per FMA
    x 2 FMA units (Zen 5, most server Xeons) x cores x MHz, turbo not counted; a yardstick."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    keys = ("model name", "cpu MHz", "flags")
    name, mhz, flags = ((re.findall(rf"^{k}\s*:\s*(.*)$", info, re.M) or [""])[0] for k in keys)
    lanes = 16 if "avx512f" in flags.split() else 8 if "fma" in flags.split() else 0
    return name or "unknown", round(lanes * 2 * 2 * cores * float(mhz or 0) / 1e3) or None


def table(header: list[str], rows: list[list]) -> str:
    lines = [header, ["---"] + ["---:"] * (len(header) - 1), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def render(r: dict) -> str:
    s, peak = r["settings"], r["machine"]["nominal fp32 peak, GFLOP/s"]
    n, rounds = s["n_train"], f"rounds: {s['rounds']}, the sides taking turns"

    def cells(v: dict) -> list[str]:
        times = [f"{v['median_s']:.2f}", f"{v['min_s']:.2f}", f"{v['ratio']:.2f}x"]
        return [*times, f"{v['peak_rss_mib']:.0f}", f"{v['test_accuracy']:.4f}"]

    def gflops(v: dict) -> str:
        value = n / v["median_s"] * TRAIN_FLOP_PER_IMAGE / 1e9
        return f"{value:.1f}" + (f" ({value / peak:.0%} of peak)" if peak else "")

    head = ["side", "median s", "min s", "x the pipeline's time (median)", "peak RSS MiB"]
    cnn = [[k, *cells(v), gflops(v)] for k, v in r["cnn"].items()]
    km = [[k, *cells(v)] for k, v in r["kmeans"].items()]
    stages = [[x["stage"], f"{x['wall_s']:.1f}", f"{x['peak_rss_mib']:.0f}"] for x in r["stages"]]
    parts = [
        "# Benchmarks: the pipeline against the notebooks' way",
        f"Tables by `python benchmarks/bench.py {s['args']}`; notes from benchmarks/NOTES.md.",
        table(["machine", ""], [[k, v] for k, v in r["machine"].items()]),
        f"## CNN, one training epoch of {n:,} images ({rounds})",
        table([*head, f"test accuracy after {s['epochs']} epoch(s)", "training GFLOP/s"], cnn),
        f"## k-means sweep of {n:,} images ({rounds})",
        table([*head, "test accuracy, kept model"], km),
        "## Stages, each run alone as dvc.yaml runs it, all the images",
        table(["stage", "wall s", "peak RSS MiB"], stages),
    ]
    if r.get("whole"):
        whole = [
            [x["command"], *(f"{x[k]:.1f}" for k in ("median", "min", "max"))] for x in r["whole"]
        ]
        parts.append(f"## Whole pipeline, all the images (hyperfine, runs: {s['rounds']})")
        parts.append(table(["command", "median s", "min s", "max s"], whole))
    return "\n\n".join(parts) + "\n\n" + Path(__file__).with_name("NOTES.md").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="directory with the four IDX .gz files")
    parser.add_argument("--dataset", choices=list(TORCHVISION), default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results.json")
    parser.add_argument("--markdown", type=Path, default=REPO / "benchmarks/RESULTS.md")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (hyperfine: runs) each")
    parser.add_argument("--epochs", type=int, default=5, help="CNN epochs for test accuracy")
    parser.add_argument("--n-train", type=int, default=60_000, help="training images")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--full", action="store_true", help="also the whole pipeline")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # run as benchmarks/bench.py: find tests/, stages/, ...
    if args.worker:
        run_worker(*args.worker)
        return
    started = time.perf_counter()
    if args.raw is None or (args.full and not shutil.which("hyperfine")):
        parser.error("--raw is required; --full needs hyperfine")
    raw, cores = args.raw.resolve(), len(os.sched_getaffinity(0))
    cpu, peak = describe_cpu(cores)
    software = [f"{p} {version(p)}" for p in ("torch", "torchvision", "scikit-learn", "dvc")]
    machine = {
        "CPU": f"{cpu}, {cores} cores available",
        "nominal fp32 peak, GFLOP/s": peak,
        "torch threads, both sides": args.threads,
        "software": ", ".join([f"Python {sys.version.split()[0]}", *software]),
        "data set": f"{args.dataset} ({raw})",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    env = os.environ | {
        # The stages run as `python -m stages.X`: this interpreter's environment first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DATA_MIRROR": str(raw),  # where the download stage finds the files
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": str(args.threads),  # scikit-learn's threads, and the stages'
    }
    settings = {k: getattr(args, k) for k in ("dataset", "rounds", "epochs", "n_train")}
    results = {"machine": machine, "settings": settings | {"args": shlex.join(sys.argv[1:])}}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        scratch = Path(tmp)
        tv_raw = scratch / "torchvision" / TORCHVISION[args.dataset] / "raw"
        tv_raw.mkdir(parents=True)
        for gz in raw.glob("*-ubyte.gz"):  # torchvision reads only decompressed files
            with gzip.open(gz) as src, open(tv_raw / gz.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        project = copy_project(scratch / "project", args.dataset, args.epochs)
        spec = settings | {"raw": str(raw), "tv_root": str(scratch / "torchvision")}
        spec |= {"project": str(project), "threads": args.threads, "epochs": 1, "warmup": True}
        results["stages"] = measure_stages(project, env)  # also writes the data the rest read
        results["cnn"] = compare(CNN_SIDES, spec, args.rounds, env)
        for name, (task, extra) in CNN_SIDES.items():  # test accuracy after --epochs epochs
            run = worker(task, spec | extra | {"epochs": args.epochs}, env)
            results["cnn"][name] |= {"test_accuracy": run["test_accuracy"], "accuracy_run": run}
            say(f"{name}: test accuracy {run['test_accuracy']:.4f}, {args.epochs} epoch(s)")
        results["kmeans"] = compare(KMEANS_SIDES, spec, args.rounds, env)
        for side in results["kmeans"].values():  # the same in every round
            side["test_accuracy"] = side["runs"][0]["test_accuracy"]
        if args.full:
            results["whole"] = measure_whole(
                scratch, spec | {"epochs": args.epochs}, args.rounds, env
            )
    machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine["this run of bench.py, wall s"] = round(time.perf_counter() - started)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.write_text(render(results))
    print(args.markdown.read_text())


if __name__ == "__main__":
    main()
