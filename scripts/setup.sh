#!/usr/bin/env bash
# Make .venv exactly what uv.lock says (the pipeline, the tests and the dev tools), nothing
# newer. Stops with one line when pyproject.toml and uv.lock disagree. A second run only
# checks; with uv's package cache warm, a fresh clone is set up in seconds (README).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "setup: error: $*" >&2; exit 1; }

python="${PYTHON:-}"
if [ -z "$python" ]; then
  python=python3.11
  command -v "$python" >/dev/null || python=python3
fi
# The Python minor version and the uv that the lock pins (uv is in its dev group: the one
# version that reads and checks the lock).
read -r minor uv_version < <("$python" - <<'PY' 2>/dev/null || true
import re, tomllib
lock = tomllib.load(open("uv.lock", "rb"))
minor = re.fullmatch(r"==\s*(\d+\.\d+)\.\*", lock["requires-python"].strip()).group(1)
(uv,) = [p["version"] for p in lock["package"] if p["name"] == "uv"]
print(minor, uv)
PY
) || true
if [ -z "${uv_version:-}" ]; then
  needed="$(sed -n 's/^requires-python = "==\(.*\)\.\*"$/\1/p' uv.lock)"
  fail "cannot read the Python version and uv's version from uv.lock with $python" \
    "(it needs Python $needed); set PYTHON=/path/to/python$needed"
fi
is_minor() { "$1" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$minor')" 2>/dev/null; }
is_minor "$python" || fail "uv.lock is for Python $minor, $python is not it; set PYTHON=/path/to/python$minor"
if [ -e .venv ] && ! is_minor .venv/bin/python; then
  echo "setup: .venv is not Python $minor (made before the lock?): making it again"
  rm -rf .venv
fi
if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | cut -d' ' -f2)" != "$uv_version" ]; then
  echo "setup: installing uv $uv_version into .venv with $($python --version)"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m ensurepip --upgrade >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -qq --disable-pip-version-check "uv==$uv_version"
fi
[ "${1:-}" = "--uv-only" ] && exit 0  # scripts/lock.sh: the lock's uv, nothing else
export UV_PYTHON_DOWNLOADS=never  # use the Python found above, never fetch one
# --locked: install uv.lock as it is, and refuse to start when it is out of date.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! .venv/bin/uv sync --locked --quiet --python .venv/bin/python 2>"$log"; then
  if grep -q "needs to be updated" "$log"; then
    fail "uv.lock does not match pyproject.toml; run \`bash scripts/lock.sh\` and commit both files"
  fi
  cat "$log" >&2
  exit 1
fi
echo "setup: ready ($(.venv/bin/dvc --version | head -1) in .venv, as uv.lock says)"
