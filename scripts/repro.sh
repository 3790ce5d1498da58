#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole pipeline: `dvc repro` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
# One run at a time in a clone: two at once fail inside DVC (README, "Comparing experiments").
mkdir -p .dvc/tmp && exec 9>.dvc/tmp/repro.lock
if command -v flock >/dev/null && ! flock -n 9; then
  echo "repro: another run holds .dvc/tmp/repro.lock in this clone; wait for it, or queue parallel experiments with \`dvc exp run --queue\`" >&2
  exit 1
fi
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1
# The stages run as `python -m stages.X`: put the environment's python first on PATH.
export PATH="$PWD/.venv/bin:$PATH"
# DVC parses params.yaml before any stage can check it: an empty file made it delete
# data/raw first, a YAML alias bomb grew it to 6.5 GB. The stages' own check, done first.
python -m mnist_pipeline.config params.yaml
exec dvc repro "$@"
