#!/usr/bin/env bash
# The test command: creates .venv at the repo root if missing, installs mlbatch with its
# test extra into it (again whenever pyproject.toml changes), checks lint with ruff and
# runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/.mlbatch-test-installed
if [ ! -x .venv/bin/python ]; then
  echo "run_tests: creating .venv" >&2
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "run_tests: installing mlbatch[test] into .venv (a minute or two the first time)" >&2
  .venv/bin/python -m pip install -e '.[test]' > .venv/install.log 2>&1 \
    || { tail -n 40 .venv/install.log >&2; echo "run_tests: install failed (.venv/install.log)" >&2; exit 1; }
  touch "$stamp"
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
