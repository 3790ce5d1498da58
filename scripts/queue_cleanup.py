"""Clean up after a `dvc queue` worker was killed (kill -9, the out-of-memory killer, a reboot).

DVC never notices: the experiment says Running for ever, and its copy of the workspace
stays in .dvc/tmp/exps (README, "Comparing experiments"). For each experiment named, this
runs `dvc queue kill` until DVC calls it Failed (the first call stops what still runs of
it), then `dvc queue remove`, then deletes its copy of the workspace, which no DVC command
removes. Run it from the repository root, with the environment's dvc on PATH:

    python scripts/queue_cleanup.py NAME [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

EXPS = Path(".dvc/tmp/exps")
KILLS = 5  # DVC 3.67.1 needed two: one stops the processes, the next sees them gone


def queue_states() -> dict[str, tuple[str, str]]:
    """Name and task id -> (task id, state), from `dvc queue status`."""
    out = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True, check=True)
    states = {}
    for line in out.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("Worker status"):
            states[fields[0]] = states[fields[1]] = (fields[0], fields[-1])
    return states


def workspace_copy(task: str) -> Path | None:
    """The experiment's copy of the workspace, from the record DVC keeps of its run."""
    for info in (EXPS / "run").glob(f"{task}*/{task}*.run"):
        root = Path(json.loads(info.read_text())["root_dir"])
        if root.parent.resolve() == EXPS.resolve():  # never anything outside .dvc/tmp/exps
            return root
    return None


def clean(name: str) -> str:
    """Stop, drop and delete one experiment; a line saying what was done."""
    found = queue_states().get(name)
    if found is None:
        raise SystemExit(f"queue_cleanup: {name}: not in `dvc queue status`; nothing to clean")
    task, state = found
    if state not in ("Running", "Failed"):
        raise SystemExit(f"queue_cleanup: {name} is {state}: only Running or Failed are cleaned")
    copy = workspace_copy(task)
    for _ in range(KILLS):
        if state != "Running":
            break
        subprocess.run(["dvc", "queue", "kill", name], capture_output=True, text=True, check=True)
        time.sleep(1)  # the killed processes exit
        state = queue_states()[name][1]
    if state == "Running":
        raise SystemExit(f"queue_cleanup: {name} still says Running after {KILLS} `dvc queue kill`")
    subprocess.run(["dvc", "queue", "remove", name], capture_output=True, text=True, check=True)
    if copy is None or not copy.exists():
        return f"queue_cleanup: {name}: stopped and removed from the queue"
    shutil.rmtree(copy)
    return f"queue_cleanup: {name}: stopped, removed from the queue, {copy} deleted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="experiment name or task id")
    for name in parser.parse_args().names:
        print(clean(name))


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit(f"queue_cleanup: `{' '.join(exc.cmd)}` failed: {exc.stderr or exc.stdout}")
