"""The tests pass whatever the user's working tree and DVC config hold: they build their
own params and DVC cache, and never read or write the user's."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import BIN, ROOT, dvc, keep_only_the_projects_dvc_config, make_repo, run


def test_a_users_shared_cache_and_remotes_stay_out_of_the_test_repos(tmp_path):
    # What `dvc cache dir`, `dvc config cache.type` and `dvc remote add -d` write.
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "[core]\n    analytics = false\n    remote = team\n"
        "[plots]\n    html_template = plots/offline.html\n"
        "[cache]\n    dir = /srv/team-cache\n    type = symlink\n"
        "['remote \"team\"']\n    url = /srv/team-remote\n"
    )
    keep_only_the_projects_dvc_config(tmp_path)
    assert (tmp_path / ".dvc" / "config").read_text() == (
        "[core]\n    analytics = false\n[plots]\n    html_template = plots/offline.html\n"
    )


def test_a_test_repo_keeps_its_own_cache_whatever_the_global_dvc_config(tmp_path, monkeypatch):
    # A user's `dvc cache dir --global`, in a stand-in for their config folder.
    user_config = tmp_path / "user-config"
    user_config.mkdir()
    (user_config / "config").write_text(f"[cache]\n    dir = {tmp_path / 'global-cache'}\n")
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(user_config))
    repo = make_repo(tmp_path / "repo")
    shown = dvc(repo, "cache", "dir").stdout.strip()
    assert Path(shown).resolve() == (repo / ".dvc" / "cache").resolve()


def test_lint_passes_after_a_run_left_the_dvclive_folder(tmp_path):
    """A run writes dvclive/; ruff must not then take the dvclive package for first-party."""
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in ("stages", "mnist_pipeline"):
        shutil.copytree(ROOT / package, tmp_path / package)
    (tmp_path / "dvclive" / "plots").mkdir(parents=True)  # what train_cnn leaves
    (tmp_path / "dvclive" / "metrics.json").write_text("{}\n")
    result = run([str(BIN / "ruff"), "check", "--no-cache", "stages"], cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout
