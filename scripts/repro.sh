#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole pipeline: `dvc repro` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1
# The stages run as `python -m stages.X`: put the environment's python first on PATH.
export PATH="$PWD/.venv/bin:$PATH"
exec dvc repro "$@"
