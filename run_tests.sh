#!/usr/bin/env bash
# The test command: creates .venv at the repo root if missing, installs mlbatch with its
# test extra into it (again whenever pyproject.toml changes), checks lint with ruff and
# runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
