"""Memory figures that tests do not assert: page faults per CNN training step with and
without train_cnn's allocator setting, and the peak RSS of reading an IDX file against a
gzip bomb with the same header.

    .venv/bin/python benchmarks/memory_bench.py [--rounds 3]

From the repository root. Each measurement runs in a fresh Python process (a process's
peak RSS and fault count include everything it did before), --rounds times, taking turns.
Writes benchmarks/memory.json and prints one line per measurement: the minimum and the
maximum over the rounds.

- Training steps: the notebook's CNN at batch 64 in the channels-last layout, 20 steps to
  warm up, then minor page faults (ru_minflt) over 50 steps, with glibc's defaults and
  after stages.train_cnn.keep_freed_memory(). Glibc's defaults hand freed blocks back to
  the kernel and fault them in again on the next step.
- IDX reads: peak RSS (ru_maxrss) of mnist_pipeline.idx.read_images on a valid file of
  1,000 images (0.8 MB) and on the same header followed by 96 MiB more (a small gzip
  bomb). read_idx reads at most one byte past the declared size, which
  tests/test_idx.py checks by counting bytes; this shows what that costs in memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mnist_pipeline.environment import describe

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "memory.json"

TRAINING_STEP_FAULTS = """
import resource, sys
if sys.argv[1] == "keep_freed_memory":
    from stages.train_cnn import keep_freed_memory
    keep_freed_memory()
import torch
from mnist_pipeline.cnn import Net
torch.set_num_threads(2)
torch.manual_seed(0)
model = Net().to(memory_format=torch.channels_last)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
def step():
    model.zero_grad()
    torch.nn.functional.nll_loss(model(x), y).backward()
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
"""

PEAK_RSS = """
import resource, sys
from mnist_pipeline.idx import IdxError, read_images
try:
    read_images(sys.argv[1])
except IdxError:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def python(code: str, *args: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def write_idx_files(folder: Path) -> dict[str, Path]:
    """A valid gzipped IDX file of 1,000 blank images, and the same with 96 MiB appended."""
    images = np.zeros((1000, 28, 28), np.uint8)
    payload = bytes([0, 0, 8, 3]) + np.array(images.shape, ">u4").tobytes() + images.tobytes()
    valid, bomb = folder / "valid.gz", folder / "bomb.gz"
    valid.write_bytes(gzip.compress(payload, mtime=0))
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(payload)
        for _ in range(96):
            out.write(bytes(1 << 20))
    return {"valid": valid, "bomb": bomb}


def spread(values: list[float]) -> dict:
    return {"min": min(values), "max": max(values), "all": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each measurement")
    args = parser.parse_args()
    faults: dict[str, list[float]] = {"glibc defaults": [], "keep_freed_memory": []}
    rss: dict[str, list[float]] = {"valid": [], "bomb": []}
    with tempfile.TemporaryDirectory() as scratch:
        files = write_idx_files(Path(scratch))
        for _ in range(args.rounds):
            for setting in faults:
                faults[setting].append(python(TRAINING_STEP_FAULTS, setting))
            for name, path in files.items():
                rss[name].append(round(python(PEAK_RSS, str(path)) / 1024, 1))  # MiB
    results = {
        "machine": describe(("torch", "numpy"), threads=2),
        "rounds": args.rounds,
        "page_faults_per_training_step": {k: spread(v) for k, v in faults.items()},
        "idx_read_peak_rss_mib": {k: spread(v) for k, v in rss.items()},
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for setting, values in faults.items():
        print(f"page faults per training step, {setting}: {min(values):.1f}-{max(values):.1f}")
    for name, values in rss.items():
        print(f"peak RSS reading the {name} IDX file: {min(values):.1f}-{max(values):.1f} MiB")


if __name__ == "__main__":
    main()
