#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole pipeline: `dvc repro` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1
exec .venv/bin/dvc repro "$@"
