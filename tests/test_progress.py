"""Progress bars in a terminal, plain log lines elsewhere (CI, `dvc queue` workers)."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from mnist_pipeline import runtime
from mnist_pipeline.runtime import progress
from tests.helpers import ROOT, write_params


def run_download(workdir: Path, mirror: str, terminal: bool) -> str:
    """Run the download stage with stderr on a pseudo-terminal or a pipe; return stderr."""
    workdir.mkdir()
    write_params(workdir)  # data.dataset mnist, checksums verified
    args = [sys.executable, "-m", "stages.download", "--out", "raw"]
    env = {**os.environ, "DATA_MIRROR": mirror, "PYTHONPATH": str(ROOT)}
    if not terminal:
        result = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True)
        assert result.returncode != 0  # tiny data fails MNIST's checksums: fine for this check
        return result.stderr
    leader, follower = pty.openpty()
    # A new pseudo-terminal is 0x0, and tqdm draws nothing in zero columns: size it.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen(args, cwd=workdir, env=env, stdout=follower, stderr=follower) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_terminal_gets_byte_progress_bars_and_pipes_get_log_lines(http_mirror, tmp_path):
    in_terminal = run_download(tmp_path / "a", http_mirror, terminal=True)
    piped = run_download(tmp_path / "b", http_mirror, terminal=False)
    # tqdm draws "<name>: 100%|####| 52.3k/52.3k [..., kB/s]" with carriage returns.
    assert "train-images-idx3-ubyte.gz" in in_terminal and "%|" in in_terminal
    assert "B/s" in in_terminal
    assert "%|" not in piped and "\r" not in piped
    assert "checksum mismatch" in piped  # the log lines are still there


def test_without_a_terminal_progress_is_logged_every_tenth_and_every_30_s(caplog, monkeypatch):
    # pytest's captured stderr is no terminal, as in `dvc queue logs` or a log file.
    with caplog.at_level(logging.INFO, logger="stages"):
        assert list(progress(range(95), desc="epoch 1/5", unit="batches")) == list(range(95))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "epoch 1/5: 10/95 batches (10%)"
    assert lines[-1] == "epoch 1/5: 90/95 batches (94%)"
    assert len(lines) == 9  # the epoch's own line follows the last batch
    caplog.clear()
    clock = iter(range(0, 10_000, 20))  # 20 s per item: a slow machine
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="stages"):
        list(progress(range(7), desc="k-means sweep", unit="fits"))
    # Fewer items than ten: every item is a tenth or more, and a line follows each but the last.
    assert [r.getMessage() for r in caplog.records][:2] == [
        "k-means sweep: 1/7 fits (14%)",
        "k-means sweep: 2/7 fits (28%)",
    ]
    caplog.clear()
    clock = iter(range(0, 100_000, 20))
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="stages"):
        list(progress(range(1000), desc="epoch 2/5", unit="batches"))
    logged = [int(r.getMessage().split()[2].split("/")[0]) for r in caplog.records]
    assert logged[:3] == [2, 4, 6]  # 30 s after the last line, well before a tenth
