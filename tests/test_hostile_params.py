"""Hostile params: a secret in a mirror URL, a params.yaml that is no params file, a YAML
alias bomb, and values whose cost is out of all proportion to the data. Each gets one line
before any network access or work, and nothing already made is lost."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import http.server
import socket
from pathlib import Path

import pytest

from mnist_pipeline.config import (
    DataParams,
    ParamsError,
    parse_params,
)
from mnist_pipeline.datasets import FILES
from mnist_pipeline.runtime import PipelineError
from stages.download import download
from tests.conftest import (
    NOTEBOOK_PARAMS,
    QuietHandler,
    dvc,
    make_repo,
    serve,
    set_params,
)

SECRET = "s3cret-pw"  # never in a message, a log or dvc.lock


def merged(base: dict, changes: dict) -> dict:
    raw = copy.deepcopy(base)
    for section, values in changes.items():
        raw[section].update(values)
    return raw


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


def test_local_folders_may_hold_at_signs(tmp_path):
    folder = str(tmp_path / "copies@host?v=1")
    assert parse_params(merged(NOTEBOOK_PARAMS, {"data": {"mirrors": [folder]}})).data.mirrors


@pytest.mark.parametrize("where", ["data.mirrors", "DATA_MIRROR"])
def test_a_secret_mirror_is_refused_before_any_name_lookup(tmp_path, monkeypatch, where):
    # A URL with `user:password@127.0.0.1` is sent to the resolver whole by urllib: the
    # refusal must come before any socket is opened or any name looked up.
    lookups = []

    def no_network(*args, **kwargs):
        lookups.append(args[0])
        raise socket.gaierror("the test allows no network access")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    url = SECRET_URLS[0]
    params = DataParams("mnist", (url,) if where == "data.mirrors" else (), verify=False)
    with pytest.raises(ParamsError) as caught:
        download(params, tmp_path / "raw", env_mirror=url if where == "DATA_MIRROR" else None)
    assert str(caught.value).startswith(f"{where}: http://***@127.0.0.1:9/mnist/ holds a user")
    assert SECRET not in str(caught.value)
    assert lookups == []
    assert not (tmp_path / "raw").exists()


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
