"""Persistence benchmark: turns/s persisted with ack-after-commit across many live battles.

Drives B battles in one process through the real supervisor, runners, machine and group
committer on PostgreSQL, on uvloop like ``arena-rt serve`` (and with its GC settings): each
battle's agent submits its next turn as soon as the previous one is acked (acks come only after
commit). Every acked turn stored two events (``turn``, the next ``turn_started``), one turn row
and the battle's ``current_turn``.

The ceiling, measured in the same run against the same database, is asyncpg ``executemany``
inserting the same rows (the events and turn rows of B turns per transaction) with no
application logic. For information a second figure inserts the same rows with one
``INSERT … SELECT FROM unnest(arrays)`` per table (what the committer does on PostgreSQL).
Machines here have 2 cores shared with PostgreSQL and other work: compare ratios.

    .venv/bin/python scripts/bench_persistence.py [--battles 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

from arena_rt.battle import committer as committer_module
from arena_rt.battle.clock import RealClock
from arena_rt.battle.committer import Committer
from arena_rt.battle.domain import Join, ReplyAck, SubmitTurn
from arena_rt.battle.intelligence import HeuristicCommentator, HeuristicJudge
from arena_rt.battle.machine import turn_agent
from arena_rt.battle.ownership import LocalOwnership
from arena_rt.battle.runner import Runner, RunnerDeps
from arena_rt.battle.supervisor import Supervisor
from arena_rt.bus.memory import MemoryBus
from arena_rt.config import Timings
from arena_rt.metrics import Metrics
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.migrate import upgrade
from arena_rt.store.models import Agent, Battle

try:
    from arena_rt.cli import tune_gc
except ImportError:  # an older arena_rt (PYTHONPATH=… for before/after figures)
    tune_gc = None

CONTENT = "A measured argument about the topic, with a claim, evidence and a rebuttal. " * 8


async def seed(db: async_sessionmaker[AsyncSession], battles: int) -> list[tuple[Battle, str, str]]:
    pending: list[tuple[Battle, Agent, Agent]] = []
    async with db() as session:
        for i in range(battles):
            a, b = (
                Agent(
                    name=f"b{i}-{side}",
                    display_name="x",
                    api_key_hash=secrets.token_hex(8),
                    api_key_id=secrets.token_hex(8),
                )
                for side in "ab"
            )
            battle = Battle(
                room_code=f"B{i:07d}",
                topic="bench",
                max_turns=200,
                start_delay_ms=0,
                turn_duration_ms=600_000,
                enable_commentator=False,
                enable_judge=False,
            )
            session.add_all([a, b, battle])
            pending.append((battle, a, b))
        await session.commit()
    return [(battle, a.id, b.id) for battle, a, b in pending]


class Window:
    """What happened between ``open()`` and ``close()``: turns, commits, CPU."""

    def __init__(self) -> None:
        self.measuring = False
        self.acked = 0
        self.groups: Counter[int] = Counter()
        self.t0 = self.t1 = 0.0
        self.cpu0 = self.cpu1 = 0.0
        self.pg0 = self.pg1 = 0.0
        self.wait0 = self.wait1 = 0.0

    def open(self) -> None:
        self.measuring = True
        self.t0, self.cpu0, self.pg0 = time.perf_counter(), time.process_time(), postgres_cpu()
        self.wait0 = run_queue_wait()

    def close(self) -> None:
        self.measuring = False
        self.t1, self.cpu1, self.pg1 = time.perf_counter(), time.process_time(), postgres_cpu()
        self.wait1 = run_queue_wait()

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def run_queue_wait() -> float:
    """Seconds this process's main thread spent runnable but not running (CPU taken by
    others: on a shared 2-core machine that is time the benchmark could not use)."""
    try:
        return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def postgres_cpu() -> float:
    """CPU seconds of every local PostgreSQL process (the server is on this machine)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if raw[raw.index("(") + 1 : raw.rindex(")")].startswith("postgres"):
            total += benchlib.cpu_seconds(int(pid))
    return total


async def play(runner: Runner, deadline: float, window: Window) -> None:
    """Submit the current turn for whoever's turn it is, as soon as the last one is acked."""
    clock = RealClock()
    while time.perf_counter() < deadline and runner.state.current_turn < 200:
        number = runner.state.current_turn
        if number == 0:
            await asyncio.sleep(0.001)
            continue
        agent = turn_agent(runner.state, number).agent_id
        reply = await runner.call(SubmitTurn(agent, number, CONTENT, clock.now_ms()))
        if isinstance(reply, ReplyAck) and window.measuring:
            window.acked += 1


async def app_rate(
    url: str, battles: int, seconds: float, warmup_s: float, committer_args: dict[str, int]
) -> Window:
    engine = make_engine(url, pool_size=10)
    await upgrade(engine)
    db = make_sessionmaker(engine)
    metrics = Metrics()
    committer = Committer(db, metrics, **committer_args)
    window = Window()
    write_group = committer._write_group

    async def counted(group: list[committer_module._Pending]) -> None:
        await write_group(group)
        if window.measuring:
            window.groups[len(group)] += 1

    committer._write_group = counted  # type: ignore[method-assign]
    bus = MemoryBus(lambda *_: None)
    await bus.start()
    await committer.start()
    deps = RunnerDeps(
        committer, bus, RealClock(), HeuristicJudge(), HeuristicCommentator(), metrics
    )
    supervisor = Supervisor(db, deps, LocalOwnership("bench"), Timings())
    rows = await seed(db, battles)
    runners = []
    for battle, a, b in rows:
        runner = await supervisor.runner_for(battle)
        await runner.call(Join(a, RealClock().now_ms()))
        await runner.call(Join(b, RealClock().now_ms()))
        runners.append(runner)
    if tune_gc is not None:
        tune_gc()  # what `arena-rt serve` does before it serves
    deadline = time.perf_counter() + warmup_s + seconds
    loop = asyncio.get_running_loop()
    loop.call_later(warmup_s, window.open)
    loop.call_later(warmup_s + seconds, window.close)
    await asyncio.gather(*(play(r, deadline, window) for r in runners))
    await supervisor.stop()
    await committer.stop()
    await bus.stop()
    await engine.dispose()
    return window


def ceiling_rows(
    battle_ids: list[str], agent_id: str, per_batch: int, seq: int
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    now = datetime.now(UTC)
    payload = '{"type":"turn","content":"' + CONTENT + '"}'
    events, turns = [], []
    for i in range(per_batch):
        battle = battle_ids[i % len(battle_ids)]
        s = seq + 2 * i
        events += [
            (battle, s, "turn", payload, now),
            (battle, s + 1, "turn_started", "{}", now),
        ]
        turns.append((secrets.token_hex(12), battle, agent_id, s, CONTENT, now, 100))
    return events, turns


INSERT_EVENT = (
    "INSERT INTO battle_events (battle_id, seq, type, payload, created_at)"
    " VALUES ($1, $2, $3, $4, $5)"
)
INSERT_TURN = (
    "INSERT INTO battle_turns (id, battle_id, agent_id, turn_number, content, created_at,"
    " duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
UNNEST_EVENT = (
    "INSERT INTO battle_events (battle_id, seq, type, payload, created_at)"
    " SELECT * FROM unnest($1::varchar[], $2::int[], $3::varchar[], $4::text[],"
    " $5::timestamptz[])"
)
UNNEST_TURN = (
    "INSERT INTO battle_turns (id, battle_id, agent_id, turn_number, content, created_at,"
    " duration_ms) SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[],"
    " $4::int[], $5::text[], $6::timestamptz[], $7::int[])"
)


async def ceiling_rate(dsn: str, battles: int, seconds: float, unnest: bool) -> float:
    """The same rows per turn (two events, one turn row), ``battles`` turns per transaction."""
    conn = await asyncpg.connect(dsn)
    battle_ids = [r["id"] for r in await conn.fetch("SELECT id FROM battles LIMIT $1", battles)]
    agent_id = await conn.fetchval("SELECT id FROM agents LIMIT 1")
    seq = 1_000_000 if unnest else 10_000
    turns = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        events, turn_rows = ceiling_rows(battle_ids, agent_id, battles, seq)
        seq += 2 * battles
        async with conn.transaction():
            if unnest:
                await conn.execute(UNNEST_EVENT, *(list(c) for c in zip(*events, strict=True)))
                await conn.execute(UNNEST_TURN, *(list(c) for c in zip(*turn_rows, strict=True)))
            else:
                await conn.executemany(INSERT_EVENT, events)
                await conn.executemany(INSERT_TURN, turn_rows)
        turns += battles
    elapsed = time.perf_counter() - started
    await conn.close()
    return turns / elapsed


async def run(args: argparse.Namespace) -> None:
    lines = benchlib.header("persistence benchmark: turns/s acked after commit")
    print("\n".join(lines), flush=True)
    async with benchlib.temp_database("arena_persist") as url:
        print(
            f"app: {args.battles} battles, {args.warmup_s:g} s warm-up, "
            f"{args.seconds:g} s measured …",
            file=sys.stderr,
            flush=True,
        )
        knobs = {
            k: v
            for k, v in (("writers", args.writers), ("max_group", args.max_group))
            if v is not None
        }
        window = await app_rate(url, args.battles, args.seconds, args.warmup_s, knobs)
        dsn = url.replace("+asyncpg", "")
        ceiling = unnest = float("nan")
        if not args.skip_ceiling:
            print("ceiling: asyncpg executemany …", file=sys.stderr, flush=True)
            ceiling = await ceiling_rate(dsn, args.battles, args.seconds, unnest=False)
            print("asyncpg unnest …", file=sys.stderr, flush=True)
            unnest = await ceiling_rate(dsn, args.battles, args.seconds, unnest=True)
    rate = window.acked / window.seconds
    commits = sum(window.groups.values())
    mean_group = sum(k * v for k, v in window.groups.items()) / max(commits, 1)
    print(f"battles : {args.battles}, {args.seconds:g} s measured after {args.warmup_s:g} s")
    print(
        f"arena_rt turns/s acked after commit      : {rate:8,.0f}   "
        f"({commits / window.seconds:.0f} commits/s, {mean_group:.0f} steps per commit; "
        f"process CPU {(window.cpu1 - window.cpu0) / window.seconds * 100:.0f}%, "
        f"PostgreSQL CPU {(window.pg1 - window.pg0) / window.seconds * 100:.0f}%; "
        f"waiting for a CPU {(window.wait1 - window.wait0) / window.seconds * 100:.0f}%)"
    )
    print(f"ceiling  asyncpg executemany, same rows  : {ceiling:8,.0f}")
    print(f"         asyncpg unnest, same rows (info): {unnest:8,.0f}")
    print(f"ratio    : {rate / ceiling:.2f} of the ceiling (target ≥ 0.50 and ≥ 5,000 turns/s)")
    print(f"load at the end: {benchlib.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--battles", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--writers", type=int, help="committer writers (default: the app's)")
    parser.add_argument("--max-group", type=int, help="committer group bound (the app's)")
    parser.add_argument("--skip-ceiling", action="store_true", help="only the app's rate")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=benchlib.use_uvloop()) as runner:
        runner.run(run(args))


if __name__ == "__main__":
    main()
