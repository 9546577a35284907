#!/usr/bin/env bash
# The benchmark suite in one command (BENCHMARKS.md): venv, install, services, then every
# benchmark in turn, each printing its figures against a ceiling measured in the same run.
# Output is kept in artifacts/bench/<UTC time>/. About 30 minutes on 2 cores.
# Usage: scripts/bench.sh [auth|persistence|fanout|capacity|latency|failover|e2e ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ARENA_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then "$PYTHON" -m venv "$VENV"; fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[bench]'

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 30); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

OUT="artifacts/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
PY="$VENV/bin/python"
run() {  # name, command...
  local name=$1; shift
  printf '\n== %s: %s\n' "$name" "$*"
  "$@" 2>&1 | tee "$OUT/$name.txt"
}

WHICH=${*:-auth persistence fanout capacity latency failover e2e}
for bench in $WHICH; do
  case $bench in
    auth) run auth "$PY" scripts/bench_auth.py ;;
    persistence) run persistence "$PY" scripts/bench_persistence.py --battles 500 --seconds 10 ;;
    fanout) run fanout "$PY" scripts/bench_fanout.py --shapes 1x2000,10x100,200x10 --step-s 1 ;;
    # One process may hold at most RLIMIT_NOFILE sockets: 20,000 where the hard limit is 20,000.
    capacity) run capacity "$PY" scripts/bench_capacity.py --sockets 19900 --battles 20 ;;
    latency) run latency "$PY" scripts/bench_latency.py --battles 1000 --spectators 10 ;;
    # Three nodes: takeover after kill -9 (20 kills, 50 battles), turn → ack forwarded vs direct.
    failover) run failover "$PY" scripts/bench_failover.py --out "$OUT/failover" ;;
    # Turn → spectator on arena_rt vs Socket.IO 4 (Node, installed with npm when missing) vs
    # raw websockets, one load generator, the issue #11 shapes (about 8 minutes).
    e2e) run e2e "$PY" scripts/bench_e2e.py --shapes 100x20@2,1000x10@0.2,1000x10@1 \
      --seconds 20 --json "$OUT/e2e.json" --log-dir "$OUT/e2e-logs" ;;
    *) echo "unknown benchmark: $bench (auth persistence fanout capacity latency failover e2e)" >&2; exit 2 ;;
  esac
done
printf '\nfigures kept in %s\n' "$OUT"
