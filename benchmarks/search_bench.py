"""Trials per hour of mnist-search: one worker with all the cores' threads against several
workers sharing them (compute.threads = cores / workers).

    .venv/bin/python benchmarks/search_bench.py --trials 4 --workers 1 2

From the repository root, with Fashion-MNIST from Debian (`apt-get install
dataset-fashion-mnist`). A scratch copy of the project runs the pipeline once on the full
data set and commits it (the baseline every trial starts from); then, for each worker count
N, a study of its own (cnn.lr log-uniform in [0.005, 0.05], so no trial is restored from the
run-cache) runs --trials trials with `mnist-search --workers N`. Writes
benchmarks/search.json and prints one line per worker count.
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

import yaml
from bench import REPO, copy_project

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    results = {"cores": cores, "epochs": args.epochs, "runs": []}
    with tempfile.TemporaryDirectory(dir=REPO.parent) as tmp:
        (Path(tmp) / "project").mkdir()
        project = copy_project(Path(tmp) / "project", "fashion-mnist", args.epochs)
        started = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=project, env=env, check=True, capture_output=True)
        print(f"baseline dvc repro: {time.perf_counter() - started:.0f} s", flush=True)
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run(["git", "add", "-A"], cwd=project, check=True)
        subprocess.run([*git, "commit", "-qm", "baseline"], cwd=project, check=True)
        for workers in args.workers:
            space = {
                "study": f"bench-{workers}",
                "objective": {
                    "metric": "metrics/cnn.json",
                    "key": "test_accuracy",
                    "direction": "maximize",
                },
                "trials": args.trials,
                "seed": workers,
                "space": {"cnn.lr": {"float": [0.005, 0.05], "log": True}},
            }
            (project / "search.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
            started = time.perf_counter()
            done = subprocess.run(
                [str(BIN / "mnist-search"), "--workers", str(workers)],
                cwd=project, env=env, capture_output=True, text=True,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"mnist-search --workers {workers} failed:\n{done.stdout}{done.stderr}")
            run = {
                "workers": workers,
                "threads": max(1, cores // workers),
                "trials": args.trials,
                "seconds": round(seconds, 1),
                "per_hour": round(3600 * args.trials / seconds, 1),
            }
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    (HERE / "search.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
