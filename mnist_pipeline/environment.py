"""The package versions that compute the results: read from uv.lock, checked against the
installed ones, and recorded with the CPU and thread count that made each result.

The `environment` stage writes the locked versions of `RECORDED` into versions.json, and
each stage lists, as params from that file, the versions that can change its outputs
(dvc.yaml). Another scikit-learn in the lock therefore re-runs the k-means stages and
nothing else, and a dev tool (ruff, pytest) re-runs nothing: it is not recorded.

Standard library only: the check must run, and say what is wrong, in a Python that lacks
the project's packages (dvc called without the environment activated).
"""

from __future__ import annotations

import platform
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Every package whose version can change a stage's output bytes (dvc.yaml picks per stage).
# scipy computes inside scikit-learn; Pillow writes matplotlib's PNG files.
RECORDED = ("numpy", "torch", "scikit-learn", "scipy", "matplotlib", "pillow", "dvclive")

GO_BACK = "bash scripts/setup.sh"
ADOPT = "bash scripts/lock.sh --upgrade-package"
# The one form of requires-python the project uses (pyproject.toml): one minor version.
ONE_MINOR = re.compile(r"==\s*(\d+\.\d+)\.\*")


class EnvironmentProblem(Exception):
    """uv.lock is unreadable, or the installed packages are not the ones it pins."""


def locked_versions(lock: Path) -> dict[str, str]:
    """{"python": "3.11", package: version} for RECORDED, as `lock` (uv.lock) pins them."""
    try:
        data = tomllib.loads(lock.read_text(encoding="utf-8"))
        versions = {p["name"]: p["version"] for p in data["package"] if "version" in p}
        python = ONE_MINOR.fullmatch(data["requires-python"].strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvironmentProblem(f"{lock}: cannot read it ({exc}); restore it with git") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EnvironmentProblem(
            f"{lock}: not a uv lock file ({type(exc).__name__}: {exc}); "
            "restore it with git, or run `bash scripts/lock.sh`"
        ) from None
    if python is None:
        raise EnvironmentProblem(
            f"{lock}: requires-python is {data['requires-python']!r}, not one minor version "
            "('==3.11.*'): pin one in pyproject.toml, then run `bash scripts/lock.sh`"
        )
    missing = [name for name in RECORDED if name not in versions]
    if missing:
        raise EnvironmentProblem(
            f"{lock} pins no {', '.join(missing)}: the project needs them; "
            "restore the file with git, or run `bash scripts/lock.sh`"
        )
    running = python_minor()
    if running != python.group(1):
        raise EnvironmentProblem(
            f"this is Python {running} ({sys.executable}), {lock} is for Python "
            f"{python.group(1)}: run `{GO_BACK}`, then dvc from .venv (`source .venv/bin/activate`)"
        )
    return {"python": running} | {name: versions[name] for name in RECORDED}


def python_minor() -> str:
    """This Python's version as uv.lock pins it ("3.11"): the patch level changes no result."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_installed(locked: dict[str, str], lock: Path) -> None:
    """Raise EnvironmentProblem on the first recorded package installed at another version.

    The message names the package, both versions and the two ways on: go back to the lock,
    or adopt the installed version into it (then DVC re-runs the stages it affects).
    """
    for name in RECORDED:
        installed = installed_version(name)
        if installed is None:
            raise EnvironmentProblem(
                f"{name} is not installed for {sys.executable}, {lock} pins {locked[name]}: "
                f"run `{GO_BACK}`, then dvc from .venv (`source .venv/bin/activate`)"
            )
        if installed != locked[name]:
            raise EnvironmentProblem(
                f"{name} {installed} is installed, {lock} pins {locked[name]}: go back with "
                f"`{GO_BACK}`, or adopt it with `{ADOPT} {name}=={installed}` (first change "
                "its pin, if pyproject.toml pins it; then `dvc repro` re-runs what it affects)"
            )


def cpu_model() -> str:
    """The processor's name, as the kernel reports it (float results depend on it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.partition(":")[2].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe(packages: tuple[str, ...], threads: int) -> dict:
    """What made a result: the CPU and the threads used, Python and the installed versions
    of `packages`. Stored in the results themselves (models, made_with/), so two results
    can be compared from their files alone. Nothing else (not the number of cores, which a
    container may change, nor Python's patch level): the same environment, CPU and params
    must give the same bytes.
    """
    return {
        "cpu": cpu_model(),
        "threads": threads,
        "python": python_minor(),
        **{name: installed_version(name) or "not installed" for name in packages},
    }
