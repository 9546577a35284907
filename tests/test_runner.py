"""The runner and supervisor on a manual clock: timers fire without sleeping, against real DBs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.battle.clock import ManualClock
from arena_rt.battle.committer import Committer
from arena_rt.battle.domain import Join, ReplyAck, SubmitTurn
from arena_rt.battle.intelligence import HeuristicCommentator, HeuristicJudge
from arena_rt.battle.ownership import LocalOwnership
from arena_rt.battle.runner import RunnerDeps
from arena_rt.battle.supervisor import Supervisor
from arena_rt.bus.memory import MemoryBus
from arena_rt.config import Timings
from arena_rt.metrics import Metrics
from arena_rt.protocol import Status
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.migrate import upgrade
from arena_rt.store.models import Agent, Battle, BattleEvent, BattleTurn
from tests.support import unique

START_DELAY = 10_000
TURN = 30_000


@dataclass
class Stack:
    db: async_sessionmaker[AsyncSession]
    clock: ManualClock
    supervisor: Supervisor
    deps: RunnerDeps


@pytest.fixture(params=["postgres", "sqlite"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    if request.param == "postgres":
        engine = make_engine(request.getfixturevalue("migrated_pg"))
    else:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'runner.db'}")
        await upgrade(engine)
    db = make_sessionmaker(engine)
    bus = MemoryBus(lambda battle_id, seq, data: None)
    await bus.start()
    committer = Committer(db, Metrics())
    await committer.start()
    clock = ManualClock()
    deps = RunnerDeps(committer, bus, clock, HeuristicJudge(), HeuristicCommentator(), Metrics())
    supervisor = Supervisor(db, deps, LocalOwnership("test"), Timings())
    yield Stack(db, clock, supervisor, deps)
    await supervisor.stop()
    await committer.stop()
    await bus.stop()
    await engine.dispose()


async def make_battle(db: async_sessionmaker[AsyncSession]) -> tuple[Battle, list[str]]:
    async with db() as session:
        agents = [
            Agent(name=unique("a"), display_name="A", api_key_hash=unique(), api_key_id=unique())
            for _ in range(2)
        ]
        battle = Battle(
            room_code=unique("R")[:10],
            topic="Tabs or spaces?",
            max_turns=3,
            start_delay_ms=START_DELAY,
            turn_duration_ms=TURN,
            vote_duration_ms=TURN,
        )
        session.add_all([*agents, battle])
        await session.commit()
        return battle, [a.id for a in agents]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the runner task catch up (no wall-clock waiting on game timers)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - polling the runner's state is the point
            await asyncio.sleep(0.005)


async def test_timers_fire_on_the_manual_clock(stack: Stack) -> None:
    battle, (a, b) = await make_battle(stack.db)
    runner = await stack.supervisor.runner_for(battle)
    now = stack.clock.now_ms()
    for agent in (a, b):
        assert isinstance(await runner.call(Join(agent, now)), ReplyAck)
    assert runner.state.status is Status.STARTING

    stack.clock.advance(START_DELAY - 1)
    await asyncio.sleep(0.05)
    assert runner.state.status is Status.STARTING  # not a millisecond early

    stack.clock.advance(1)
    await until(lambda: runner.state.current_turn == 1, "turn 1")
    assert runner.state.status is Status.IN_PROGRESS

    stack.clock.advance(TURN)  # agent a never answers: its turn is skipped
    await until(lambda: runner.state.current_turn == 2, "turn 2")
    reply = await runner.call(SubmitTurn(b, 2, "Spaces, for diffs.", stack.clock.now_ms()))
    assert isinstance(reply, ReplyAck) and reply.seq is not None
    await until(lambda: runner.state.current_turn == 3, "turn 3")

    async with stack.db() as session:
        kinds = list(
            await session.scalars(
                select(BattleEvent.type)
                .where(BattleEvent.battle_id == battle.id)
                .order_by(BattleEvent.seq)
            )
        )
        turns = list(
            await session.scalars(select(BattleTurn).where(BattleTurn.battle_id == battle.id))
        )
        row = await session.get(Battle, battle.id)
    assert "turn_skipped" in kinds
    assert [(t.turn_number, t.agent_id, t.content) for t in turns] == [(2, b, "Spaces, for diffs.")]
    assert row is not None and row.current_turn == 3 and row.status == "IN_PROGRESS"
    # Published only what was committed, in order, gap-free.
    history = await stack.deps.bus.history(battle.id, 0)
    assert history is not None
    assert [seq for seq, _ in history] == list(range(1, len(kinds) + 1))


class NotAnInput:
    """What no step accepts: the machine raises on it, as it would on a bug."""

    now = 0


async def test_a_crashing_runner_cancels_only_its_battle(stack: Stack) -> None:
    doomed, _ = await make_battle(stack.db)
    healthy, (c, _d) = await make_battle(stack.db)
    runner = await stack.supervisor.runner_for(doomed)
    other = await stack.supervisor.runner_for(healthy)
    runner.submit_internal(NotAnInput())  # type: ignore[arg-type]
    await until(lambda: runner.finished.is_set(), "crash")
    await until(lambda: stack.supervisor.live(doomed.id) is None, "removal")

    async with stack.db() as session:
        row = await session.get(Battle, doomed.id)
    assert row is not None and row.status == Status.CANCELLED.value
    assert row.cancel_reason == "internal error"
    # The other battle's runner is untouched and still answers.
    assert stack.supervisor.live(healthy.id) is other
    assert isinstance(await other.call(Join(c, stack.clock.now_ms())), ReplyAck)


async def test_restart_resumes_from_the_event_log(stack: Stack) -> None:
    battle, (a, b) = await make_battle(stack.db)
    runner = await stack.supervisor.runner_for(battle)
    for agent in (a, b):
        await runner.call(Join(agent, stack.clock.now_ms()))
    stack.clock.advance(START_DELAY)
    await until(lambda: runner.state.current_turn == 1, "turn 1")
    before = runner.state

    # A new supervisor (a restarted process) rebuilds the same battle from the log.
    await stack.supervisor.stop()
    fresh = Supervisor(stack.db, stack.deps, LocalOwnership("test"), Timings())
    try:
        resumed = await fresh.runner_for(battle)
        assert (resumed.state.status, resumed.state.current_turn, resumed.state.last_seq) == (
            before.status,
            before.current_turn,
            before.last_seq,
        )
        assert resumed.state.turn_deadline_at == before.turn_deadline_at
        reply = await resumed.call(
            SubmitTurn(a, 1, "Tabs: one byte per level.", stack.clock.now_ms())
        )
        assert isinstance(reply, ReplyAck) and reply.seq == before.last_seq + 1
    finally:
        await fresh.stop()
