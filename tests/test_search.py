"""mnist-search: Optuna studies whose trials are DVC experiments, with real storages.

The embedded storage is the default SQLite file; the shared one a real PostgreSQL server
from Debian's package, started here on 127.0.0.1 (initdb, pg_ctl), with two workers in two
clones of one bare git remote and one DVC remote, as two machines would have them.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mnist_pipeline import search
from tests.helpers import (
    BIN,
    ROOT,
    command_env,
    commit_all,
    dvc,
    git,
    ran_stages,
    wait_until,
    write_params,
)

SPACE = {
    "study": "tiny",
    "objective": {"metric": "metrics/cnn.json", "key": "test_accuracy", "direction": "maximize"},
    "trials": 3,
    "seed": 0,
    "space": {"cnn.lr": {"choice": [0.05, 0.1]}},
}


def write_space(directory: Path, changes: dict | None = None) -> Path:
    path = directory / "search.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **(changes or {})}, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """tmp_path with the project's dvc.yaml and the notebooks' params: the working folder."""
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"space": {"cnn.lrr": {"float": [0.001, 0.1]}}}, "cnn.lrr is not a param; known in cnn"),
        ({"space": {"cnn.lr": {"float": [0.1, 0.001]}}}, "empty or inverted range"),
        ({"space": {"cnn.lr": {"float": [0.1, 0.1]}}}, "empty or inverted range"),
        ({"space": {"cnn.epochs": {"float": [1.0, 5.0]}}}, "holds an integer, so it cannot"),
        ({"space": {"cnn.lr": {"float": [0.001, 20.0]}}}, "cnn.lr = 20.0 is refused"),
        ({"space": {"kmeans.test_clusters": {"choice": [7]}}}, "7 is not in kmeans.n_clusters"),
        ({"space": {"cnn.lr": {"range": [0, 1]}}}, "give one of float: [LOW, HIGH]"),
        ({"space": {}}, "space: Dictionary should have at least 1 item"),
        (
            {"objective": {"metric": "metrics/x.json", "key": "a", "direction": "maximize"}},
            "objective: no stage writes metrics/x.json",
        ),
        (
            {"objective": {"metric": "metrics/cnn.json", "key": "a", "direction": "up"}},
            "objective.direction: Input should be 'maximize' or 'minimize'",
        ),
    ],
    ids=[
        "unknown-param",
        "inverted",
        "empty",
        "float-for-int",
        "out-of-bounds",
        "choice-not-in-sweep",
        "unknown-distribution",
        "no-space",
        "unwritten-metric",
        "direction",
    ],
)
def test_a_bad_search_space_is_one_line_before_any_trial(project, capsys, changes, message):
    write_space(project, changes)
    assert search.main(["--storage", f"sqlite:///{project}/study.db"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("mnist-search: error: search.yaml: ") and message in line, line
    assert not (project / "study.db").exists() and not (project / "search").exists()


def test_an_objective_key_the_metric_does_not_hold_is_refused(project, capsys):
    (project / "metrics").mkdir()
    (project / "metrics/cnn.json").write_text('{"test_accuracy": 0.9, "test_loss": 0.3}')
    write_space(project, {"objective": {**SPACE["objective"], "key": "accuracy"}})
    assert search.main([]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "metrics/cnn.json holds no accuracy; its keys are test_accuracy, test_loss" in line


def test_a_storage_that_cannot_be_reached_is_one_line_without_the_password(project, capsys):
    write_space(project)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://mnist:s3cret-pw@127.0.0.1:{port}/optuna"
    assert search.main(["--storage", url]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "cannot reach the study's storage postgresql://***@127.0.0.1" in line, line
    assert "s3cret-pw" not in line and "refused" in line.lower()


# --- PostgreSQL from Debian's package ------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if found is None:
        reason = f"needs PostgreSQL's {name} (`apt-get install postgresql`)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must not skip the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    return found


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and the server refuse to run as root: Debian's package has a postgres user.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on 127.0.0.1, user mnist with a password, database
    optuna; yields the URL without the password (it is in PGPASSWORD, as ~/.pgpass would)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    password = folder / "password"
    password.write_text("s3cret-pw\n")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(password, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run(
        _as_postgres(
            [
                initdb,
                "-D",
                str(data),
                "-U",
                "mnist",
                "--auth=scram-sha-256",
                f"--pwfile={password}",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    subprocess.run(
        _as_postgres(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PGPASSWORD": "s3cret-pw"}
    subprocess.run(
        [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mnist", "optuna"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield f"postgresql://mnist@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_a_wrong_database_password_is_one_line(project, capsys, postgres, monkeypatch):
    write_space(project)
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    assert search.main(["--storage", postgres]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "cannot reach the study's storage" in line and "password authentication failed" in line


# --- real studies ---------------------------------------------------------------------------


def trials_of(url: str, study: str = "tiny") -> list:
    import optuna

    search.quiet_optuna()
    return optuna.load_study(study_name=study, storage=search._driver_url(url)).get_trials()


def experiments(repo: Path) -> dict[str, dict]:
    """Experiment name -> its metrics/cnn.json, from `dvc exp show --json`."""
    found = {}
    for baseline in json.loads(dvc(repo, "exp", "show", "--json").stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                metrics = rev["data"].get("metrics") or {}
                found[rev["name"]] = metrics.get("metrics/cnn.json", {}).get("data")
    return found


@pytest.mark.slow
def test_embedded_study_resumes_after_ctrl_c_and_reuses_the_run_cache(repo_copy, mirror_env):
    # From the reproduced project, its results committed: a trial runs only the CNN's stages
    # (the tests' own compute.threads, 1, and a learning rate the baseline did not use).
    repo = repo_copy
    commit_all(repo, "baseline results")
    # One point, asked twice: the second time it must come from the run-cache.
    write_space(repo, {"trials": 2, "space": {"cnn.lr": {"choice": [0.07]}}})
    url = f"sqlite:///{repo}/search/optuna.db"
    env = command_env(mirror_env)
    command = [str(BIN / "mnist-search"), "--heartbeat", "2", "--threads", "1"]
    first = subprocess.Popen(
        command,
        cwd=repo,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = repo / "search/logs/tiny-0.log"
    # Ctrl-C reaches the whole foreground group: the command, dvc and the stage. (DVC says
    # that a stage started in its log only.)
    wait_until(lambda: log.exists() and "Running stage 'train_cnn'" in log.read_text(), 300, 0.5)
    os.killpg(first.pid, signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, out + err
    assert "trial 0 (tiny-0) interrupted: marked failed; run again to resume" in out
    assert "Traceback" not in out + err
    assert [t.state.name for t in trials_of(url)] == ["FAIL"]
    assert list((repo / ".dvc/tmp/exps").glob("tmp*")) == []  # dvc removed its copy

    # Run as the README says, .venv not activated: dvc and the stages are still the project's.
    bare = {**env, "PATH": "/usr/bin:/bin"}
    again = subprocess.run(command, cwd=repo, env=bare, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = trials_of(url)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "study tiny: 2 of 2 trials complete, 1 failed" in again.stdout
    # Every trial is an experiment of its own, its value read from the experiment's metrics.
    found = experiments(repo)
    for trial in trials[1:]:
        assert found[f"tiny-{trial.number}"]["test_accuracy"] == trial.value
    assert found.get("tiny-0") is None  # DVC lists the cut-off run as failed, with no metrics
    # The repeated point is restored, not trained again (trial 0 was cut off in training).
    seen = {}
    for trial in trials[1:]:
        ran = ran_stages((repo / f"search/logs/tiny-{trial.number}.log").read_text())
        lr = trial.params["cnn.lr"]
        assert ("train_cnn" in ran) == (lr not in seen), (trial.number, lr, ran)
        seen.setdefault(lr, trial.number)
    assert list(seen) == [0.07]
    best = max(trials[1:], key=lambda t: t.value)
    assert f"apply it with `dvc exp apply tiny-{best.number}`" in again.stdout
    assert (repo / "search/tiny/history.png").stat().st_size > 1000
    # The workspace is as it was: trials run outside it (dvc exp run --temp).
    assert git(repo, "status", "--porcelain").stdout.splitlines() == ["?? search.yaml"]


@pytest.mark.slow
def test_two_machines_share_a_postgresql_study_and_survive_kill_9(
    repo_copy, tmp_path, mirror_env, postgres, monkeypatch
):
    monkeypatch.setenv("PGPASSWORD", "s3cret-pw")  # for this process's own look at the study
    # The reproduced project, its results pushed: each machine clones and pulls them, and a
    # trial runs only the CNN's stages (learning rates the baseline did not use, and the
    # tests' own compute.threads, 1).
    project = repo_copy
    store = tmp_path / "dvc-remote"
    dvc(project, "remote", "add", "-d", "shared", str(store))
    space = {"cnn.lr": {"choice": [0.07, 0.1]}}
    write_space(project, {"study": "shared", "trials": 2, "space": space})
    commit_all(project, "results, search space and DVC remote")
    dvc(project, "push")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(project), str(remote))
    clones = {}
    for name in ("a", "b", "c"):
        clones[name] = tmp_path / name
        git(tmp_path, "clone", "-q", str(remote), str(clones[name]))
    for name in ("a", "b"):
        dvc(clones[name], "pull")
    env = command_env({**mirror_env, "PGPASSWORD": "s3cret-pw"})
    command = [
        str(BIN / "mnist-search"),
        "--storage",
        postgres,
        "--push",
        "origin",
        "--heartbeat",
        "2",
        "--threads",
        "1",
    ]

    def start(name: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*command, *extra],
            cwd=clones[name],
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def b_is_training() -> bool:  # DVC says that a stage started in its log only
        logs = list((clones["b"] / "search/logs").glob("shared-*.log"))
        return any("Running stage 'train_cnn'" in log.read_text() for log in logs)

    b = start("b")
    wait_until(b_is_training, 600, 0.5)
    # Machine A brings two workers for the one trial left: one must wait, not start a third.
    a = start("a", "--workers", "2")
    os.killpg(b.pid, signal.SIGKILL)  # machine B is gone: its worker, dvc and stage
    b.wait()
    out, _ = a.communicate(timeout=900)
    assert a.returncode == 0, out

    trials = trials_of(postgres, "shared")
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1, (states, out)
    assert len(trials) == 3  # B's, and one for each of A's workers: none started beyond
    (cut_off,) = [t for t in trials if t.state.name == "FAIL"]
    assert cut_off.user_attrs["worker"]["clone"] == str(clones["b"].resolve())
    done = sorted(f"shared-{t.number}" for t in trials if t.state.name == "COMPLETE")
    # A third machine sees every finished trial, outputs included.
    dvc(clones["c"], "exp", "pull", "origin", *done, env=env)
    found = experiments(clones["c"])
    assert sorted(n for n in found if n.startswith("shared-")) == done
    for trial in trials:
        if trial.state.name == "COMPLETE":
            assert found[f"shared-{trial.number}"]["test_accuracy"] == trial.value
    dvc(clones["c"], "exp", "apply", done[0], env=env)
    assert (clones["c"] / "models/cnn.pt").stat().st_size > 10_000


def test_workers_get_their_options_whole_and_no_abbreviations(project, capsys):
    args = search.parse_args(["--workers", "3", "--heartbeat", "5", "--push", "origin"])
    assert args.passed == ["--heartbeat", "5", "--push", "origin", "--threads", str(args.threads)]
    for bad in (["--worker", "4"], ["--threads", "0"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as exit_:
            search.parse_args(bad)
        assert exit_.value.code == 2, bad


def test_params_yaml_gets_the_stages_own_file_checks(project, capsys):
    write_space(project)
    (project / "params.yaml").write_text("a: &a [1, 2]\nb: *a\n")  # an alias, as in a bomb
    assert search.main([]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "params.yaml: line 2: YAML alias *a is not allowed in params" in line, line
