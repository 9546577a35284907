#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv, install, services up, own database, checks.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ARENA_VENV:-.venv}
PYTHON=${PYTHON:-python3}
PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres
REDIS_PORT=6379

step() { printf '\n== %s\n' "$*"; }

step "python environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then "$PYTHON" -m venv "$VENV"; fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[test]'

step "services"
if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
  echo "PostgreSQL is down; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 1; done
fi
pg_isready -h "$PG_HOST" -p "$PG_PORT"
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "Redis is down; starting it"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
  for _ in $(seq 1 30); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
echo "redis: $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping)"

DB="arena_test_$(date +%s)_$$"
step "database $DB"
psql -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE \"$DB\""
cleanup() {
  psql -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
    -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" || true
}
trap cleanup EXIT
export ARENA_TEST_DATABASE_URL="postgresql+asyncpg://$PG_USER@$PG_HOST:$PG_PORT/$DB"
export ARENA_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

step "ruff"
"$VENV/bin/ruff" check arena_rt tests schema scripts
"$VENV/bin/ruff" format --check arena_rt tests schema scripts

step "mypy (strict on arena_rt)"
"$VENV/bin/mypy"

# ---- BEGIN e2e browser (tests/e2e) ----------------------------------------------------------
# The browser tests drive Debian's Chromium (never a browser downloaded by a test tool). Install
# it when missing; if that fails, say so loudly and make the e2e tests skip with the reason.
step "browser for the e2e tests (chromium, chromium-driver)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "Chromium is missing; installing Debian's chromium and chromium-driver with apt"
  APT_LOG=$(mktemp)
  APT_AS=()
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then APT_AS=(sudo -n); fi
  if ! { ${APT_AS[@]+"${APT_AS[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && ${APT_AS[@]+"${APT_AS[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium chromium-driver; } >"$APT_LOG" 2>&1; then
    tail -n 20 "$APT_LOG" || true
  fi
fi
if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
else
  export ARENA_E2E_SKIP="Chromium could not be installed (apt-get install chromium chromium-driver failed)"
  printf '\n%s\n!! %s\n!! THE BROWSER (E2E) TESTS WILL BE SKIPPED.\n%s\n\n' \
    "$(printf '!%.0s' $(seq 1 78))" "$ARENA_E2E_SKIP" "$(printf '!%.0s' $(seq 1 78))" >&2
fi
# ---- END e2e browser ------------------------------------------------------------------------

step "end-to-end live-path smoke (scripts/bench_e2e.py --smoke, its own database, < 60 s)"
# arena_rt and raw websockets at 20 battles x 5 spectators, 2 turns/s: fails on any lost,
# duplicated or reordered turn and on a ~3x regression of CPU per delivery or p99 against raw.
"$VENV/bin/python" scripts/bench_e2e.py --smoke --log-dir "${TMPDIR:-/tmp}/arena-e2e-smoke-$$"

step "pytest"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
