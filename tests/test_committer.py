"""The group committer on PostgreSQL: under concurrency (many battles sharing agents finish at
once, their groups written by concurrent writers; every result commits and ratings add up), and
under transient faults (classified, waited out, and never written twice)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.battle.committer import (
    BACKOFF_S,
    WATCH_TIMEOUT_S,
    CommitError,
    Committer,
    backoff_s,
)
from arena_rt.battle.domain import VoteRecord
from arena_rt.metrics import Metrics
from arena_rt.protocol import (
    Commentary,
    Mode,
    ParticipantJoined,
    Result,
    StateChanged,
    Status,
    TurnPlayed,
    TurnSkipped,
    TurnStarted,
)
from arena_rt.store.battle_writes import StepWrite, write_steps
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.faults import UNREACHABLE, transient_reason
from arena_rt.store.group_statement import GroupStatementWriter
from arena_rt.store.models import (
    INITIAL_RATING,
    Agent,
    Battle,
    BattleEvent,
    BattleTurn,
    RatingChange,
    Vote,
    utcnow,
)
from tests.support import free_port, unique
from tests.tcp_proxy import Proxy, proxy_to

AGENTS = 6
BATTLES = 80


@pytest.fixture
async def db(migrated_pg: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_pg)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def seated_battles(
    db: async_sessionmaker[AsyncSession],
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Agents, and battles of two of them each (in every order), seated through the committer's
    own write path so their participant rows exist."""
    rng = random.Random(7)
    async with db() as session:
        agents = [
            Agent(name=unique("a"), display_name="A", api_key_hash=unique(), api_key_id=unique())
            for _ in range(AGENTS)
        ]
        battles = [Battle(room_code=unique("R")[:10], topic="Deadlocks?") for _ in range(BATTLES)]
        session.add_all([*agents, *battles])
        await session.commit()
        pairs = [rng.sample([a.id for a in agents], 2) for _ in battles]
        return [a.id for a in agents], [
            (b.id, pair) for b, pair in zip(battles, pairs, strict=True)
        ]


async def test_battles_sharing_agents_all_finish_when_written_concurrently(
    db: async_sessionmaker[AsyncSession],
) -> None:
    agent_ids, battles = await seated_battles(db)
    # Small groups and several writers: many concurrent transactions over the same six agents.
    committer = Committer(db, Metrics(), max_group=3, writers=4)
    await committer.start()
    try:
        await asyncio.gather(
            *(
                committer.commit(
                    StepWrite.of(
                        battle_id,
                        [
                            ParticipantJoined(seq=n + 1, at=0, agent_id=agent_id, position=n)
                            for n, agent_id in enumerate(pair)
                        ],
                        [],
                        dict.fromkeys(pair),
                    )
                )
                for battle_id, pair in battles
            )
        )
        results = [
            StepWrite.of(
                battle_id,
                [Result(seq=3, at=0, winner_id=pair[0], reasoning="first", tally={})],
                [],
                dict.fromkeys(pair),
                mode=Mode.HEAD_TO_HEAD,
            )
            for battle_id, pair in battles
        ]
        outcomes = await asyncio.gather(
            *(committer.commit(step) for step in results), return_exceptions=True
        )
    finally:
        await committer.stop()
    assert [o for o in outcomes if o is not None] == []
    async with db() as session:
        ratings = (
            await session.execute(select(Agent.rating).where(Agent.id.in_(agent_ids)))
        ).scalars()
        changes = await session.scalar(
            select(func.count())
            .select_from(RatingChange)
            .where(RatingChange.agent_id.in_(agent_ids))
        )
    assert changes == 2 * BATTLES
    assert sum(ratings) == pytest.approx(AGENTS * INITIAL_RATING)  # Elo moves are zero-sum


# --------------------------------------------------------------------------- transient faults
#
# Faults are real: PostgreSQL raising the SQLSTATE, a backend terminated by pg_terminate_backend
# (this test's own connection, found by its pid), a closed port, and a TCP proxy between the
# committer and PostgreSQL that drops a connection right after forwarding COMMIT (the commit
# happens; its answer never arrives: the outcome is unknown to the committer).


async def _raise_sqlstate(db: async_sessionmaker[AsyncSession], state: str) -> BaseException:
    async with db() as session:
        try:
            await session.execute(
                text(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{state}'; END $$")
            )
        except Exception as exc:
            return exc
    raise AssertionError("no error")


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("40001", "serialization"),
        ("40P01", "deadlock"),
        ("57P01", "shutdown"),
        ("57P03", "shutdown"),
        ("08006", "connection"),
        ("23505", None),  # unique violation: the step's own fault
        ("22001", None),  # value too long
    ],
)
async def test_sqlstates_are_classified(
    db: async_sessionmaker[AsyncSession], state: str, reason: str | None
) -> None:
    assert transient_reason(await _raise_sqlstate(db, state)) == reason


async def test_a_terminated_backend_and_a_closed_port_are_connection_faults(
    db: async_sessionmaker[AsyncSession], migrated_pg: str
) -> None:
    async with db() as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with db() as admin:  # another connection of this test ends this one's backend
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as terminated:
            await session.execute(text("SELECT 1"))
    assert transient_reason(terminated.value) in UNREACHABLE

    closed = make_engine(migrated_pg.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(Exception) as refused:
            async with closed.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await closed.dispose()
    assert transient_reason(refused.value) == "connection"


def test_backoff_doubles_up_to_its_cap() -> None:
    first, longest = BACKOFF_S
    delays = [backoff_s(n) for n in range(1, 12)]
    assert delays[0] <= first
    assert all(d <= longest for d in delays)
    assert delays[-1] >= longest / 2


async def _battles(db: async_sessionmaker[AsyncSession], n: int) -> list[str]:
    async with db() as session:
        battles = [Battle(room_code=unique("R")[:10], topic="Faults?") for _ in range(n)]
        session.add_all(battles)
        await session.commit()
        return [b.id for b in battles]


def _opening(battle_id: str) -> StepWrite:
    return StepWrite.of(
        battle_id,
        [StateChanged(seq=1, at=0, status=Status.STARTING, previous=Status.LOBBY)],
        [],
        {},
    )


async def _until_degraded(committer: Committer, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if not committer.available:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the committer never noticed the outage")


async def _stored_seqs(db: async_sessionmaker[AsyncSession], battle_id: str) -> list[int]:
    async with db() as session:
        rows = await session.scalars(
            select(BattleEvent.seq).where(BattleEvent.battle_id == battle_id)
        )
        return list(rows)


@dataclass
class Proxied:
    """A committer's way to the database through a proxy the test can cut."""

    proxy: Proxy
    sessions: async_sessionmaker[AsyncSession]
    url: str
    path: str  # "session" (every group in a transaction) or "statement" (one statement)

    def committer(self, metrics: Metrics) -> Committer:
        statement = (
            GroupStatementWriter(self.url, "arena-test-commit")
            if self.path == "statement"
            else None
        )
        return Committer(self.sessions, metrics, writers=1, statement=statement)


@pytest.fixture(params=["session", "statement"])
async def proxied(migrated_pg: str, request: pytest.FixtureRequest) -> AsyncIterator[Proxied]:
    with proxy_to("127.0.0.1", 5432) as proxy:
        url = migrated_pg.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        engine = make_engine(url)
        yield Proxied(proxy, make_sessionmaker(engine), url, request.param)
        await engine.dispose()


async def test_a_commit_whose_answer_was_lost_is_acked_once_not_written_twice(
    db: async_sessionmaker[AsyncSession],
    proxied: Proxied,
) -> None:
    proxy = proxied.proxy
    battle_ids = await _battles(db, 3)
    metrics = Metrics()
    committer = proxied.committer(metrics)
    await committer.start()
    try:
        await committer.commit(_opening(battle_ids[0]))
        # The group reaches the database and is committed; its answer never comes back. (A
        # group statement is its own transaction: it commits once its arguments are bound.)
        marker = b"COMMIT" if proxied.path == "session" else battle_ids[1].encode()
        proxy.trip_on(marker, forward=True, then_refuse=False)
        steps = [
            StepWrite.of(
                b, [TurnSkipped(seq=2, at=0, turn_number=1, agent_id="x", reason="timeout")], [], {}
            )
            for b in battle_ids[:1]
        ] + [_opening(b) for b in battle_ids[1:]]
        async with asyncio.timeout(10):
            await asyncio.gather(*(committer.commit(s) for s in steps))
    finally:
        await committer.stop()
    assert proxy.tripped.is_set()
    assert await _stored_seqs(db, battle_ids[0]) == [1, 2]
    for b in battle_ids[1:]:
        assert await _stored_seqs(db, b) == [1]
    assert metrics.commit_retries.labels("connection")._value.get() >= 1
    assert committer.available


async def test_another_writers_bytes_at_the_seq_fail_the_step_and_spare_the_others(
    db: async_sessionmaker[AsyncSession],
    proxied: Proxied,
) -> None:
    proxy = proxied.proxy
    fenced, other = await _battles(db, 2)
    committer = proxied.committer(Metrics())
    await committer.start()
    try:
        # The connection dies as the group's rows go out; while the database is unreachable
        # for the committer, another writer (a new owner) stores its own seq 1 of `fenced`.
        proxy.trip_on(b"INSERT INTO battle_events", forward=False, then_refuse=True)
        outcomes = asyncio.gather(
            committer.commit(_opening(fenced)),
            committer.commit(_opening(other)),
            return_exceptions=True,
        )
        await asyncio.to_thread(proxy.tripped.wait, 10)
        await _until_degraded(committer)
        rival = StateChanged(seq=1, at=1, status=Status.CANCELLED, previous=Status.LOBBY)
        async with db() as session, session.begin():
            await write_steps(session, [StepWrite.of(fenced, [rival], [], {})])
        proxy.restore()
        async with asyncio.timeout(10):
            results = await outcomes
    finally:
        await committer.stop()
    assert isinstance(results[0], CommitError), results
    assert results[1] is None, results
    assert await _stored_seqs(db, other) == [1]
    assert committer.available


async def test_while_the_database_is_unreachable_a_step_waits_and_is_stored_after(
    db: async_sessionmaker[AsyncSession],
    proxied: Proxied,
) -> None:
    proxy = proxied.proxy
    (battle_id,) = await _battles(db, 1)
    metrics = Metrics()
    committer = proxied.committer(metrics)
    await committer.start()
    try:
        proxy.cut()
        step = asyncio.ensure_future(committer.commit(_opening(battle_id)))
        await _until_degraded(committer)
        assert metrics.database_up._value.get() == 0
        await asyncio.sleep(3 * BACKOFF_S[1])  # longer than any single back-off
        assert not step.done()
        proxy.restore()
        async with asyncio.timeout(3 * BACKOFF_S[1]):
            await step
    finally:
        await committer.stop()
    assert await _stored_seqs(db, battle_id) == [1]
    assert committer.available
    assert metrics.database_up._value.get() == 1


async def test_stop_ends_a_waiting_step_with_commit_error(
    proxied: Proxied, db: async_sessionmaker[AsyncSession]
) -> None:
    proxy = proxied.proxy
    (battle_id,) = await _battles(db, 1)
    committer = proxied.committer(Metrics())
    await committer.start()
    proxy.cut()
    step = asyncio.ensure_future(committer.commit(_opening(battle_id)))
    await _until_degraded(committer)
    await committer.stop()
    with pytest.raises(CommitError):
        await step


def _life_of_a_battle(battle_id: str, agents: list[str]) -> list[list[StepWrite]]:
    """Groups of one battle's frequent steps, in order: start, two turns (each with its
    commentary in a later group), a vote, the end by cancellation."""
    a, b = agents
    started = StateChanged(
        seq=1, at=1_700_000_000_000, status=Status.IN_PROGRESS, previous=Status.STARTING
    )
    turn1 = [
        TurnStarted(seq=2, at=1_700_000_000_100, turn_number=1, agent_id=a, deadline_at=9),
        TurnPlayed(
            seq=3, at=1_700_000_001_000, turn_number=1, agent_id=a, content="Mine.", duration_ms=900
        ),
        TurnStarted(seq=4, at=1_700_000_001_000, turn_number=2, agent_id=b, deadline_at=9),
    ]
    turn2 = [
        Commentary(seq=5, at=1_700_000_001_100, turn_number=1, text="Bold <b>opening</b>."),
        TurnPlayed(
            seq=6,
            at=1_700_000_002_000,
            turn_number=2,
            agent_id=b,
            content="Ours.",
            duration_ms=1000,
            audio_url="https://audio.example/2.mp3",
        ),
    ]
    vote = VoteRecord(idempotency_key="k1", voter_id=a, connection_id=None, target_agent_id=b)
    end = [
        Commentary(seq=7, at=1_700_000_002_100, turn_number=2, text="A reply."),
        StateChanged(
            seq=8,
            at=1_700_000_003_000,
            status=Status.CANCELLED,
            previous=Status.IN_PROGRESS,
            reason="x" * 300,
        ),
    ]
    seats: dict[str, str | None] = {a: None, b: None}
    return [
        [StepWrite.of(battle_id, [started], [], seats)],
        [StepWrite.of(battle_id, turn1, [], seats)],
        [StepWrite.of(battle_id, turn2, [vote], seats)],
        [StepWrite.of(battle_id, end, [], seats)],
    ]


async def _rows_of(db: async_sessionmaker[AsyncSession], battle_id: str) -> dict[str, object]:
    async with db() as session:
        battle = await session.get(Battle, battle_id)
        assert battle is not None
        events = await session.execute(
            select(BattleEvent.seq, BattleEvent.type, BattleEvent.payload)
            .where(BattleEvent.battle_id == battle_id)
            .order_by(BattleEvent.seq)
        )
        turns = await session.execute(
            select(
                BattleTurn.turn_number,
                BattleTurn.agent_id,
                BattleTurn.content,
                BattleTurn.duration_ms,
                BattleTurn.audio_url,
                BattleTurn.commentary,
                BattleTurn.created_at,
            )
            .where(BattleTurn.battle_id == battle_id)
            .order_by(BattleTurn.turn_number)
        )
        votes = await session.execute(
            select(Vote.voter_id, Vote.target_agent_id, Vote.idempotency_key).where(
                Vote.battle_id == battle_id
            )
        )
        return {
            "battle": (
                battle.status,
                battle.current_turn,
                battle.started_at,
                battle.completed_at,
                battle.cancel_reason,
            ),
            "events": [tuple(r) for r in events],
            "turns": [tuple(r) for r in turns],
            "votes": [(voter, target, key.removeprefix(battle_id)) for voter, target, key in votes],
        }


async def test_the_group_statement_stores_exactly_what_the_session_path_stores(
    db: async_sessionmaker[AsyncSession], migrated_pg: str
) -> None:
    agents, seated = await seated_battles(db)
    agents = agents[:2]
    by_session, by_statement = (b for b, _ in seated[:2])
    writer = GroupStatementWriter(migrated_pg, "arena-test-commit")
    try:
        for session_group, statement_group in zip(
            _life_of_a_battle(by_session, agents),
            _life_of_a_battle(by_statement, agents),
            strict=True,
        ):
            async with db() as session, session.begin():
                await write_steps(session, session_group)
            now = utcnow()
            rows = writer.rows_for(statement_group, now)
            assert rows is not None, "frequent rows only: the statement path takes them"
            await writer.write(rows, now)
    finally:
        await writer.close()
    stored = await _rows_of(db, by_statement)
    assert stored == await _rows_of(db, by_session)
    # And what was stored is the battle's life, not two equal empty answers.
    assert stored["battle"][:2] == ("CANCELLED", 2)  # type: ignore[index]
    assert [t[5] for t in stored["turns"]] == ["Bold <b>opening</b>.", "A reply."]  # type: ignore[attr-defined]
    assert len(stored["events"]) == 8 and len(stored["votes"]) == 1  # type: ignore[arg-type]


async def test_seats_and_results_take_the_session_path(migrated_pg: str) -> None:
    seat = ParticipantJoined(seq=1, at=0, agent_id="a", position=1)
    result = Result(seq=2, at=0, winner_id="a", reasoning="r", decided_by="judge", tally={})
    writer = GroupStatementWriter(migrated_pg, "arena-test-commit")
    assert writer.rows_for([StepWrite.of("b", [seat], [], {})], utcnow()) is None
    assert writer.rows_for([_opening("b"), StepWrite.of("c", [result], [], {})], utcnow()) is None
    assert writer.rows_for([_opening("b")], utcnow()) is not None


async def test_a_stalled_event_loop_is_not_taken_for_a_database_outage(
    db: async_sessionmaker[AsyncSession],
) -> None:
    """A connect storm can stall the event loop for seconds; the database's answer to the
    probe is then read late. That must not refuse every battle's inputs as `unavailable`."""
    committer = Committer(db, Metrics(), writers=1)
    await committer.start()
    try:
        probe = asyncio.create_task(committer.check_database())
        await asyncio.sleep(0)  # the probe is out, waiting for its answer
        time.sleep(WATCH_TIMEOUT_S + 0.5)  # noqa: ASYNC251 (the loop stalls past the deadline)
        await probe
        assert committer.available
    finally:
        await committer.stop()
