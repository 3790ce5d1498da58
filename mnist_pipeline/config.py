"""Typed, validated view of params.yaml: the one place the file is read.

`load_params` turns params.yaml into frozen dataclasses, one per section, which pydantic
checks as they are declared below: unknown and missing keys, strict types (no `"5"` or
`true` for a number; an int is fine where a float is meant), bounds, finite floats. The
first error becomes one line that names the key (`parse_params`). Made in Python (a
test's `CnnParams(...)`), the dataclasses check themselves too and raise pydantic's
ValidationError. The file is read with the YAML 1.2 rules DVC reads it with
(ruamel.yaml), so both see the same values: `1e-3` is a float.

A stage that takes params loads and checks the whole file, not only its own section, then
hands its work function just the section (or keys) dvc.yaml lists for it. So one bad value
anywhere, a `kmeans.*` one say, stops `download` too, before any work: whichever stage
runs first reports it.

Before it is parsed, the file must be a regular file of at most MAX_PARAMS_BYTES of UTF-8
text, with no YAML aliases and no deeper nesting than MAX_DEPTH. `python -m
mnist_pipeline.config [PATH]` runs the same checks: scripts/repro.sh runs it before `dvc
repro`, because DVC parses params.yaml itself before any stage starts (README, "When
something goes wrong").
"""

from __future__ import annotations

import os
import stat
import sys
import typing
import urllib.parse
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent

from mnist_pipeline.runtime import PipelineError, file_kind, os_error_message

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


class Why(NamedTuple):
    """Why a param's bound is where it is: said after the bound in the message that refuses
    a value below it (`low`) or above it (`high`)."""

    low: str = ""
    high: str = ""


def _refused(message: str) -> PydanticCustomError:
    """A check of our own that failed: `message` is its whole line, key first."""
    return PydanticCustomError("refused", "{message}", {"message": message})


def _tuple_from_list(value: object) -> object:
    # YAML gives lists, the frozen params hold tuples; null is an empty list. Anything
    # else fails the strict tuple check ("expected a list").
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else value


def _mirror_without_secret(mirror: str) -> str:
    problem = _mirror_problem(mirror)
    if problem:
        raise _refused(f"data.mirrors: {problem}")
    return mirror


def check_mirror(mirror: str, where: str) -> None:
    """Refuse a mirror URL that holds a secret: a param is written into dvc.lock, which users
    commit, and into every log line about that mirror. The message never repeats it."""
    problem = _mirror_problem(mirror)
    if problem:
        raise ParamsError(f"{where}: {problem}")


def _mirror_problem(mirror: str) -> str | None:
    """What is wrong with `mirror` as a mirror (check_mirror), without repeating a secret."""
    try:
        parts = urllib.parse.urlsplit(mirror)
    except ValueError:  # a malformed IPv6 host: say which entry, not what it holds
        return f"{redact_url(mirror)} is not a valid URL"
    if not parts.netloc:
        return None  # a local directory, where `@` or `?` is only part of a file name
    if "@" in parts.netloc:
        return (
            f"{redact_url(mirror)} holds a user name or password, which DVC would write into "
            f"dvc.lock; remove it, and put the login in ~/.netrc instead "
            f"(`machine {parts.hostname} login USER password PASSWORD`, README)"
        )
    if parts.query or parts.fragment:
        return (
            f"{redact_url(mirror)} has a query or fragment (`?...`, `#...`): the file names "
            f"are appended to a mirror's URL; give the folder's URL, and a login in "
            f"~/.netrc if it needs one"
        )
    return None


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


# Every section: no keys beyond its fields, no NaN or infinity, and no input values in
# pydantic's own error text (a mirror URL may hold a password).
_SECTION = ConfigDict(extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)

Count = Annotated[StrictInt, Field(ge=1)]
Mirror = Annotated[StrictStr, AfterValidator(_mirror_without_secret)]


@dataclass(frozen=True, config=_SECTION)
class DataParams:
    dataset: StrictStr  # checked by mnist_pipeline.datasets.get_dataset, where it is used
    # Tried in order; empty (or null): the data set's own mirrors.
    mirrors: Annotated[tuple[Mirror, ...], Strict(), BeforeValidator(_tuple_from_list)]
    verify: StrictBool  # check the decompressed files' md5s against the data set's


@dataclass(frozen=True, config=_SECTION)
class PreprocessParams:
    mean: Annotated[StrictFloat, Field(ge=0, le=1)]
    # Pixels are in [0, 1], so their spread is at most 0.5: a std far below that makes
    # huge inputs (1e-300 overflows float32 to inf).
    std: Annotated[StrictFloat, Field(ge=0.001, le=1)]


@dataclass(frozen=True, config=_SECTION)
class CnnParams:
    seed: Annotated[StrictInt, Field(ge=0, lt=2**63)]
    epochs: Count
    batch_size: Annotated[
        StrictInt,
        Field(ge=1, le=MAX_CNN_BATCH),
        Why(
            high=f": each image in a training batch holds about 65 KB (a peak of 1.1 GB at "
            f"{MAX_CNN_BATCH}; 60000 took 5.0 GB), and a batch that large leaves a few SGD "
            "steps per epoch (the notebook's is 64)"
        ),
    ]
    test_batch_size: Annotated[
        StrictInt,
        Field(ge=1, le=MAX_CNN_TEST_BATCH),
        Why(high=", the test set's size (each image of a test batch holds about 44 KB)"),
    ]
    lr: Annotated[StrictFloat, Field(gt=0, le=10)]
    momentum: Annotated[StrictFloat, Field(ge=0, lt=1)]
    log_interval: Count


@dataclass(frozen=True, config=_SECTION)
class KmeansParams:
    n_clusters: Annotated[
        tuple[Annotated[StrictInt, Field(ge=10, le=MAX_CLUSTERS)], ...],
        Strict(),
        BeforeValidator(_tuple_from_list),
        Field(min_length=1),
        Why(
            low=" (one per class)",
            high=f": a fit on 60000 images took 8 s for {MAX_CLUSTERS} clusters and 35 s "
            f"for 2048, growing faster than the count, and {MAX_CLUSTERS} clusters already "
            "have about 60 images each (the notebook's largest count is 256)",
        ),
    ]
    test_clusters: StrictInt
    batch_size: Count
    n_init: Count
    max_iter: Count
    random_state: Annotated[StrictInt, Field(ge=0, lt=2**32)]

    @model_validator(mode="after")
    def _check_sweep(self) -> KmeansParams:
        counts = list(self.n_clusters)
        if sum(counts) > MAX_SWEEP_CLUSTERS:
            raise _refused(
                f"kmeans.n_clusters: {counts!r} is not allowed; it must be counts that add up "
                f"to at most {MAX_SWEEP_CLUSTERS}: the sweep takes about 8 ms per cluster on "
                "60000 images, so its time is about the sum (the notebook's sweep adds up to 526)"
            )
        if len(set(counts)) < len(counts):
            raise _refused(
                f"kmeans.n_clusters: {counts!r} is not allowed; it must be a list without repeats"
            )
        if self.test_clusters not in counts:
            raise _refused(
                f"kmeans.test_clusters: {self.test_clusters} is not in kmeans.n_clusters "
                f"{counts}; set it to one of those counts "
                f"(e.g. -S kmeans.test_clusters={max(counts)}) or add it to the sweep"
            )
        return self


@dataclass(frozen=True, config=_SECTION)
class ComputeParams:
    """How the work runs: float results depend on both (the last digits), so they are params
    and DVC re-runs, or restores from its run-cache, by them."""

    threads: Annotated[StrictInt, Field(ge=1, le=1024)]  # torch's and scikit-learn's, each stage
    # Where train_cnn trains: auto (a GPU torch finds, else the CPU), cpu, cuda or mps.
    device: Literal["auto", "cpu", "cuda", "mps"]


@dataclass(frozen=True, config=_SECTION)
class Params:
    data: DataParams
    preprocess: PreprocessParams
    cnn: CnnParams
    kmeans: KmeansParams
    compute: ComputeParams


_SECTIONS = tuple(f.name for f in fields(Params))
_PARAMS = TypeAdapter(Params)


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
            f"{path} is not a regular file (it is {file_kind(mode)}): params must be a YAML "
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


def parse_params(raw: object) -> Params:
    """Validate an already-parsed params mapping (what load_params reads from YAML)."""
    try:
        return _PARAMS.validate_python(raw)
    except ValidationError as exc:
        raise ParamsError(_message(exc.errors(include_url=False))) from None


# pydantic's error types, as this module words them.
_UNKNOWN = ("unexpected_keyword_argument", "invalid_key")
_MISSING = ("missing",)
_TYPES = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str"}
_BOUNDS = {  # the words, the key of the bound in the error's context, the side of Why
    "greater_than_equal": ("at least", "ge", "low"),
    "greater_than": ("greater than", "gt", "low"),
    "less_than_equal": ("at most", "le", "high"),
    "less_than": ("less than", "lt", "high"),
}


def _message(errors: list) -> str:
    """One line for the first of pydantic's errors: the key, what is wrong, what to do."""
    error = min(errors, key=_order)
    kind, loc = error["type"], error["loc"]
    if kind in _UNKNOWN + _MISSING:
        group = _UNKNOWN if kind in _UNKNOWN else _MISSING
        same = [e["loc"] for e in errors if e["type"] in group and e["loc"][:-1] == loc[:-1]]
        keys = [".".join(map(str, where)) for where in same]
        if group is _MISSING:
            return f"missing key {', '.join(keys)}; see the README's params table"
        known = ", ".join(f.name for f in fields(_section(loc[:-1])))
        return f"unknown key {', '.join(sorted(keys))}; known keys here: {known}"
    key = _key(loc) or "params.yaml"
    value = error["input"]
    if kind == "refused":
        return error["msg"]
    if kind == "dataclass_type":
        return f"{key}: expected a mapping of keys, got {_describe(value)}"
    if kind == "tuple_type":
        return f"{key}: expected a list, got {_describe(value)}"
    if kind in _TYPES:
        return f"{key}: expected {_TYPES[kind]}, got {_describe(value)}"
    if kind == "finite_number":
        must = "a finite number"
    elif kind in _BOUNDS:
        words, bound, side = _BOUNDS[kind]
        why = _why(loc)
        must = f"{words} {_number(error['ctx'][bound])}{getattr(why, side) if why else ''}"
    elif kind == "too_short":
        value = list(value or ())
        must = "a non-empty list"
    elif kind == "literal_error":
        must = f"one of {error['ctx']['expected']}"
    else:  # no other check is declared above; pydantic's own words, should one be added
        return f"{key}: {error['msg']}; see the README's params table"
    if isinstance(value, str):  # never a password, whichever key a URL was given for
        value = redact_url(value)
    return f"{key}: {value!r} is not allowed; it must be {must}"


def _order(error: dict) -> tuple[int, int]:
    """Which error comes first: the file's own keys, then each section in turn, its keys
    (unknown, then missing) before its values, as a reader of the file would fix them."""
    loc, kind = error["loc"], error["type"]
    rank = 0 if kind in _UNKNOWN else 1 if kind in _MISSING else 2
    if not loc or loc[0] not in _SECTIONS or (len(loc) == 1 and rank < 2):
        return (-1, rank)
    return (_SECTIONS.index(loc[0]), rank)


def _key(loc: tuple) -> str:
    # A position in a list is not part of the key: kmeans.n_clusters, not kmeans.n_clusters.1.
    return ".".join(part for part in loc if isinstance(part, str))


def _section(names: tuple) -> type:
    """The dataclass of the section at `names` (() for Params itself)."""
    cls = Params
    for name in names:
        cls = typing.get_type_hints(cls)[name]
    return cls


def _why(loc: tuple) -> Why | None:
    section, name = _section(loc[:1]), loc[1]
    hint = typing.get_type_hints(section, include_extras=True)[name]
    return next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Why)), None)


def _number(bound: float) -> str:
    """A bound as it is written above: 1, not 1.0; 2**63, not 9223372036854775808."""
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)
    if isinstance(bound, int) and bound > 2**16 and bound & (bound - 1) == 0:
        return f"2**{bound.bit_length() - 1}"
    return str(bound)


def check_batch_size(key: str, value: int, n: int, what: str) -> None:
    """A batch no larger than the data: checked where the data's size is known. A larger one
    gains nothing, and `batch_size: 1000000000` was accepted before and took 4.6 GB."""
    if value > n:
        raise ParamsError(
            f"{key}: {value!r} is not allowed; it must be at most {n}, the number of {what}"
        )


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
