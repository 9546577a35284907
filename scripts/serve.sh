#!/usr/bin/env bash
# Run the server on a fresh machine: venv, install, then `arena-rt serve` (embedded default
# unless DATABASE_URL / REDIS_URL are set). Extra arguments go to `arena-rt`, e.g.
#   scripts/serve.sh demo        # two bots play a battle you can watch
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ARENA_VENV:-.venv}
if [ ! -x "$VENV/bin/arena-rt" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e .
fi
if [ $# -eq 0 ]; then set -- serve; fi
exec "$VENV/bin/arena-rt" "$@"
