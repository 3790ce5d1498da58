"""The tests pass whatever the user's working tree and DVC config hold: they build their
own params and DVC cache, and never read or write the user's."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import dvc, keep_only_the_projects_dvc_config, make_repo


def test_a_test_repo_keeps_its_own_cache(tmp_path):
    repo = make_repo(tmp_path / "repo")
    shown = dvc(repo, "cache", "dir").stdout.strip()
    assert Path(shown).resolve() == (repo / ".dvc" / "cache").resolve()


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


def test_global_dvc_config_does_not_reach_the_test_repos(tmp_path, monkeypatch):
    # A user's `dvc cache dir --global`, in a stand-in for their config folder.
    user_config = tmp_path / "user-config"
    user_config.mkdir()
    (user_config / "config").write_text(f"[cache]\n    dir = {tmp_path / 'global-cache'}\n")
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(user_config))
    repo = make_repo(tmp_path / "repo")
    shown = dvc(repo, "cache", "dir").stdout.strip()
    assert Path(shown).resolve() == (repo / ".dvc" / "cache").resolve()
