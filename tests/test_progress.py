"""Progress bars in a terminal, plain log lines elsewhere (CI, `dvc queue` workers)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.conftest import ROOT, write_params


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
