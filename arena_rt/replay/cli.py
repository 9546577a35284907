"""``arena-rt replay``: the command-line face of the replay load tester."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from arena_rt.replay.corpus import synthetic_corpus
from arena_rt.replay.driver import EXIT_SETUP, Budgets, ReplayConfig, run
from arena_rt.replay.recording import Recording, RecordingError, fetch, load_paths, save

DESCRIPTION = """\
Replay recorded battles against a running deployment at many times real load, over real
sockets (docs/PROTOCOL.md only): B battles at once, each with its agents replaying the
recorded turns and S spectators, spread over --workers processes. Prints a live progress line
(stderr) and a summary, writes report.json and report.html to --out, and exits 1 when an error
occurred, a spectator was dropped as slow (4008) more than --max-drops times, or a latency
budget was exceeded (2: the run could not be set up).

The target rate-limits agent registrations per address (ARENA_REGISTRATIONS_PER_MINUTE,
default 10): on a load-test target raise it (e.g. ARENA_REGISTRATIONS_PER_MINUTE=100000), or
keep the agents of a first run with --keys FILE and reuse them in the next runs.
"""

EPILOG = """\
examples:
  arena-rt replay --target http://127.0.0.1:8000 --battles 200 --spectators 10 --asap \\
      --keys agents.jsonl --target-pid $(pgrep -f 'arena-rt serve') --budget-p99-ms 50
  arena-rt replay --target http://node1:8000 --target http://node2:8000 --speed 10
  arena-rt replay --from-server http://prod:8000 --rooms 8PHP4AM6,QZ7KM2XA \\
      --save-recordings recs/ --target http://127.0.0.1:8000 --asap
  arena-rt replay --recordings recs/ --target http://127.0.0.1:8000 --asap
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--target",
        action="append",
        metavar="URL",
        help="base URL of a node (repeat for several nodes; battles are created on, and their "
        "agents connect to, node (battle mod nodes); spectators are spread over all nodes). "
        "Default http://127.0.0.1:8000",
    )
    src = p.add_argument_group("input (default: the synthetic corpus)")
    src.add_argument("--seed", type=int, default=1, help="synthetic corpus seed (default 1)")
    src.add_argument(
        "--corpus-size", type=int, default=48, help="synthetic recordings to generate (default 48)"
    )
    src.add_argument(
        "--recordings",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="JSONL files saved from /events (Accept: application/x-ndjson), or folders of them",
    )
    src.add_argument("--from-server", metavar="URL", help="fetch recordings from this server")
    src.add_argument(
        "--rooms",
        metavar="CODES",
        help="comma-separated room codes to fetch (default: its newest completed battles)",
    )
    src.add_argument(
        "--fetch-limit", type=int, default=20, help="battles to fetch without --rooms (20)"
    )
    src.add_argument(
        "--save-recordings", type=Path, metavar="DIR", help="write the recordings used"
    )
    load = p.add_argument_group("load")
    load.add_argument("--battles", "-b", type=int, default=10, help="battles at once (default 10)")
    load.add_argument(
        "--spectators", "-s", type=int, default=5, help="spectators per battle (default 5)"
    )
    pace = load.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=float,
        default=None,
        help="replay the recorded think times this many times faster (default 1)",
    )
    pace.add_argument(
        "--asap",
        action="store_true",
        help="answer every turn at once (as fast as the server allows)",
    )
    load.add_argument(
        "--ramp-s",
        type=float,
        default=0.0,
        help="spread the battles' starts over this many seconds",
    )
    load.add_argument(
        "--workers",
        "-w",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="client processes (default: min(4, cores))",
    )
    load.add_argument(
        "--connect-concurrency",
        type=int,
        default=128,
        help="socket handshakes in flight, over all workers (default 128)",
    )
    agents = p.add_argument_group("agents and battles")
    agents.add_argument(
        "--agents",
        type=int,
        help="agent pool size, reused across battles (default: the seats needed, at most 40)",
    )
    agents.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help="reuse agents saved here by an earlier run (JSON lines id/name/apiKey); agents "
        "registered now are appended",
    )
    agents.add_argument(
        "--auth",
        choices=("session", "key"),
        default="session",
        help="agent socket auth: 'session' (default) uses the API key on an agent's first "
        "socket and the session token from its welcome after that, as PROTOCOL.md intends; "
        "'key' sends the API key every time",
    )
    agents.add_argument("--start-delay-ms", type=int, default=200, help="battle startDelayMs (200)")
    agents.add_argument("--vote-duration-ms", type=int, default=500, help="voteDurationMs (500)")
    agents.add_argument(
        "--turn-duration-ms",
        type=int,
        help="turnDurationMs (default: recorded, divided by --speed, never below the think time)",
    )
    agents.add_argument("--no-judge", action="store_true", help="enableJudge false")
    agents.add_argument("--no-commentator", action="store_true", help="enableCommentator false")
    gate = p.add_argument_group("gates (exit 1 when exceeded)")
    gate.add_argument("--budget-p50-ms", type=float, help="turn → spectator p50 budget")
    gate.add_argument("--budget-p99-ms", type=float, help="turn → spectator p99 budget")
    gate.add_argument("--budget-max-ms", type=float, help="turn → spectator max budget")
    gate.add_argument("--budget-ack-p99-ms", type=float, help="turn → ack p99 budget")
    gate.add_argument(
        "--max-drops", type=int, default=0, help="spectators dropped as slow (4008) allowed (0)"
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, default=Path("replay-report"), help="report folder (replay-report)"
    )
    out.add_argument(
        "--target-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="sample this local target process's CPU and RSS from /proc (repeatable)",
    )
    out.add_argument("--interval-s", type=float, default=1.0, help="timeline interval (1 s)")
    out.add_argument("--timeout-s", type=float, default=600.0, help="give up after (600 s)")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def _recordings(args: argparse.Namespace) -> tuple[list[Recording], str]:
    if args.recordings and args.from_server:
        raise RecordingError("--recordings and --from-server exclude each other")
    if args.recordings:
        recs = load_paths(args.recordings)
        return recs, f"{len(recs)} recordings from {', '.join(map(str, args.recordings))}"
    if args.from_server:
        rooms = [r.strip() for r in (args.rooms or "").split(",") if r.strip()]
        recs = fetch(args.from_server, rooms, args.fetch_limit)
        return recs, f"{len(recs)} recordings fetched from {args.from_server}"
    recs = synthetic_corpus(args.seed, args.corpus_size)
    return recs, f"synthetic corpus (seed {args.seed}, {len(recs)} battles)"


def main(args: argparse.Namespace) -> int:
    if args.battles < 1 or args.spectators < 0 or args.workers < 1:
        print(
            "arena-rt replay: --battles and --workers must be >= 1, --spectators >= 0",
            file=sys.stderr,
        )
        return EXIT_SETUP
    if args.speed is not None and args.speed <= 0:
        print("arena-rt replay: --speed must be > 0", file=sys.stderr)
        return EXIT_SETUP
    try:
        recordings, source = _recordings(args)
    except (RecordingError, OSError) as exc:
        print(f"arena-rt replay: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as exc:  # e.g. httpx errors while fetching
        print(f"arena-rt replay: could not load recordings: {exc!r}", file=sys.stderr)
        return EXIT_SETUP
    if args.save_recordings:
        written = save(recordings, args.save_recordings)
        print(f"saved {len(written)} recordings to {args.save_recordings}", file=sys.stderr)
    cfg = ReplayConfig(
        targets=args.target or ["http://127.0.0.1:8000"],
        recordings=recordings,
        source=source,
        battles=args.battles,
        spectators=args.spectators,
        speed=None if args.asap else (args.speed or 1.0),
        workers=args.workers,
        agents=args.agents,
        keys_file=args.keys,
        start_delay_ms=args.start_delay_ms,
        vote_duration_ms=args.vote_duration_ms,
        turn_duration_ms=args.turn_duration_ms,
        judge=not args.no_judge,
        commentator=not args.no_commentator,
        ramp_s=args.ramp_s,
        timeout_s=args.timeout_s,
        target_pids=args.target_pid,
        interval_s=args.interval_s,
        connect_concurrency=args.connect_concurrency,
        session_tokens=args.auth == "session",
        progress=not args.quiet,
        budgets=Budgets(
            delivery_p50_ms=args.budget_p50_ms,
            delivery_p99_ms=args.budget_p99_ms,
            delivery_max_ms=args.budget_max_ms,
            ack_p99_ms=args.budget_ack_p99_ms,
            max_drops=args.max_drops,
        ),
        out_dir=args.out,
        command=["arena-rt", *sys.argv[1:]] if sys.argv else [],
    )
    code, _ = run(cfg)
    return code
