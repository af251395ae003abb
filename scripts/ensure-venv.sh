#!/usr/bin/env bash
# Shared set-up of the two README commands: creates .venv at the repo root if missing and
# installs mlbatch with the given extra into it, again whenever pyproject.toml changes.
# Usage: scripts/ensure-venv.sh EXTRA   (run from the repo root)
set -euo pipefail
extra=$1
stamp=".venv/.mlbatch-$extra-installed"
if [ ! -x .venv/bin/python ]; then
  echo "mlbatch set-up: creating .venv" >&2
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "mlbatch set-up: installing mlbatch[$extra] into .venv (a minute or two the first time)" >&2
  .venv/bin/python -m pip install -e ".[$extra]" > ".venv/install-$extra.log" 2>&1 \
    || { tail -n 40 ".venv/install-$extra.log" >&2; echo "mlbatch set-up: install failed (.venv/install-$extra.log)" >&2; exit 1; }
  touch "$stamp"
fi
