"""The README's commands run as written (the ones a test repo can run: no remote server)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT, git, run

README = (ROOT / "README.md").read_text()


def bash_blocks(section: str) -> list[str]:
    """The ```bash blocks of one `## section` of the README."""
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", body, re.S)


def test_the_sharing_recipe_commits_every_result_that_belongs_in_git(repo_copy):
    (block,) = [b for b in bash_blocks("Sharing results between machines") if "git add" in b]
    (line,) = [line for line in block.splitlines() if line.startswith("git add")]
    run(["bash", "-euo", "pipefail", "-c", line], cwd=repo_copy)
    # What a run wrote is now committed, or ignored as DVC-cached: nothing is left over.
    status = git(repo_copy, "status", "--porcelain", "--untracked-files=all").stdout
    assert status.splitlines() == []
    committed = git(repo_copy, "show", "--name-only", "--format=", "HEAD").stdout.split()
    assert {"dvc.lock", "versions.json", "metrics/cnn.json", "metrics/kmeans.json"} <= set(
        committed
    )


pytestmark = pytest.mark.slow
