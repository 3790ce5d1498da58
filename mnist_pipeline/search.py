"""An Optuna study whose every trial is a DVC experiment, on one machine or many.

    mnist-search [--space search.yaml] [--storage URL] [--workers N] [--push REMOTE]

(`mnist-search` is installed in .venv/bin by scripts/setup.sh.)

The search space, the objective, the number of trials and the sampler's seed are in
search.yaml (README, "Searching"). Each trial runs as `dvc exp run --temp -n STUDY-NUMBER
-S KEY=VALUE ...`: outside the workspace, so several run side by side in one clone and the
workspace is left as it was; a point that already ran is restored from DVC's run-cache. The
objective is read back from the experiment's own metrics (`dvc exp show --json`).

The study is kept in `--storage`: by default a SQLite file in search/ (git-ignored); with
`postgresql://user@host/db` one study is shared by workers on several machines, each a clone
of the project that pushes its finished experiments (`--push origin`). Asking for a trial
holds a lock (a file lock for SQLite, an advisory lock in PostgreSQL), so no more trials
start than the study needs and every number is unique. A running trial records a heartbeat;
one whose worker died (Ctrl-C, kill -9, a machine lost) is marked failed, by its own clone
at once when it starts again, by any worker once the heartbeat is stale, and the study asks
for another in its place. A finished trial never runs again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from ruamel.yaml import YAML, YAMLError
from tqdm import tqdm

from mnist_pipeline import config
from mnist_pipeline.runtime import PipelineError, os_error_message

SEARCH_DIR = Path("search")  # git-ignored: the default storage, the trials' logs, the plots
DEFAULT_STORAGE = f"sqlite:///{SEARCH_DIR}/optuna.db"
POLL_S = 2.0  # how often a worker that waits for other workers' trials looks again


class SearchError(PipelineError):
    """search.yaml, the storage or a trial is unusable; the message says what to do."""


# --- search.yaml ----------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", strict=True)


class FloatRange(BaseModel):
    model_config = _STRICT
    float_: Annotated[list[float], Field(alias="float", min_length=2, max_length=2)]
    log: bool = False


class IntRange(BaseModel):
    model_config = _STRICT
    int_: Annotated[list[int], Field(alias="int", min_length=2, max_length=2)]
    log: bool = False


class Choice(BaseModel):
    model_config = _STRICT
    choice: list[int | float | str | bool] = Field(min_length=1)


def _kind(value: object) -> str | None:
    """Which distribution a space entry is, by the key it has: float, int or choice."""
    if isinstance(value, dict):
        found = [k for k in ("float", "int", "choice") if k in value]
        return found[0] if len(found) == 1 else None
    return None


Distribution = Annotated[
    Annotated[FloatRange, Tag("float")]
    | Annotated[IntRange, Tag("int")]
    | Annotated[Choice, Tag("choice")],
    Discriminator(
        _kind,
        custom_error_type="distribution",
        custom_error_message="give one of float: [LOW, HIGH], int: [LOW, HIGH] or choice: [...]",
    ),
]


class Objective(BaseModel):
    model_config = _STRICT
    metric: str  # a metrics file that dvc.yaml lists
    key: str  # the number in it
    direction: Literal["maximize", "minimize"]


class SearchSpec(BaseModel):
    """search.yaml as written: checked against params.yaml and dvc.yaml by load_search."""

    model_config = _STRICT
    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    objective: Objective
    trials: Annotated[int, Field(ge=1, le=10_000)]
    seed: Annotated[int, Field(ge=0, lt=2**31)]
    space: Annotated[dict[str, Distribution], Field(min_length=1)]


def load_search(path: Path, params_path: Path, dvc_yaml: Path) -> SearchSpec:
    """search.yaml, every key and bound checked against the params and dvc.yaml, or a
    SearchError that names the key: nothing runs with a space a trial would fail on."""
    raw = _read_yaml(path)
    try:
        spec = SearchSpec.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"] if part not in _TAGS)
        raise SearchError(f"{path}: {where or 'the file'}: {error['msg']}") from None
    params = config.read_params(params_path)
    config.parse_params(params)  # a params.yaml the stages refuse would fail every trial
    for key, distribution in spec.space.items():
        _check_distribution(path, params, key, distribution)
    _check_objective(path, spec.objective, dvc_yaml)
    return spec


_TAGS = {"float", "int", "choice"}  # pydantic's names of the union members in a location


def _read_yaml(path: Path) -> object:
    try:
        return YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchError(f"{path} not found; run from the project root") from None
    except (YAMLError, UnicodeDecodeError) as exc:
        raise SearchError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None


def _param_type(path: Path, key: str) -> type:
    """The Python type params.yaml's `key` (section.name) holds; SearchError if unknown."""
    section, _, name = key.partition(".")
    hints = typing.get_type_hints(config.Params)
    sections = [f.name for f in dataclasses.fields(config.Params)]
    if section not in sections or not name:
        raise SearchError(
            f"{path}: space: {key} is not a param; name one as SECTION.KEY, SECTION one "
            f"of {', '.join(sections)}"
        )
    fields = typing.get_type_hints(hints[section])
    if name not in fields:
        raise SearchError(
            f"{path}: space: {key} is not a param; known in {section}: {', '.join(fields)}"
        )
    return fields[name]


def _check_distribution(path: Path, params: dict, key: str, distribution) -> None:
    kind = _param_type(path, key)
    if isinstance(distribution, Choice):
        values = distribution.choice
    else:
        want = float if isinstance(distribution, FloatRange) else int
        low, high = distribution.float_ if want is float else distribution.int_
        if kind is not want:
            name = {int: "an integer", float: "a float"}.get(kind, "no number")
            use = {int: "int: [LOW, HIGH]", float: "float: [LOW, HIGH]"}.get(kind, "choice: [...]")
            raise SearchError(
                f"{path}: space: {key} holds {name}, so it cannot take a {want.__name__} "
                f"range; use {use}"
            )
        if not low < high:
            raise SearchError(
                f"{path}: space: {key}: [{low}, {high}] is an empty or inverted range; "
                "write it as [LOW, HIGH] with LOW below HIGH"
            )
        if distribution.log and low <= 0:
            raise SearchError(f"{path}: space: {key}: a log range needs LOW above 0, not {low}")
        values = [low, high]
    for value in values:  # the stages' own checks, on params.yaml with this value in it
        section, _, name = key.partition(".")
        trial = {**params, section: {**params[section], name: value}}
        try:
            config.parse_params(trial)
        except config.ParamsError as exc:
            raise SearchError(f"{path}: space: {key} = {value!r} is refused: {exc}") from None


def _check_objective(path: Path, objective: Objective, dvc_yaml: Path) -> None:
    written = metrics_files(dvc_yaml)
    if objective.metric not in written:
        raise SearchError(
            f"{path}: objective: no stage writes {objective.metric}; dvc.yaml's metrics are "
            f"{', '.join(sorted(written))}"
        )
    current = Path(objective.metric)
    if current.is_file():  # from an earlier run: its keys are the ones the stage writes
        try:
            keys = json.loads(current.read_text())
        except (OSError, ValueError):  # damaged: the stage will write it again
            return
        if isinstance(keys, dict) and objective.key not in keys:
            raise SearchError(
                f"{path}: objective: {objective.metric} holds no {objective.key}; its keys "
                f"are {', '.join(sorted(keys))}"
            )


def metrics_files(dvc_yaml: Path) -> set[str]:
    """The metrics files dvc.yaml declares: its top-level list and the stages' metrics."""
    spec = _read_yaml(dvc_yaml) or {}
    files = set(spec.get("metrics", []))
    for stage in spec.get("stages", {}).values():
        for entry in stage.get("metrics", []):
            files.add(entry if isinstance(entry, str) else next(iter(entry)))
    return files


# --- storage --------------------------------------------------------------------------------


def _driver_url(url: str) -> str:
    # SQLAlchemy's default PostgreSQL driver is psycopg2; the lock installs psycopg 3.
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def open_study(spec: SearchSpec, url: str, heartbeat_s: int):
    """The study in `url`, created on first use; a SearchError when the storage cannot be
    reached or holds a study of that name with another objective or space."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        # Under the lock: workers starting together would each create Optuna's tables.
        with study_lock(url, "tables"):
            storage = optuna.storages.RDBStorage(
                _driver_url(url),
                engine_kwargs=engine,
                heartbeat_interval=heartbeat_s,
                grace_period=4 * heartbeat_s,
            )
            study = optuna.create_study(
                storage=storage,
                study_name=spec.study,
                direction=spec.objective.direction,
                load_if_exists=True,
            )
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise SearchError(
            f"cannot reach the study's storage {config.redact_url(url)}: {_reason(exc)}; check the "
            "server, the database name, the user and its password (~/.pgpass or PGPASSWORD)"
        ) from None
    recorded = study.user_attrs.get("search")
    wanted = spec.model_dump(mode="json", by_alias=True, exclude={"trials"}, warnings=False)
    if recorded is None:
        study.set_user_attr("search", wanted)
    elif recorded != wanted:
        raise SearchError(
            f"study {spec.study} in {config.redact_url(url)} was started with another objective, "
            "space or seed; give this search its own study name in search.yaml"
        )
    return study


def _reason(exc: Exception) -> str:
    """The database's own words, on one line, without SQLAlchemy's link to its docs."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split()).split(" (Background")[0]


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Held while a worker counts trials and asks for one: a flock beside a SQLite file,
    an advisory lock in PostgreSQL (released by the server if the worker dies)."""
    if url.startswith("sqlite:///"):
        with open(url.removeprefix("sqlite:///") + ".lock", "a") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            yield
        return
    if not url.startswith(("postgresql", "postgres")):
        yield  # another database: Optuna's own transactions only
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(_driver_url(url), poolclass=sqlalchemy.pool.NullPool)
    key = {"name": f"mnist-search:{study_name}"}
    try:
        connection = engine.connect()
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:name))"), key)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise SearchError(
            f"cannot reach the study's storage {config.redact_url(url)}: {_reason(exc)}; check "
            "the server, the database name, the user and its password (~/.pgpass or PGPASSWORD)"
        ) from None
    try:
        yield
    finally:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):  # closing frees it too
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:name))"), key)
        connection.close()
        engine.dispose()


# --- trials ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    """Where a worker runs: recorded with each of its trials."""

    host: str
    boot: str  # this boot of this machine: VMs cloned from one image share host and paths
    clone: str
    pid: int

    @classmethod
    def here(cls) -> Worker:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:  # not Linux: the host name alone
            boot = ""
        return cls(socket.gethostname(), boot, str(Path.cwd().resolve()), os.getpid())

    def is_gone_from(self, attrs: dict) -> bool:
        """Whether `attrs` (a trial's worker) names a dead process of this boot and clone."""
        mine = (self.host, self.boot, self.clone)
        if (attrs.get("host"), attrs.get("boot"), attrs.get("clone")) != mine:
            return False
        try:
            os.kill(int(attrs["pid"]), 0)
        except ProcessLookupError:
            return True
        except (OSError, KeyError, ValueError):
            return False
        return False


def experiment_name(study: str, number: int) -> str:
    return f"{study}-{number}"


def fail_dead_trials(study, worker: Worker) -> None:
    """Mark failed the running trials whose worker died: at once those of this clone, the
    others once their heartbeat is stale (Optuna's grace period)."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker.is_gone_from(trial.user_attrs.get("worker", {})):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def next_trial(study, spec: SearchSpec, url: str, worker: Worker):
    """A new trial with its params sampled, or None when the study has all its trials, or
    "wait" when the trials still running would complete it (one may yet fail)."""
    import optuna
    from optuna.trial import TrialState

    with study_lock(url, spec.study):
        fail_dead_trials(study, worker)
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if complete >= spec.trials:
            return None
        if complete + running >= spec.trials:
            return "wait"
        # Seeded by the trial's number: the same history gives the same proposal, whichever
        # worker asks and however often the study was resumed.
        study.sampler = optuna.samplers.TPESampler(seed=spec.seed + len(trials))
        trial = study.ask()
        trial.set_user_attr("worker", vars(worker))
        trial.set_user_attr("experiment", experiment_name(spec.study, trial.number))
        beat(study, trial)  # at once: a trial with no beat at all is never found stale
        return trial, suggest(trial, spec)


def suggest(trial, spec: SearchSpec) -> dict:
    """The trial's value for each key of the space."""
    values = {}
    for key, d in spec.space.items():
        if isinstance(d, FloatRange):
            values[key] = trial.suggest_float(key, *d.float_, log=d.log)
        elif isinstance(d, IntRange):
            values[key] = trial.suggest_int(key, *d.int_, log=d.log)
        else:
            values[key] = trial.suggest_categorical(key, d.choice)
    return values


def beat(study, trial) -> None:
    # Optuna records heartbeats itself only inside Study.optimize; ask-and-tell has no
    # public way, so this reaches the study's RDBStorage.
    study._storage.record_heartbeat(trial._trial_id)


@contextlib.contextmanager
def heartbeat(study, trial, interval_s: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval_s seconds while the block runs."""
    stop = threading.Event()

    def beats() -> None:
        while not stop.wait(interval_s):
            with contextlib.suppress(Exception):  # a missed beat only risks a stale mark
                beat(study, trial)

    thread = threading.Thread(target=beats, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def dvc_env() -> dict:
    """The environment for `dvc`: this Python's bin first on PATH, so that the dvc and the
    stages are the project's even when .venv is not activated (scripts/repro.sh does too)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run_experiment(name: str, values: dict, threads: int, log_path: Path) -> None:
    """`dvc exp run --temp` with the trial's params; SearchError with its last error line."""
    overrides = [f"{key}={_yaml_value(v)}" for key, v in values.items()]
    if "compute.threads" not in values:
        overrides.append(f"compute.threads={threads}")
    args = ["dvc", "exp", "run", "--temp", "-n", name]
    for override in overrides:
        args += ["-S", override]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write(" ".join(args) + "\n")
        log.flush()
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dvc_env())
        try:
            returncode = process.wait()
        except KeyboardInterrupt:  # dvc had it too: let it remove its temporary workspace
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    if returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()
        errors = [line for line in lines if line.startswith(("ERROR", "error:"))]
        last = (errors or lines or ["(no output)"])[-1]
        raise SearchError(f"dvc exp run exited {returncode}: {last} (log: {log_path})")


def _yaml_value(value: object) -> str:
    # -S values are read as YAML: repr keeps every digit of a float, and true/false stay bools.
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def experiment_metric(name: str, objective: Objective) -> float:
    """The objective from the experiment's own metrics, as `dvc exp show --json` gives them."""
    result = subprocess.run(
        ["dvc", "exp", "show", "--json"], capture_output=True, text=True, env=dvc_env()
    )
    try:
        baselines = json.loads(result.stdout) if result.returncode == 0 else None
    except json.JSONDecodeError:
        baselines = None
    if baselines is None:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SearchError(f"dvc exp show did not list the experiments: {last}")
    for baseline in baselines:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                if rev.get("name") != name:
                    continue
                metrics = (rev["data"].get("metrics") or {}).get(objective.metric, {})
                value = metrics.get("data", {}).get(objective.key)
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise SearchError(
                        f"experiment {name}: {objective.metric} holds no number "
                        f"{objective.key} ({value!r}); fix objective.key in search.yaml"
                    )
                return float(value)
    raise SearchError(f"experiment {name} is not in `dvc exp show`; see its log")


def push(remote: str, name: str) -> str | None:
    """`dvc exp push REMOTE NAME` (the git ref and the outputs); the error line if it failed."""
    result = subprocess.run(
        ["dvc", "exp", "push", remote, name], capture_output=True, text=True, env=dvc_env()
    )
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["(no output)"])[-1]


def describe(values: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def best_line(study, spec: SearchSpec) -> str:
    try:
        best = study.best_trial
    except ValueError:
        return "no trial has completed yet"
    return f"best {spec.objective.key} {best.value:.4f} (trial {best.number})"


class Report:
    """One line per finished trial and, in a terminal, a bar over the study's completed
    trials above them (plain lines elsewhere: a log, CI, a --workers child)."""

    def __init__(self, study, total: int, bar: bool) -> None:
        self.study = study
        self.bar = tqdm(total=total, unit="trial", disable=not bar, dynamic_ncols=True)
        self.update()

    def line(self, text: str) -> None:
        if self.bar.disable:
            say(text)
        else:
            self.bar.write(text, file=sys.stdout)

    def update(self) -> None:
        if not self.bar.disable:
            self.bar.n = completed(self.study)
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def completed(study) -> int:
    from optuna.trial import TrialState

    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def work(study, spec: SearchSpec, url: str, args: argparse.Namespace) -> int:
    """One worker: asks for trials and runs them one at a time until the study is complete."""
    report = Report(study, spec.trials, bar=sys.stderr.isatty() and not args.child)
    try:
        return _work(study, spec, url, args, report)
    finally:
        report.close()


def _work(study, spec: SearchSpec, url: str, args: argparse.Namespace, report: Report) -> int:
    from optuna.trial import TrialState

    worker = Worker.here()
    failures = 0
    while True:
        asked = next_trial(study, spec, url, worker)
        if asked is None:
            return 0
        if asked == "wait":
            time.sleep(POLL_S)
            continue
        trial, values = asked
        name = experiment_name(spec.study, trial.number)
        try:
            with heartbeat(study, trial, args.heartbeat):
                run_experiment(name, values, args.threads, SEARCH_DIR / "logs" / f"{name}.log")
                value = experiment_metric(name, spec.objective)
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            report.line(
                f"trial {trial.number} ({name}) interrupted: marked failed; run again to resume"
            )
            return 130
        except SearchError as exc:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            failures += 1
            report.line(f"trial {trial.number} ({name}) failed: {exc}")
            if failures >= args.max_failures:
                raise SearchError(
                    f"{failures} trials failed in a row; fix the cause, then run again to resume"
                ) from None
            continue
        failures = 0
        if study.tell(trial, value, skip_if_finished=True).state != TrialState.COMPLETE:
            report.line(
                f"trial {trial.number} ({name}) finished, but another worker had marked it "
                "failed (its heartbeat looked stale): the study does not count it"
            )
            continue
        pushed = push(args.push, name) if args.push else None
        report.line(
            f"trial {trial.number} ({name}): {spec.objective.key} {value:.4f} with "
            f"{describe(values)}; {best_line(study, spec)}"
        )
        report.update()
        if pushed:
            report.line(
                f"warning: {name} is not pushed ({pushed}); "
                f"push it with `dvc exp push {args.push} {name}`"
            )


def say(line: str) -> None:
    print(line, flush=True)


# --- the command ----------------------------------------------------------------------------


def spawn_workers(study, spec: SearchSpec, args: argparse.Namespace) -> int:
    """`--workers N`: N worker processes in this clone (the study is created before they
    load it), their lines passed through, and a progress bar over the study's completed
    trials when stderr is a terminal."""
    command = [sys.executable, "-m", "mnist_pipeline.search", *args.passed, "--child"]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
        for _ in range(args.workers)
    ]
    report = Report(study, spec.trials, bar=sys.stderr.isatty())

    def forward(child: subprocess.Popen) -> None:
        for line in child.stdout:
            report.line(line.rstrip("\n"))
            report.update()

    threads = [threading.Thread(target=forward, args=(c,)) for c in children]
    for thread in threads:
        thread.start()
    try:
        codes = [child.wait() for child in children]
    except KeyboardInterrupt:  # the children had the Ctrl-C too: let them mark their trials
        codes = [child.wait() for child in children]
    for thread in threads:
        thread.join()
    report.close()
    return max(c if c >= 0 else 128 - c for c in codes)  # -9 (killed) -> 137


def summary(study, spec: SearchSpec) -> None:
    """The best trial, how to apply it, and the study's pictures."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = sum(t.state == TrialState.FAIL for t in trials)
    say(f"study {spec.study}: {len(complete)} of {spec.trials} trials complete, {failed} failed")
    if not complete:
        return
    best = study.best_trial
    name = best.user_attrs.get("experiment", experiment_name(spec.study, best.number))
    say(
        f"best: trial {best.number} ({name}): {spec.objective.key} {best.value:.4f} with "
        f"{describe(best.params)}"
    )
    say(f"apply it with `dvc exp apply {name}`; compare with `dvc exp show`")
    for picture in draw(study, spec):
        say(f"wrote {picture}")


def draw(study, spec: SearchSpec) -> list[Path]:
    """The optimisation history and the params' importance as PNGs in search/STUDY/, for
    `dvc plots show` (no network: matplotlib, not plotly)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as plots

    folder = SEARCH_DIR / spec.study
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in (
            ("history", plots.plot_optimization_history),
            ("importance", plots.plot_param_importances),
        ):
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # importance needs two trials that differ
                continue
            figure = axes.figure
            figure.set_size_inches(8, 4.5)
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=80, metadata={"Software": None})
            matplotlib.pyplot.close(figure)
            written.append(folder / f"{name}.png")
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # No abbreviations: the --workers children get the options without --workers.
    parser = argparse.ArgumentParser(
        prog="mnist-search", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument(
        "--space",
        type=Path,
        default=Path("search.yaml"),
        metavar="PATH",
        help="the search space, objective, trials and seed (default: search.yaml)",
    )
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        metavar="URL",
        help=f"where the study lives (default: {DEFAULT_STORAGE}); "
        "postgresql://USER@HOST/DB to share it between machines",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="trials run side by side in this clone (default: 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="compute.threads of each trial (default: the CPUs / workers)",
    )
    parser.add_argument(
        "--push",
        metavar="REMOTE",
        help="`dvc exp push REMOTE` each finished trial (git remote; outputs "
        "go to the default DVC remote)",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        metavar="SECONDS",
        help="a running trial's heartbeat; one silent for 4 beats is failed",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=3,
        metavar="N",
        help="stop after N trials failed in a row (default: 3)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # of --workers
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    for name in ("workers", "threads", "heartbeat", "max_failures"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    args.threads = args.threads or max(1, (cpus or 1) // args.workers)
    args.passed = [*_without_workers(raw), "--threads", str(args.threads)]
    return args


def _without_workers(argv: list[str]) -> Iterator[str]:
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            yield arg


def quiet_optuna() -> None:
    """Optuna's warnings about the experimental heartbeat API, which this module uses on
    purpose with ask and tell, say nothing a user can act on."""
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_optuna()
    try:
        spec = load_search(args.space, Path("params.yaml"), Path("dvc.yaml"))
        study = open_study(spec, args.storage, args.heartbeat)
        if args.workers > 1 and not args.child:
            code = spawn_workers(study, spec, args)
        else:
            code = work(study, spec, args.storage, args)
        if not args.child:
            summary(study, spec)
        return code
    except PipelineError as exc:  # SearchError, or params.yaml refused by the stages' checks
        print(f"mnist-search: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # search/ not writable, a full disk
        print(f"mnist-search: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database went away mid-study, say: Optuna's own errors
        what = " ".join(str(exc).split())
        print(
            f"mnist-search: error: {type(exc).__name__}: {what}; run the same command again to "
            f"resume, and if it repeats, report it",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("mnist-search: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def cli() -> None:
    """The `mnist-search` console script."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
