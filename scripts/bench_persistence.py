"""Persistence benchmark: turns/s persisted with ack-after-commit across many live battles.

Drives B battles in one process through the real supervisor, runners, machine and group
committer on PostgreSQL: each battle's agent submits its next turn as soon as the previous one
is acked (acks come only after commit). The ceiling, measured in the same run, is asyncpg's
``executemany`` inserting the same rows (the events and turn rows of every acked turn) with no
application logic. Machines here have 2 cores and are shared: compare the ratio, not the
absolute numbers.

    .venv/bin/python scripts/bench_persistence.py [--battles 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import time
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
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


async def play(runner: Runner, deadline: float, acked: list[int]) -> None:
    """Submit the current turn for whoever's turn it is, as soon as the last one is acked."""
    clock = RealClock()
    while time.perf_counter() < deadline and runner.state.current_turn < 200:
        number = runner.state.current_turn
        if number == 0:
            await asyncio.sleep(0.001)
            continue
        agent = turn_agent(runner.state, number).agent_id
        reply = await runner.call(SubmitTurn(agent, number, CONTENT, clock.now_ms()))
        if isinstance(reply, ReplyAck):
            acked[0] += 1


async def app_rate(url: str, battles: int, seconds: float) -> tuple[float, float]:
    engine = make_engine(url, pool_size=10)
    await upgrade(engine)
    db = make_sessionmaker(engine)
    metrics = Metrics()
    committer = Committer(db, metrics)
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
    acked = [0]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(play(r, deadline, acked) for r in runners))
    elapsed = time.perf_counter() - started
    commits = metrics.commit_seconds.collect()[0].samples
    count = next(s.value for s in commits if s.name.endswith("_count"))
    await supervisor.stop()
    await committer.stop()
    await bus.stop()
    await engine.dispose()
    return acked[0] / elapsed, acked[0] / max(count, 1)


async def ceiling_rate(dsn: str, battles: int, rows_per_batch: int, seconds: float) -> float:
    """asyncpg executemany of the same rows per turn: two events and one turn row."""
    conn = await asyncpg.connect(dsn)
    battle_ids = [r["id"] for r in await conn.fetch("SELECT id FROM battles LIMIT $1", battles)]
    agent_id = await conn.fetchval("SELECT id FROM agents LIMIT 1")
    now = datetime.now(UTC)
    payload = '{"type":"turn","content":"' + CONTENT + '"}'
    seq = 10_000
    turns = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        events, turn_rows = [], []
        for i in range(rows_per_batch):
            battle = battle_ids[i % len(battle_ids)]
            seq += 2
            events += [
                (battle, seq, "turn", payload, now),
                (battle, seq + 1, "turn_started", "{}", now),
            ]
            turn_rows.append((secrets.token_hex(12), battle, agent_id, seq, CONTENT, now, 100))
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO battle_events (battle_id, seq, type, payload, created_at)"
                " VALUES ($1,$2,$3,$4,$5)",
                events,
            )
            await conn.executemany(
                "INSERT INTO battle_turns"
                " (id, battle_id, agent_id, turn_number, content, created_at, duration_ms)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7)",
                turn_rows,
            )
        turns += rows_per_batch
    elapsed = time.perf_counter() - started
    await conn.close()
    return turns / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--battles", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    name = f"arena_bench_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        rate, per_commit = await app_rate(url, args.battles, args.seconds)
        ceiling = await ceiling_rate(
            url.replace("+asyncpg", ""), args.battles, args.battles, args.seconds
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(f"# persistence benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        "PostgreSQL on loopback (shared, noisy)"
    )
    print(f"battles: {args.battles}, {args.seconds:.0f} s per measurement")
    print(
        f"arena_rt  turns/s acked after commit : {rate:9.0f}  ({per_commit:.1f} turns per commit)"
    )
    print(f"ceiling   asyncpg executemany, same rows: {ceiling:9.0f}")
    print(f"ratio: {rate / ceiling:.2f} of the ceiling")


if __name__ == "__main__":
    asyncio.run(main())
