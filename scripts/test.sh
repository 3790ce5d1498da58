#!/usr/bin/env bash
# Set up (the lock includes the dev tools), lint, then run the whole test suite; arguments
# go to pytest.
# The browser test needs Debian's chromium; without it that test skips (and fails under CI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
