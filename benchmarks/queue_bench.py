"""Experiments per hour through `dvc queue`: one worker with all the cores' threads against
several workers sharing them (compute.threads = cores / workers).

    .venv/bin/python benchmarks/queue_bench.py --experiments 4 --workers 1 2

From the repository root, with Fashion-MNIST from Debian (`apt-get install
dataset-fashion-mnist`). A scratch copy of the project runs the pipeline once on the full
data set (the baseline each experiment starts from), then, for each worker count N, queues
--experiments CNN experiments (each its own cnn.lr, so none is restored from the run-cache)
with compute.threads = cores / N, starts the queue with `-j N` and times it until it is
empty. Writes benchmarks/queue.json and prints one line per worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import REPO, copy_project

HERE = Path(__file__).resolve().parent


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["dvc", *args], cwd=project, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def wait_for_queue(project: Path) -> None:
    while any(word in dvc(project, "queue", "status") for word in ("Queued", "Running")):
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4, help="per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="leave the project there, for a look")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    results = {"cores": cores, "epochs": args.epochs, "runs": []}
    with tempfile.TemporaryDirectory(dir=REPO.parent) as tmp:
        where = args.keep or Path(tmp) / "project"
        where.mkdir(parents=True)
        project = copy_project(where, "fashion-mnist", args.epochs)
        started = time.perf_counter()
        dvc(project, "repro")
        print(f"baseline dvc repro: {time.perf_counter() - started:.0f} s", flush=True)
        subprocess.run(["git", "add", "-A"], cwd=project, check=True)
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run([*git, "commit", "-qm", "baseline"], cwd=project, check=True)
        for index, workers in enumerate(args.workers):
            threads = max(1, cores // workers)
            for n in range(args.experiments):
                lr = round(0.011 + 0.001 * (index * args.experiments + n), 4)
                dvc(project, "exp", "run", "--queue", "-S", f"cnn.lr={lr}",
                    "-S", f"compute.threads={threads}")  # fmt: skip
            started = time.perf_counter()
            dvc(project, "queue", "start", "-j", str(workers))
            wait_for_queue(project)
            seconds = time.perf_counter() - started
            failed = dvc(project, "queue", "status").count("Failed")
            run = {
                "workers": workers,
                "threads": threads,
                "experiments": args.experiments,
                "failed": failed,
                "seconds": round(seconds, 1),
                "per_hour": round(3600 * args.experiments / seconds, 1),
            }
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    (HERE / "queue.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
