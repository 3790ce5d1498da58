#!/usr/bin/env bash
# Update uv.lock after an edit of pyproject.toml, or move one package to its newest allowed
# release: `bash scripts/lock.sh --upgrade-package scikit-learn`. Then run
# `bash scripts/setup.sh` to install it; `dvc repro` re-runs the stages that package affects.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --uv-only  # the uv that the lock pins, into .venv
UV_PYTHON_DOWNLOADS=never exec .venv/bin/uv lock "$@"
