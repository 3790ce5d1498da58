"""Hostile params: a secret in a mirror URL, a params.yaml that is no params file, a YAML
alias bomb, and values whose cost is out of all proportion to the data. Each gets one line
before any network access or work, and nothing already made is lost."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import http.server
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mnist_pipeline.config import (
    MAX_CLUSTERS,
    MAX_CNN_BATCH,
    MAX_CNN_TEST_BATCH,
    MAX_PARAMS_BYTES,
    MAX_SWEEP_CLUSTERS,
    DataParams,
    ParamsError,
    parse_params,
    redact_url,
)
from mnist_pipeline.config import main as config_main
from mnist_pipeline.datasets import FILES
from mnist_pipeline.runtime import PipelineError
from stages.download import download, netrc_login
from tests.helpers import (
    BIN,
    NOTEBOOK_PARAMS,
    ROOT,
    TINY_PARAMS,
    QuietHandler,
    command_env,
    dvc,
    make_repo,
    serve,
    set_params,
)

SECRET = "s3cret-pw"  # never in a message, a log or dvc.lock
# The subprocesses below may not grow past this, so that a regression (an alias bomb
# expanded, /dev/zero read to the end) fails the test instead of filling the machine.
ADDRESS_SPACE_CAP = 4 << 30


def merged(base: dict, changes: dict) -> dict:
    raw = copy.deepcopy(base)
    for section, values in changes.items():
        raw[section].update(values)
    return raw


def capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def run_capped(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300):
    return subprocess.run(
        args,
        cwd=cwd,
        env=command_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=capped,
    )


def one_error_line(stderr: str) -> bool:
    lines = stderr.splitlines()
    return len(lines) == 1 and lines[0].startswith("error: ")


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- A secret in a mirror URL ------------------------------------------------------------


class _CountingFiles(QuietHandler, http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests += 1
        super().do_GET()


class _LoginFiles(_CountingFiles):
    """Serves the files only to a request with the basic-auth login reader:SECRET."""

    def do_GET(self):
        self.server.requests += 1
        expected = "Basic " + base64.b64encode(f"reader:{SECRET}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mirror"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.authorized = getattr(self.server, "authorized", 0) + 1
        http.server.SimpleHTTPRequestHandler.do_GET(self)


def counting_server(tiny_dir: Path, handler=_CountingFiles) -> serve:
    return serve(handler=functools.partial(handler, directory=str(tiny_dir)))


def write_netrc(home: Path) -> None:
    home.mkdir(exist_ok=True)
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login reader password {SECRET}\n")
    netrc.chmod(0o600)


SECRET_URLS = [
    f"http://reader:{SECRET}@127.0.0.1:9/mnist/",
    f"https://{SECRET}@127.0.0.1/mnist/",
    f"http://127.0.0.1:9/mnist/?token={SECRET}",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_secret_in_a_mirror_url_is_refused_without_repeating_it(url):
    raw = merged(NOTEBOOK_PARAMS, {"data": {"mirrors": [url]}})
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert message.startswith("data.mirrors: http") and "\n" not in message
    assert SECRET not in message
    assert "127.0.0.1" in message and "~/.netrc" in message


def test_a_url_given_where_the_list_is_meant_is_not_repeated_either():
    raw = merged(NOTEBOOK_PARAMS, {"data": {"mirrors": SECRET_URLS[0]}})
    with pytest.raises(ParamsError, match="data.mirrors: expected a list") as caught:
        parse_params(raw)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SECRET_URLS[0], "http://***@127.0.0.1:9/mnist/"),
        (SECRET_URLS[2], "http://127.0.0.1:9/mnist/?***"),
        # Study storages (mnist-search --storage): libpq also takes ?password=, and a port
        # that is not a number is no reason to show the rest.
        (f"postgresql://u@h/db?password={SECRET}", "postgresql://***@h/db?***"),
        (f"postgresql://u:{SECRET}@h:port/db", "postgresql://***@h:port/db"),
        ("sqlite:///search/optuna.db", "sqlite:///search/optuna.db"),
        ("/data/copies@host?v=1", "/data/copies@host?v=1"),  # a local path, shown as it is
        (f"http://[::1:{SECRET}@h/", "(a malformed URL)"),
    ],
)
def test_urls_are_shown_without_their_secrets(url, shown):
    assert redact_url(url) == shown


def test_local_folders_may_hold_at_signs(tmp_path):
    folder = str(tmp_path / "copies@host?v=1")
    assert parse_params(merged(NOTEBOOK_PARAMS, {"data": {"mirrors": [folder]}})).data.mirrors


def test_a_secret_mirror_is_refused_before_any_name_lookup(tmp_path, monkeypatch):
    # A URL with `user:password@127.0.0.1` is sent to the resolver whole by urllib: the
    # refusal must come before any socket is opened or any name looked up. (One in
    # data.mirrors is refused as the params are made: the next test.)
    lookups = []

    def no_network(*args, **kwargs):
        lookups.append(args[0])
        raise socket.gaierror("the test allows no network access")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    url = SECRET_URLS[0]
    with pytest.raises(ParamsError) as caught:
        download(DataParams("mnist", (), verify=False), tmp_path / "raw", env_mirror=url)
    assert str(caught.value).startswith("DATA_MIRROR: http://***@127.0.0.1:9/mnist/ holds a user")
    assert SECRET not in str(caught.value)
    assert lookups == []
    assert not (tmp_path / "raw").exists()


def test_params_with_a_secret_mirror_cannot_be_made():
    with pytest.raises(ValidationError) as caught:
        DataParams("mnist", (SECRET_URLS[0],), verify=False)
    message = str(caught.value)
    assert "data.mirrors: http://***@127.0.0.1:9/mnist/ holds a user" in message
    assert SECRET not in message  # pydantic's own text does not show the input either


def test_the_login_comes_from_netrc(tiny_dir, tmp_path, monkeypatch):
    write_netrc(tmp_path / "home")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mirror = counting_server(tiny_dir, _LoginFiles)
    with mirror as url:
        download(DataParams("mnist", (url,), verify=False), tmp_path / "raw")
    assert digests(tmp_path / "raw") == digests(tiny_dir)
    assert mirror.server.authorized == len(FILES)


def test_a_mirror_that_wants_a_login_says_where_it_goes(tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no .netrc
    with counting_server(tiny_dir, _LoginFiles) as url, pytest.raises(PipelineError) as caught:
        download(DataParams("mnist", (url,), verify=False), tmp_path / "raw")
    assert "HTTP 401 Unauthorized; it needs a login: add `machine 127.0.0.1 login USER" in str(
        caught.value
    )


class _Redirect(QuietHandler):
    """Answers every request with a redirect to server.target (another server)."""

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.server.target + self.path.lstrip("/"))
        self.send_header("Content-Length", "0")
        self.end_headers()


class _RecordingFiles(_CountingFiles):
    def do_GET(self):
        self.server.logins = [*getattr(self.server, "logins", []), self.headers["Authorization"]]
        super().do_GET()


def test_the_login_is_not_sent_where_a_redirect_points(tiny_dir, tmp_path, monkeypatch):
    write_netrc(tmp_path / "home")  # for 127.0.0.1, both servers' host
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target = counting_server(tiny_dir, _RecordingFiles)
    redirect = serve(handler=_Redirect)
    with target as target_url, redirect as url:
        redirect.server.target = target_url
        download(DataParams("mnist", (url,), verify=False), tmp_path / "raw")
    assert digests(tmp_path / "raw") == digests(tiny_dir)
    assert target.server.logins == [None] * len(FILES)


def test_a_netrc_others_may_read_is_refused(tiny_dir, tmp_path, monkeypatch):
    write_netrc(tmp_path / "home")
    (tmp_path / "home/.netrc").chmod(0o644)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with counting_server(tiny_dir, _LoginFiles) as url, pytest.raises(PipelineError) as caught:
        download(DataParams("mnist", (url,), verify=False), tmp_path / "raw")
    assert str(caught.value) == (
        "~/.netrc: others may read it, and it holds passwords: `chmod 600 ~/.netrc`"
    )


def test_a_damaged_netrc_is_named_without_quoting_it(tiny_dir, tmp_path, monkeypatch):
    write_netrc(tmp_path / "home")
    netrc = tmp_path / "home/.netrc"
    netrc.write_text(netrc.read_text() + f"{SECRET} follows\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with counting_server(tiny_dir, _LoginFiles) as url, pytest.raises(PipelineError) as caught:
        download(DataParams("mnist", (url,), verify=False), tmp_path / "raw")
    assert str(caught.value).startswith("~/.netrc: line 2: not a netrc file")
    assert SECRET not in str(caught.value)


@pytest.mark.slow
def test_a_secret_in_params_never_reaches_dvc_lock_or_a_log(tiny_dir, tmp_path):
    repo = make_repo(tmp_path / "repo")
    set_params(repo, {"data": {"mirrors": [SECRET_URLS[0]]}})
    good = counting_server(tiny_dir)
    with good as good_url:
        # A good DATA_MIRROR first: before, the download succeeded from it and DVC wrote
        # data.mirrors, password included, into dvc.lock.
        result = dvc(repo, "repro", env={"DATA_MIRROR": good_url}, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert SECRET not in output
    assert "data.mirrors: http://***@127.0.0.1:9/mnist/ holds a user name or password" in output
    lock = repo / "dvc.lock"
    assert not lock.exists() or SECRET not in lock.read_text()
    assert good.server.requests == 0  # refused before any file was fetched
    assert not (repo / "data/raw").exists()


@pytest.mark.slow
def test_a_mirror_login_from_netrc_stays_out_of_dvc_lock_and_logs(tiny_dir, tmp_path):
    repo = make_repo(tmp_path / "repo")
    home = tmp_path / "home"
    write_netrc(home)
    mirror = counting_server(tiny_dir, _LoginFiles)
    with mirror as url:
        set_params(repo, {"data": {"mirrors": [url]}})
        result = dvc(repo, "repro", "download", env={"HOME": str(home)})
    assert digests(repo / "data/raw") == digests(tiny_dir)
    assert mirror.server.authorized == len(FILES)
    lock = (repo / "dvc.lock").read_text()
    assert url in lock and SECRET not in lock
    assert SECRET not in result.stdout + result.stderr


# --- A params.yaml that is no params file ------------------------------------------------


def alias_bomb() -> str:
    """Nine levels of nine aliases: 9**9 = 387 million values once expanded."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def notebook_text() -> str:
    return yaml.safe_dump(merged(NOTEBOOK_PARAMS, TINY_PARAMS), sort_keys=False)


def write_case(folder: Path, case: str) -> Path:
    """folder/params.yaml as one hostile case."""
    path = folder / "params.yaml"
    path.unlink(missing_ok=True)
    if case == "empty":
        path.write_text("")
    elif case == "comments only":
        path.write_text("# params go here\n\n")
    elif case == "binary":
        path.write_bytes(bytes(range(128, 256)) * 8)
    elif case == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif case == "directory":
        path.mkdir()
    elif case == "too large":
        path.write_text(notebook_text() + "#" * MAX_PARAMS_BYTES + "\n")
    elif case == "alias bomb":
        path.write_text(alias_bomb())
    elif case == "one alias":
        text = notebook_text()
        assert "test_clusters: 16\n" in text
        path.write_text(
            text.replace("- 16\n", "- &largest 16\n", 1).replace(
                "test_clusters: 16\n", "test_clusters: *largest\n"
            )
        )
    elif case == "deep":
        path.write_text("[" * 100_000)
    else:
        raise ValueError(case)
    return path


CASES = {
    "empty": "params.yaml is empty (no params in it); restore it with `git checkout",
    "comments only": "params.yaml is empty",
    "binary": "params.yaml is not UTF-8 text (byte 0x80 at offset 0)",
    "/dev/zero": "params.yaml is not a regular file (it is a character device)",
    "directory": "params.yaml is not a regular file (it is a folder)",
    "too large": f"params.yaml is larger than {MAX_PARAMS_BYTES} bytes",
    "alias bomb": "params.yaml: line 2: YAML alias *a is not allowed in params",
    "one alias": "YAML alias *largest is not allowed in params",
    "deep": "params.yaml: line 1: nested deeper than 8 levels",
}
# Those that the code before these checks read without end or until it crashed: tried in
# a subprocess under an address-space cap only; the others through the checker's main
# in-process (test_the_checker_accepts_the_tests_params runs `python -m` itself).
IN_PROCESS = sorted(set(CASES) - {"/dev/zero", "too large"})


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_checker_refuses_each_in_one_line(tmp_path, monkeypatch, capsys, case):
    write_case(tmp_path, case)
    if case in IN_PROCESS:
        monkeypatch.chdir(tmp_path)
        code, (out, err) = config_main(["params.yaml"]), capsys.readouterr()
    else:
        checker = [sys.executable, "-m", "mnist_pipeline.config", "params.yaml"]
        result = run_capped(checker, tmp_path)
        code, out, err = result.returncode, result.stdout, result.stderr
    assert code == 1
    assert out == ""
    assert one_error_line(err)
    assert CASES[case] in err


def test_the_checker_accepts_the_tests_params(tmp_path):
    (tmp_path / "params.yaml").write_text(notebook_text())
    result = run_capped([sys.executable, "-m", "mnist_pipeline.config"], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_stage_says_binary_params_are_not_text(tmp_path):
    # Before: "unexpected UnicodeDecodeError ... This is a bug".
    write_case(tmp_path, "binary")
    result = run_capped(
        [sys.executable, "-m", "stages.download", "--out", "raw"],
        tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR stages: params.yaml is not UTF-8 text (byte 0x80 at offset 0): params must be a "
        "YAML text file; restore it with `git checkout params.yaml`"
    ]
    assert "Traceback" not in result.stderr and not (tmp_path / "raw").exists()


@pytest.fixture(scope="module")
def downloaded_repo(tmp_path_factory, tiny_dir) -> Path:
    """A project copy with scripts/repro.sh, after `dvc repro download`; a stand-in
    scripts/setup.sh (test_environment tests the real one) and this environment as .venv."""
    repo = make_repo(tmp_path_factory.mktemp("hostile") / "repo")
    (repo / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts/repro.sh", repo / "scripts/repro.sh")
    (repo / "scripts/setup.sh").write_text("exit 0\n")
    (repo / ".venv").symlink_to(BIN.parent)
    with serve(tiny_dir) as url:
        dvc(repo, "repro", "download", env={"DATA_MIRROR": url})
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("case", ["empty", "alias bomb", "/dev/zero"])
def test_repro_sh_stops_before_dvc_reads_bad_params(downloaded_repo, tmp_path, case):
    # Before: DVC deleted data/raw, then the stage found the params empty; it grew to
    # 6.5 GB on the alias bomb, and read /dev/zero to 3.7 GB.
    repo = tmp_path / "repo"
    shutil.copytree(downloaded_repo, repo, symlinks=True)
    before = digests(repo / "data/raw")
    lock = (repo / "dvc.lock").read_bytes()
    write_case(repo, case)
    result = run_capped(
        ["bash", "scripts/repro.sh"], repo, env={"DATA_MIRROR": "http://127.0.0.1:9/"}
    )
    assert result.returncode == 1
    assert one_error_line(result.stderr)
    assert CASES[case] in result.stderr
    assert (repo / "dvc.lock").read_bytes() == lock  # no stage ran
    assert digests(repo / "data/raw") == before


# --- Costs out of all proportion ---------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "changes", "message"),
    [
        (
            "cnn",
            {"batch_size": 60000},
            f"cnn.batch_size: 60000 is not allowed; it must be at most {MAX_CNN_BATCH}: each image",
        ),
        (
            "cnn",
            {"test_batch_size": 60000},
            f"cnn.test_batch_size: 60000 is not allowed; it must be at most {MAX_CNN_TEST_BATCH}, "
            "the test set's size",
        ),
        (
            "kmeans",
            {"n_clusters": [60000], "test_clusters": 60000},
            f"kmeans.n_clusters: 60000 is not allowed; it must be at most {MAX_CLUSTERS}: a fit",
        ),
        (
            "kmeans",
            {"n_clusters": [1024, 1023, 1022, 1021, 10], "test_clusters": 10},
            f"it must be counts that add up to at most {MAX_SWEEP_CLUSTERS}",
        ),
    ],
)
def test_a_cost_out_of_proportion_is_refused_with_its_bound_and_reason(section, changes, message):
    with pytest.raises(ParamsError) as caught:
        parse_params(merged(NOTEBOOK_PARAMS, {section: changes}))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "changes",
    [
        {},  # the notebooks'
        TINY_PARAMS,
        # the README's examples
        {"cnn": {"epochs": 2}, "kmeans": {"n_clusters": [10, 20], "test_clusters": 20}},
        {"kmeans": {"batch_size": 100, "n_init": 3}},
        # the bounds themselves
        {"cnn": {"batch_size": MAX_CNN_BATCH, "test_batch_size": MAX_CNN_TEST_BATCH}},
        {"kmeans": {"n_clusters": [MAX_CLUSTERS, 1023, 1022, 1017, 10], "test_clusters": 10}},
    ],
)
def test_the_bounds_accept_the_values_in_use(changes):
    assert MAX_SWEEP_CLUSTERS == 1024 + 1023 + 1022 + 1017 + 10
    parse_params(merged(NOTEBOOK_PARAMS, changes))


def test_a_netrc_default_entry_goes_to_no_mirror(tmp_path, monkeypatch):
    # netrc's authenticators() would hand the `default` login to any host, the built-in
    # plain-http mirrors among them.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"default login reader password {SECRET}\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    assert netrc_login("yann.lecun.com") is None
    write_netrc(home)
    assert netrc_login("127.0.0.1") == ("reader", SECRET)
