"""Latency at realistic load: turn → spectator p99 with 1,000 live battles x 10 spectators.

Starts ``python -m arena_rt.cli serve`` in production mode (PostgreSQL + Redis, a database of
its own) and drives it with ``arena-rt replay`` (the bundled synthetic corpus, recorded think
times sped up so each battle plays about one turn per second: the corpus's mean think time
is ~7.2 s, so ``--speed 7.2``), every battle's agents and spectators as real sockets in
``--workers`` client processes. The figure is replay's turn submit → spectator delivery p99,
with the turn rate actually reached, deliveries/s, drops, errors, and the server's and the
clients' CPU.

The floor it is compared with, measured in the same run: the raw ``websockets`` library
(bench_fanout's ceiling server: ``broadcast`` of ~1.2 KB frames, no application logic) at
the same number of sockets and the delivery rate the replay reached; its p99 is what this
machine's loopback and client processes alone cost at that load.

    .venv/bin/python scripts/bench_latency.py [--battles 1000] [--spectators 10]

Machines here have 2 cores shared with other work, and the load generator shares them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

ROOT = Path(__file__).resolve().parent.parent
MEAN_THINK_S = 7.2  # the synthetic corpus: log-normal around 6 s (sigma 0.6), 1.5 … 25 s


def ceiling(sockets_shape: str, deliveries: float, out: Path) -> dict[str, float] | None:
    """bench_fanout's raw websockets server at this shape and delivery rate (fixed, no
    search): the loopback + client floor for the same load."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_fanout.py"),
        "--servers",
        "ceiling",
        "--shapes",
        sockets_shape,
        "--fixed",
        "--start-deliveries",
        str(int(deliveries)),
        "--max-shape-s",
        "8",
        "--retries",
        "0",
        "--warmup-s",
        "1",
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not out.exists():
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
        return None
    steps = json.loads(out.read_text())["results"][0]["steps"]
    if not steps:
        return None
    p99s = sorted(s["p99"] for s in steps)
    return {
        "p99_ms_median": p99s[len(p99s) // 2],
        "p99_ms_best": p99s[0],
        "deliveries_per_s": sum(s["deliveries_per_s"] for s in steps) / len(steps),
        "server_cpu": sum(s["server_cpu"] for s in steps) / len(steps),
        "client_cpu": sum(s["client_cpu"] for s in steps) / len(steps),
        "steps": len(steps),
    }


def run(args: argparse.Namespace) -> int:
    lines = benchlib.header(
        f"latency at realistic load: {args.battles} battles x {args.spectators} spectators"
    )
    print("\n".join(lines), flush=True)
    benchlib.raise_nofile(100_000)
    keys = Path(args.keys)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server_log = out / "server.log"  # kept: a crashed battle's traceback is in it
    server_log.unlink(missing_ok=True)
    with benchlib.migrated_database("arena_latency") as url:
        env = benchlib.production_env(url, ARENA_REGISTRATIONS_PER_MINUTE="100000")
        with benchlib.arena_server(env, server_log) as (proc, port):
            # A fresh database: agents from an earlier run don't exist here.
            keys.unlink(missing_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "arena_rt.cli",
                "replay",
                "--target",
                f"http://127.0.0.1:{port}",
                "--battles",
                str(args.battles),
                "--spectators",
                str(args.spectators),
                "--speed",
                f"{args.speed:g}",
                "--ramp-s",
                f"{args.ramp_s:g}",
                "--workers",
                str(args.workers),
                "--agents",
                str(args.agents),
                "--keys",
                str(keys),
                "--target-pid",
                str(proc.pid),
                "--budget-p99-ms",
                f"{args.budget_ms:g}",
                "--timeout-s",
                f"{args.timeout_s:g}",
                "--max-drops",
                "1000000",
                "--out",
                str(out),
                "--quiet",
            ]
            print("$ " + " ".join(cmd[2:]), flush=True)
            began = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            print(f"replay exit code {done.returncode} after {time.perf_counter() - began:.0f} s")
            if done.returncode == 2 or not (out / "report.json").exists():
                print(done.stdout[-3000:], done.stderr[-3000:])
                return 1
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    lat = report["latencyMs"]["turnDelivery"]
    ack = report["latencyMs"]["turnAck"]
    target = report["target"][0] if report["target"] else {}
    workers = report["client"]["workers"]
    deliveries = summary["deliveriesPerSec"]
    print(
        f"battles {summary['battles']['completed']:,} completed of {args.battles:,}; "
        f"{summary['spectators']:,} spectators; {summary['turnsPerSec']:,.0f} turns/s "
        f"({summary['turnsPerSec'] / args.battles:.2f} per battle per second) over "
        f"{summary['playSeconds']:.0f} s of play"
    )
    print(
        f"turn → spectator: p50 {lat.get('p50', float('nan')):.1f} ms, "
        f"p90 {lat.get('p90', float('nan')):.1f} ms, p99 {lat.get('p99', float('nan')):.1f} ms,"
        f" max {lat.get('max', float('nan')):.1f} ms (n={lat.get('count', 0):,}); "
        f"target p99 ≤ {args.budget_ms:g} ms"
    )
    print(
        f"turn → ack: p50 {ack.get('p50', float('nan')):.1f} ms, "
        f"p99 {ack.get('p99', float('nan')):.1f} ms"
    )
    print(
        f"deliveries/s {deliveries:,.0f}; lost {summary['lostDeliveries']}; "
        f"4008 drops {summary['slowDrops']}; errors {summary['errors']} "
        f"{summary['errorsByCode'] or ''}"
    )
    print(
        "server: "
        + ", ".join(f"{k} {v}" for k, v in target.items() if k != "samples" and "pid" not in k)
    )
    print(
        "clients: "
        + ", ".join(
            f"worker {w['worker']} {w.get('cpuPercentMeanPlay')}% mean CPU in play" for w in workers
        )
    )
    if args.ceiling and deliveries > 0:
        print("floor: raw websockets broadcast at the same sockets and deliveries/s …", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            floor = ceiling(
                f"{args.battles}x{args.spectators}", deliveries, Path(tmp) / "ceiling.json"
            )
        if floor is None:
            print("floor: could not be measured")
        else:
            print(
                f"floor (websockets, no app logic, {floor['deliveries_per_s']:,.0f} deliveries/s "
                f"to {args.battles * args.spectators:,} sockets): p99 {floor['p99_ms_median']:.1f}"
                f" ms (median of {floor['steps']} steps; best {floor['p99_ms_best']:.1f} ms), "
                f"server CPU {floor['server_cpu']:.0f}%, clients {floor['client_cpu']:.0f}%"
            )
            print(
                f"arena_rt p99 / floor p99: "
                f"{lat.get('p99', float('nan')) / max(floor['p99_ms_median'], 0.1):.1f}x"
            )
    print(f"report: {out / 'report.json'} and {out / 'report.html'}; server log: {server_log}")
    print(f"load at the end: {benchlib.load_average()}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--battles", type=int, default=1000)
    parser.add_argument("--spectators", type=int, default=10)
    parser.add_argument(
        "--speed", type=float, default=MEAN_THINK_S, help="think-time divisor (1 turn/s)"
    )
    parser.add_argument("--ramp-s", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--agents", type=int, default=40, help="agent pool (bcrypt at signup)")
    parser.add_argument("--budget-ms", type=float, default=50.0)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--keys", default="/tmp/arena-bench-latency-agents.jsonl")
    parser.add_argument("--out", default="/tmp/arena-bench-latency")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
