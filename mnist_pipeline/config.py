"""Typed, validated view of params.yaml: the one place the file is read.

`load_params` turns params.yaml into frozen dataclasses, one per section, and rejects
unknown keys, missing keys, wrong types and impossible values with a message that
names the key. Stages receive only their own section. The file is read with the YAML 1.2
rules DVC reads it with (ruamel.yaml), so both see the same values: `1e-3` is a float.

Before it is parsed, the file must be a regular file of at most MAX_PARAMS_BYTES of UTF-8
text, with no YAML aliases and no deeper nesting than MAX_DEPTH. `python -m
mnist_pipeline.config [PATH]` runs the same checks: scripts/repro.sh runs it before `dvc
repro`, because DVC parses params.yaml itself before any stage starts (README, "When
something goes wrong").
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import sys
import typing
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent

from mnist_pipeline.runtime import PipelineError, os_error_message

# params.yaml is about 2 KB; a larger file is not a params file (a symlink to /dev/zero took
# DVC and the stage to 3.7 GB).
MAX_PARAMS_BYTES = 1 << 20
# Sections, keys, a list of counts: 3 levels. Deeper is a mistake, and 100,000 `[` made
# the YAML composer overflow Python's stack.
MAX_DEPTH = 8

# Bounds on the params whose cost grows without limit, from tiny runs (README, "Params").
# A training step holds about 65 KB of activations per image (peak RSS 1.1 GB at 4,096,
# 1.9 GB at 16,384; `cnn.batch_size: 60000` took 5.0 GB), and a batch that large makes
# a few SGD steps per epoch: the notebook's is 64.
MAX_CNN_BATCH = 4096
# No gradients: about 44 KB per image (1.1 GB at 10,000, the test set of both data sets).
MAX_CNN_TEST_BATCH = 10_000
# A MiniBatchKMeans fit on 60,000 images took 0.4 s for 10 clusters, 2.4 s for 256, 8.0 s
# for 1,024 and 35 s for 2,048 on one thread: faster than linear above 1,024, and
# `n_clusters: [60000]` ran for over 10 minutes. 1,024 clusters still have about 60
# training images each; the notebook's largest is 256.
MAX_CLUSTERS = 1024
MAX_SWEEP_CLUSTERS = 4096  # the sweep's total: its time is about the sum of its counts


class ParamsError(PipelineError):
    """params.yaml is missing, malformed, or holds a value a stage cannot use."""


@dataclass(frozen=True)
class DataParams:
    dataset: str
    mirrors: tuple[str, ...]
    verify: bool  # data.dataset is checked by mnist_pipeline.datasets.get_dataset, where it is used

    def check(self) -> None:
        for mirror in self.mirrors:
            check_mirror(mirror, "data.mirrors")


def check_mirror(mirror: str, where: str) -> None:
    """Refuse a mirror URL that holds a secret: a param is written into dvc.lock, which users
    commit, and into every log line about that mirror. The message never repeats it."""
    try:
        parts = urllib.parse.urlsplit(mirror)
    except ValueError:  # a malformed IPv6 host: say which entry, not what it holds
        raise ParamsError(f"{where}: {redact_url(mirror)} is not a valid URL") from None
    if not parts.netloc:
        return  # a local directory, where `@` or `?` is only part of a file name
    if "@" in parts.netloc:
        raise ParamsError(
            f"{where}: {redact_url(mirror)} holds a user name or password, which DVC would "
            f"write into dvc.lock; remove it, and put the login in ~/.netrc instead "
            f"(`machine {parts.hostname} login USER password PASSWORD`, README)"
        )
    if parts.query or parts.fragment:
        raise ParamsError(
            f"{where}: {redact_url(mirror)} has a query or fragment (`?...`, `#...`): the file "
            f"names are appended to a mirror's URL; give the folder's URL, and a login in "
            f"~/.netrc if it needs one"
        )


def redact_url(text: str) -> str:
    """`text` without whatever a URL in it may hold as a secret: user and password, query,
    fragment. Local paths are shown as they are."""
    try:
        parts = urllib.parse.urlsplit(text)
        netloc = parts.netloc
    except ValueError:
        return "(a malformed URL)"
    if not netloc:
        return text
    host = netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(
        (
            parts.scheme,
            f"***@{host}" if "@" in netloc else host,
            parts.path,
            "***" if parts.query else "",
            "***" if parts.fragment else "",
        )
    )


@dataclass(frozen=True)
class PreprocessParams:
    mean: float
    std: float

    def check(self) -> None:
        _require(0.0 <= self.mean <= 1.0, "preprocess.mean", self.mean, "between 0 and 1")
        # Pixels are in [0, 1], so their spread is at most 0.5: a std far below that makes
        # huge inputs (1e-300 overflows float32 to inf).
        _require(0.001 <= self.std <= 1.0, "preprocess.std", self.std, "between 0.001 and 1")


@dataclass(frozen=True)
class CnnParams:
    seed: int
    epochs: int
    batch_size: int
    test_batch_size: int
    lr: float
    momentum: float
    log_interval: int

    def check(self) -> None:
        for key in ("epochs", "batch_size", "test_batch_size", "log_interval"):
            _require(getattr(self, key) >= 1, f"cnn.{key}", getattr(self, key), "at least 1")
        _require(
            self.batch_size <= MAX_CNN_BATCH,
            "cnn.batch_size",
            self.batch_size,
            f"at most {MAX_CNN_BATCH}: each image in a training batch holds about 65 KB "
            f"(a peak of 1.1 GB at {MAX_CNN_BATCH}; 60000 took 5.0 GB), and a batch that large "
            "leaves a few SGD steps per epoch (the notebook's is 64)",
        )
        _require(
            self.test_batch_size <= MAX_CNN_TEST_BATCH,
            "cnn.test_batch_size",
            self.test_batch_size,
            f"at most {MAX_CNN_TEST_BATCH}, the test set's size (each image of a test batch "
            "holds about 44 KB)",
        )
        _require(0 < self.lr <= 10, "cnn.lr", self.lr, "greater than 0 and at most 10")
        _require(0.0 <= self.momentum < 1.0, "cnn.momentum", self.momentum, "in [0, 1)")
        _require(0 <= self.seed < 2**63, "cnn.seed", self.seed, "in [0, 2**63)")


@dataclass(frozen=True)
class KmeansParams:
    n_clusters: tuple[int, ...]
    test_clusters: int
    batch_size: int
    n_init: int
    max_iter: int
    random_state: int

    def check(self) -> None:
        _require(len(self.n_clusters) > 0, "kmeans.n_clusters", [], "a non-empty list")
        for k in self.n_clusters:
            _require(k >= 10, "kmeans.n_clusters", k, "at least 10 (one per class)")
            _require(
                k <= MAX_CLUSTERS,
                "kmeans.n_clusters",
                k,
                f"at most {MAX_CLUSTERS}: a fit on 60000 images took 8 s for {MAX_CLUSTERS} "
                "clusters and 35 s for 2048, growing faster than the count, and "
                f"{MAX_CLUSTERS} clusters already have about 60 images each (the notebook's "
                "largest count is 256)",
            )
        _require(
            sum(self.n_clusters) <= MAX_SWEEP_CLUSTERS,
            "kmeans.n_clusters",
            list(self.n_clusters),
            f"counts that add up to at most {MAX_SWEEP_CLUSTERS}: the sweep takes about 8 ms "
            f"per cluster on 60000 images, so its time is about the sum (the notebook's sweep "
            "adds up to 526)",
        )
        _require(
            len(set(self.n_clusters)) == len(self.n_clusters),
            "kmeans.n_clusters",
            list(self.n_clusters),
            "a list without repeats",
        )
        if self.test_clusters not in self.n_clusters:
            raise ParamsError(
                f"kmeans.test_clusters: {self.test_clusters} is not in kmeans.n_clusters "
                f"{list(self.n_clusters)}; set it to one of those counts "
                f"(e.g. -S kmeans.test_clusters={max(self.n_clusters)}) or add it to the sweep"
            )
        for key in ("batch_size", "n_init", "max_iter"):
            _require(getattr(self, key) >= 1, f"kmeans.{key}", getattr(self, key), "at least 1")
        _require(
            0 <= self.random_state < 2**32,
            "kmeans.random_state",
            self.random_state,
            "in [0, 2**32)",
        )


DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class ComputeParams:
    """How the work runs: float results depend on both (the last digits), so they are params
    and DVC re-runs, or restores from its run-cache, by them."""

    threads: int  # torch's and scikit-learn's threads in each stage
    device: str  # where train_cnn trains: auto (a GPU torch finds, else the CPU) or one of DEVICES

    def check(self) -> None:
        _require(1 <= self.threads <= 1024, "compute.threads", self.threads, "in [1, 1024]")
        _require(self.device in DEVICES, "compute.device", self.device, f"one of {DEVICES}")


@dataclass(frozen=True)
class Params:
    data: DataParams
    preprocess: PreprocessParams
    cnn: CnnParams
    kmeans: KmeansParams
    compute: ComputeParams


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError naming the file or the offending key."""
    return parse_params(read_params(Path(path)))


def read_params(path: Path) -> dict:
    """The mapping in a params file, after the file checks (read_params_text, no aliases, not
    too deep, not empty); its keys and values are parse_params' to check."""
    text = read_params_text(path)
    try:
        check_yaml_shape(text, path)
        raw = YAML(typ="safe").load(text)  # what DVC's parse_yaml does
    except YAMLError as exc:
        where = " ".join(str(exc).split())  # one line
        raise ParamsError(f"{path} is not valid YAML: {where}") from None
    if raw is None:
        raise ParamsError(
            f"{path} is empty (no params in it); restore it with `git checkout {path}`, "
            "or write the keys of the README's params table"
        )
    return raw


def read_params_text(path: Path) -> str:
    """The text of a params file: a regular file of at most MAX_PARAMS_BYTES bytes of UTF-8."""
    restore = f"restore it with `git checkout {path}`"
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found; run from the project root") from None
    except OSError as exc:
        raise ParamsError(os_error_message(exc, path)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ParamsError(
            f"{path} is not a regular file (it is {_file_kind(mode)}): params must be a YAML "
            f"text file; {restore}"
        )
    with os.fdopen(fd, "rb") as stream:
        data = stream.read(MAX_PARAMS_BYTES + 1)
    if len(data) > MAX_PARAMS_BYTES:
        raise ParamsError(
            f"{path} is larger than {MAX_PARAMS_BYTES} bytes, the most a params file may be "
            f"(the project's is about 2 KB); {restore}"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
            f"params must be a YAML text file; {restore}"
        ) from None


def check_yaml_shape(text: str, path: Path) -> None:
    """Refuse YAML aliases and deep nesting from the event stream, before any document is
    built: nine levels of nine aliases expand to 387 million values (DVC grew to 6.5 GB)."""
    depth = 0
    for event in YAML(typ="safe").parse(text):
        if isinstance(event, AliasEvent):
            raise ParamsError(
                f"{path}: line {event.start_mark.line + 1}: YAML alias *{event.anchor} is not "
                "allowed in params (aliases can expand to billions of values); write the value "
                "out in full"
            )
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ParamsError(
                    f"{path}: line {event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} "
                    "levels; params are sections of keys, with lists of numbers at most"
                )
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def parse_params(raw: object) -> Params:
    """Validate an already-parsed params mapping (what load_params reads from YAML)."""
    return _build(Params, raw, "")


def _build(cls: type, raw: object, prefix: str):
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        keys = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ParamsError(f"unknown key {keys}; known keys here: {', '.join(names)}")
    missing = [n for n in names if n not in raw]
    if missing:
        keys = ", ".join(f"{prefix}{k}" for k in missing)
        raise ParamsError(f"missing key {keys}; see the README's params table")
    values = {n: _convert(hints[n], raw[n], f"{prefix}{n}") for n in names}
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check()
    return obj


def _convert(hint, value: object, key: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ParamsError(f"{key}: expected a list, got {_describe(value)}")
        return tuple(_convert(item, v, key) for v in value)
    # bool is a subclass of int in Python: reject True where a number is meant.
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ParamsError(f"{key}: expected {hint.__name__}, got {_describe(value)}")
    if hint is float and not math.isfinite(value):
        raise ParamsError(f"{key}: {value!r} is not allowed; it must be a finite number")
    return value


def check_batch_size(key: str, value: int, n: int, what: str) -> None:
    """A batch no larger than the data: checked where the data's size is known. A larger one
    gains nothing, and `batch_size: 1000000000` was accepted before and took 4.6 GB."""
    _require(value <= n, key, value, f"at most {n}, the number of {what}")


def _require(ok: bool, key: str, value: object, what: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {value!r} is not allowed; it must be {what}")


def _describe(value: object) -> str:
    if isinstance(value, str):  # a URL given where a list is meant must not show its password
        value = redact_url(value)
    return f"{type(value).__name__} {value!r}"


def main(argv: list[str] | None = None) -> int:
    """`python -m mnist_pipeline.config [PATH]`: check a params file as the stages do, and say
    nothing when it is good. scripts/repro.sh runs it before DVC reads the file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print("usage: python -m mnist_pipeline.config [PARAMS_YAML]", file=sys.stderr)
        return 2
    try:
        load_params(args[0] if args else "params.yaml")
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
