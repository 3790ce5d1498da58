#!/usr/bin/env bash
# Update uv.lock after an edit of pyproject.toml, or move one package to its newest allowed
# release: `bash scripts/lock.sh --upgrade-package scikit-learn`. Then run
# `bash scripts/setup.sh` to install it; `dvc repro` re-runs the stages that package affects.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || bash scripts/setup.sh >/dev/null 2>&1 || true
uv="$( [ -x .venv/bin/uv ] && echo .venv/bin/uv || echo uv )"
UV_PYTHON_DOWNLOADS=never exec "$uv" lock "$@"
