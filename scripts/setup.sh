#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it; --dev adds pytest and ruff.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
# torch==2.14.1 is a CUDA build of about 5.5 GB; it also runs on the CPU.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"
echo "setup: ready ($(.venv/bin/dvc --version | head -1) in .venv)"
