"""Stage environment: check the installed packages against uv.lock, record their versions.

Reads: --lock (uv.lock).
Writes: --out (versions.json: Python's minor version and the locked version of every
package in mnist_pipeline.environment.RECORDED; the other stages take theirs from it as
params, so DVC re-runs exactly the stages whose packages changed).

It runs before every `dvc repro` (always_changed in dvc.yaml; every other stage follows it
in the DAG) and stops the pipeline, with one line naming the package and both versions,
when an installed package differs from the lock: no stage then runs in an environment that
is not the lock's, and every output stays as it was. It takes no params.

Standard library only, unlike the other stages (mnist_pipeline.runtime needs tqdm): it is
the stage that must work, and explain, when dvc runs with a Python that lacks the packages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from mnist_pipeline.environment import EnvironmentProblem, check_installed, locked_versions

log = logging.getLogger("stages")  # errors read "ERROR stages: ...", as in every stage


def record(lock: Path, out: Path) -> dict[str, str]:
    """Check the installed packages against `lock`, then write their versions to `out`.

    `out` is replaced in one step (a temporary file renamed), so a failed check or write
    leaves the previous record as it was.
    """
    versions = locked_versions(lock)
    check_installed(versions, lock)
    text = json.dumps(versions, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return versions


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, required=True, metavar="PATH")
    parser.add_argument("--out", type=Path, required=True, metavar="PATH")
    args = parser.parse_args()
    try:
        versions = record(args.lock, args.out)
    except EnvironmentProblem as exc:
        log.error("%s", exc)
        sys.exit(1)
    except OSError as exc:
        log.error("%s: %s; check that path, then run again", exc.filename or args.out, exc.strerror)
        sys.exit(1)
    log.info("as %s pins: %s", args.lock, ", ".join(f"{k} {v}" for k, v in versions.items()))


if __name__ == "__main__":
    main()
