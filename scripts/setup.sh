#!/usr/bin/env bash
# Make .venv exactly what uv.lock says (the pipeline, the tests and the dev tools), nothing
# newer. Stops with one line when pyproject.toml and uv.lock disagree. A second run only
# checks; with uv's package cache warm, a fresh clone is set up in seconds (README).
set -euo pipefail
cd "$(dirname "$0")/.."
# The uv that the lock itself pins (dev group): the one version that reads and checks it.
uv_version="$(sed -n '/^name = "uv"$/{n;s/^version = "\(.*\)"$/\1/p;}' uv.lock)"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "setup: error: needs Python 3.11 (pyproject.toml), $python is not it;" \
    "set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | cut -d' ' -f2)" != "$uv_version" ]; then
  echo "setup: installing uv $uv_version into .venv with $($python --version)"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m ensurepip --upgrade >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -qq --disable-pip-version-check "uv==$uv_version"
fi
export UV_PYTHON_DOWNLOADS=never  # use the Python found above, never fetch one
# --locked: install uv.lock as it is, and refuse to start when it is out of date.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! .venv/bin/uv sync --locked --quiet --python .venv/bin/python 2>"$log"; then
  if grep -q "needs to be updated" "$log"; then
    echo "setup: error: uv.lock does not match pyproject.toml; run \`bash scripts/lock.sh\`" \
      "and commit both files" >&2
  else
    cat "$log" >&2
  fi
  exit 1
fi
echo "setup: ready ($(.venv/bin/dvc --version | head -1) in .venv, as uv.lock says)"
