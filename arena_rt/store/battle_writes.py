"""What battle steps write: their events into the log and their effect on the battle's rows.

Called inside one transaction for a group of steps (see ``battle.committer``), so the log and the
Battle / BattleParticipant / BattleTurn / Vote rows never disagree. The frequent writes (events,
turns, votes, the battle's status and current turn) are batched across the whole group into a
handful of statements; rare ones (seats, commentary, results) run in event order.
"""

from __future__ import annotations

import enum
import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
from sqlalchemy import Table, TypeDecorator, bindparam, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from arena_rt.battle.domain import VoteRecord
from arena_rt.ids import new_id
from arena_rt.protocol import (
    Commentary,
    Event,
    Mode,
    ParticipantJoined,
    ParticipantLeft,
    Result,
    StateChanged,
    Status,
    TurnPlayed,
    TurnStarted,
    encode,
    event_type,
)
from arena_rt.protocol import RatingChange as RatingMove
from arena_rt.ratings.elo import rate_battle
from arena_rt.store.models import (
    Agent,
    Battle,
    BattleEvent,
    BattleParticipant,
    BattleTurn,
    RatingChange,
    Vote,
    utcnow,
)
from arena_rt.store.timeconv import from_ms


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One step of one battle: its events (encoded once, here) and vote rows.

    ``events`` and ``encoded`` are what gets stored and then published. The writer completes a
    ``result`` event in place with the rating changes it commits in the same transaction.
    """

    battle_id: str
    events: list[Event]
    encoded: list[bytes]
    votes: Sequence[VoteRecord]
    seats: dict[str, str | None]  # agent id -> team id, for deciding wins and losses
    mode: Mode = Mode.HEAD_TO_HEAD
    judge_details: str | None = None

    @property
    def has_result(self) -> bool:
        return any(isinstance(e, Result) for e in self.events)

    @classmethod
    def of(
        cls,
        battle_id: str,
        events: Sequence[Event],
        votes: Sequence[VoteRecord],
        seats: dict[str, str | None],
        *,
        mode: Mode = Mode.HEAD_TO_HEAD,
        judge_details: str | None = None,
    ) -> StepWrite:
        return cls(
            battle_id, list(events), [encode(e) for e in events], votes, seats, mode, judge_details
        )


def stored_key(battle_id: str, key: str) -> str:
    """Clients choose keys per battle; the column is unique across battles, so scope it."""
    return f"{battle_id}:{key}"


def client_key(stored: str) -> str:
    _, scoped, key = stored.partition(":")
    return key if scoped else stored  # a row written before keys were scoped: as it is


@dataclass
class GroupRows:
    """A group's rows by kind: the frequent ones batched, the rare ones in event order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    battles: dict[str, dict[str, Any]] = field(default_factory=dict)  # merged, last value wins
    commentary: list[dict[str, Any]] = field(default_factory=list)  # one per turn, later
    rare: list[tuple[StepWrite, Event]] = field(default_factory=list)


_EVENTS = cast(Table, BattleEvent.__table__)
_VOTES = cast(Table, Vote.__table__)
_TURNS = cast(Table, BattleTurn.__table__)
_BATTLES = cast(Table, Battle.__table__)
_SET_COMMENTARY = (
    update(_TURNS)
    .where(_TURNS.c.battle_id == bindparam("c_battle"), _TURNS.c.turn_number == bindparam("c_turn"))
    .values(commentary=bindparam("c_text"))
)


def collect_rows(steps: Sequence[StepWrite], now: Any) -> GroupRows:
    rows = GroupRows()
    for step in steps:
        _collect(rows, step, now)
    return rows


async def write_steps(session: AsyncSession, steps: Sequence[StepWrite]) -> None:
    now = utcnow()
    ratings = await _lock_rated_agents(session, steps)
    for step in steps:
        if step.has_result:
            await _rate_results(session, step, ratings)  # completes its result event first
    batch = collect_rows(steps, now)
    # The frequent rows in Core statements on the session's connection (same transaction):
    # the ORM's bulk paths add per-row work these plain rows don't need. On PostgreSQL each
    # kind of row is one statement over arrays (unnest), however big the group: one execution
    # instead of one per row. Elsewhere (SQLite), executemany.
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        for table, rows in ((_EVENTS, batch.events), (_VOTES, batch.votes), (_TURNS, batch.turns)):
            if rows:
                await conn.execute(*_insert_unnest(table, rows))
        for stmt, params in _battle_updates_unnest(batch.battles, now):
            await conn.execute(stmt, params)
    else:
        for table, rows in ((_EVENTS, batch.events), (_VOTES, batch.votes), (_TURNS, batch.turns)):
            if rows:
                await conn.execute(insert(table), rows)
        for stmt, many in _battle_updates(batch.battles, now):
            await conn.execute(stmt, many)
    if batch.commentary:  # every turn gets one: one executemany, not a statement each
        await conn.execute(_SET_COMMENTARY, batch.commentary)
    for step, event in batch.rare:
        await _apply_rare(session, step, event)


def _array_type(column: Any) -> Any:
    """The column's type as a PostgreSQL array (of the plain type: the values are already
    what the driver wants, so no per-element bind processing)."""
    kind = column.type
    return postgresql.ARRAY(kind.impl if isinstance(kind, TypeDecorator) else kind)


@functools.cache
def _insert_unnest_stmt(table: Table, names: tuple[str, ...]) -> Any:
    """``INSERT INTO t (a, b) SELECT * FROM unnest(:u_a, :u_b)``: all rows in one statement.
    Built once per table and column set, so SQLAlchemy's compiled-statement cache is hit
    without recomputing the statement's cache key on every group."""
    source = (
        func.unnest(*(bindparam(f"u_{n}", type_=_array_type(table.c[n])) for n in names))
        .table_valued(*names)
        .render_derived(name="u")
    )
    return insert(table).from_select(list(names), select(*(source.c[n] for n in names)))


def _insert_unnest(table: Table, rows: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    names = tuple(rows[0])
    params = {f"u_{n}": [row[n] for row in rows] for n in names}
    return _insert_unnest_stmt(table, names), params


@functools.cache
def _update_unnest_stmt(columns: tuple[str, ...]) -> Any:
    table = _BATTLES
    source = (
        func.unnest(
            bindparam("u_id", type_=_array_type(table.c.id)),
            *(bindparam(f"u_{c}", type_=_array_type(table.c[c])) for c in columns),
        )
        .table_valued("id", *columns)
        .render_derived(name="u")
    )
    return (
        update(table)
        .where(table.c.id == source.c.id)
        .values(
            {c: source.c[c] for c in columns}
            | {"updated_at": bindparam("u_now", type_=table.c.updated_at.type)}
        )
    )


def _battle_updates_unnest(
    battles: dict[str, dict[str, Any]], now: Any
) -> list[tuple[Any, dict[str, Any]]]:
    """One ``UPDATE battles … FROM unnest(…)`` per set of changed columns (usually one)."""
    by_columns: dict[tuple[str, ...], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for battle_id, values in battles.items():
        if values:
            by_columns[tuple(sorted(values))].append((battle_id, values))
    statements = []
    for columns, changes in by_columns.items():
        params: dict[str, Any] = {"u_id": [battle_id for battle_id, _ in changes], "u_now": now}
        for c in columns:
            params[f"u_{c}"] = [values[c] for _, values in changes]
        statements.append((_update_unnest_stmt(columns), params))
    return statements


def _collect(batch: GroupRows, step: StepWrite, now: Any) -> None:
    battle_id = step.battle_id
    for event, data in zip(step.events, step.encoded, strict=True):
        batch.events.append(
            {
                "battle_id": battle_id,
                "seq": event.seq,
                "type": event_type(event),
                "payload": data.decode(),
                "created_at": now,
            }
        )
        values = batch.battles.setdefault(battle_id, {})
        match event:
            case StateChanged(status=status, reason=reason):
                values["status"] = status.value
                if status is Status.IN_PROGRESS:
                    values["started_at"] = from_ms(event.at)
                elif status in (Status.COMPLETED, Status.CANCELLED):
                    values["completed_at"] = from_ms(event.at)
                    if status is Status.CANCELLED:
                        values["cancel_reason"] = (reason or "")[:200]
            case TurnStarted(turn_number=number):
                values["current_turn"] = number
            case TurnPlayed():
                batch.turns.append(
                    {
                        "id": new_id(),
                        "battle_id": battle_id,
                        "agent_id": event.agent_id,
                        "turn_number": event.turn_number,
                        "content": event.content,
                        "duration_ms": event.duration_ms,
                        "audio_url": event.audio_url,
                        "commentary": None,
                        "created_at": from_ms(event.at),
                    }
                )
            case Commentary(turn_number=number, text=text):
                batch.commentary.append({"c_battle": battle_id, "c_turn": number, "c_text": text})
            case ParticipantJoined() | ParticipantLeft() | Result():
                batch.rare.append((step, event))
            case _:
                pass  # turn_skipped, voting_started, vote_tally, resumed: the log is their record
    batch.votes.extend(
        {
            "id": new_id(),
            "battle_id": battle_id,
            "voter_id": v.voter_id,
            "target_agent_id": v.target_agent_id,
            "idempotency_key": stored_key(battle_id, v.idempotency_key),
            "created_at": now,
        }
        for v in step.votes
    )


def _battle_updates(
    battles: dict[str, dict[str, Any]], now: Any
) -> list[tuple[Any, list[dict[str, Any]]]]:
    """One executemany UPDATE per set of changed columns (usually one: current_turn)."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for battle_id, values in battles.items():
        if values:
            columns = tuple(sorted(values))
            by_columns[columns].append(
                {"b_id": battle_id, "b_updated": now, **{f"v_{c}": values[c] for c in columns}}
            )
    statements = []
    for columns, rows in by_columns.items():
        # On the Table, not the entity: an executemany UPDATE on the entity is the ORM's
        # "bulk update by primary key", which wants the key under its own name.
        table = _BATTLES
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                {c: bindparam(f"v_{c}") for c in columns} | {"updated_at": bindparam("b_updated")}
            )
        )
        statements.append((stmt, rows))
    return statements


async def _apply_rare(session: AsyncSession, step: StepWrite, event: Event) -> None:
    battle_id = step.battle_id
    match event:
        case ParticipantJoined(agent_id=agent_id, position=position, team_id=team_id):
            await _seat(session, battle_id, agent_id, position, team_id)
        case ParticipantLeft(agent_id=agent_id):
            await session.execute(
                update(BattleParticipant)
                .where(
                    BattleParticipant.battle_id == battle_id,
                    BattleParticipant.agent_id == agent_id,
                )
                .values(is_active=False, left_at=from_ms(event.at))
            )
        case Result():
            await session.execute(
                update(Battle)
                .where(Battle.id == battle_id)
                .values(
                    winner_id=event.winner_id,
                    winning_team_id=event.winning_team_id,
                    judge_reasoning=event.reasoning,
                    judge_details=step.judge_details,
                )
            )
            await _record_outcome(session, event, step.seats)
        case _:
            pass


async def _seat(
    session: AsyncSession, battle_id: str, agent_id: str, position: int, team_id: str | None
) -> None:
    """Insert the seat, or reactivate it when the agent left the lobby and came back."""
    existing = await session.scalar(
        select(BattleParticipant).where(
            BattleParticipant.battle_id == battle_id, BattleParticipant.agent_id == agent_id
        )
    )
    if existing is None:
        session.add(
            BattleParticipant(
                battle_id=battle_id, agent_id=agent_id, position=position, team_id=team_id
            )
        )
    else:
        existing.position, existing.team_id = position, team_id
        existing.is_active, existing.left_at = True, None
    await session.flush()


def outcome_of(agent_id: str, team_id: str | None, result: Result) -> str:
    if result.winner_id is None and result.winning_team_id is None:
        return "draw"
    if agent_id == result.winner_id or (
        result.winning_team_id is not None and team_id == result.winning_team_id
    ):
        return "win"
    return "loss"


_RECORD_COLUMNS = {"win": Agent.wins, "loss": Agent.losses, "draw": Agent.draws}


async def _record_outcome(
    session: AsyncSession, result: Result, seats: dict[str, str | None]
) -> None:
    for agent_id, team_id in seats.items():
        column = _RECORD_COLUMNS[outcome_of(agent_id, team_id, result)]
        await session.execute(
            update(Agent).where(Agent.id == agent_id).values({column: column + 1})
        )


async def _lock_rated_agents(session: AsyncSession, steps: Sequence[StepWrite]) -> dict[str, float]:
    """Lock every agent whose rating this group moves, all at once and in id order, before
    any of them is written. Groups run in concurrent transactions (several writers, several
    nodes); locking step by step, two groups sharing agents could each hold one the other
    needs (PostgreSQL aborts one: deadlock detected). ``FOR NO KEY UPDATE`` (what an UPDATE
    of non-key columns takes): the key-share locks of other groups' inserts that reference
    these agents (turns, seats) don't conflict with it. Their current ratings, by agent id."""
    agent_ids = sorted({a for step in steps if step.has_result for a in step.seats})
    if not agent_ids:
        return {}
    rows = await session.execute(
        select(Agent.id, Agent.rating)
        .where(Agent.id.in_(agent_ids))
        .order_by(Agent.id)
        .with_for_update(key_share=True)
    )
    return {agent_id: rating for agent_id, rating in rows}


async def _rate_results(session: AsyncSession, step: StepWrite, ratings: dict[str, float]) -> None:
    """Move the ratings of a finished battle and put before/after into its ``result`` event.
    ``ratings`` (locked, read by _lock_rated_agents) is kept current for the group's next
    result: an agent may finish two battles in one group."""
    for index, event in enumerate(step.events):
        if not isinstance(event, Result) or not step.seats:
            continue
        current = {agent_id: ratings[agent_id] for agent_id in step.seats if agent_id in ratings}
        changes = rate_battle(
            step.mode,
            list(step.seats.items()),
            current,
            event.winner_id,
            event.winning_team_id,
            event.ranking,
        )
        for agent_id, (before, after) in changes.items():
            ratings[agent_id] = after
            await session.execute(update(Agent).where(Agent.id == agent_id).values(rating=after))
            session.add(
                RatingChange(
                    agent_id=agent_id,
                    battle_id=step.battle_id,
                    mode=step.mode.value,
                    before=before,
                    after=after,
                    outcome=outcome_of(agent_id, step.seats.get(agent_id), event),
                )
            )
        rated = msgspec.structs.replace(
            event,
            ratings={a: RatingMove(before=b, after=round(x, 2)) for a, (b, x) in changes.items()},
        )
        step.events[index] = rated
        step.encoded[index] = encode(rated)


class Landed(enum.Enum):
    NO = "no"  # not stored: write it
    YES = "yes"  # stored, by this writer (the same bytes at its seq): done
    TAKEN = "taken"  # its seq holds another writer's event: never ack it


async def landed(session: AsyncSession, steps: Sequence[StepWrite]) -> list[Landed]:
    """Whether each step is already stored: asked before writing again a group whose COMMIT
    may have landed although its connection died, so nothing is written twice. A step is
    known by its first event's (battle, seq) and bytes, or, with no event, by its first vote's
    idempotency key."""
    firsts = [(s.battle_id, s.events[0].seq) for s in steps if s.events]
    stored: dict[tuple[str, int], str] = {}
    if firsts:
        rows = await session.execute(
            select(_EVENTS.c.battle_id, _EVENTS.c.seq, _EVENTS.c.payload).where(
                tuple_(_EVENTS.c.battle_id, _EVENTS.c.seq).in_(firsts)
            )
        )
        stored = {(b, seq): payload for b, seq, payload in rows}
    keys = [stored_key(s.battle_id, s.votes[0].idempotency_key) for s in steps if s.votes]
    voted: set[str] = set()
    if keys:
        voted = set(
            await session.scalars(
                select(_VOTES.c.idempotency_key).where(_VOTES.c.idempotency_key.in_(keys))
            )
        )
    out: list[Landed] = []
    for step in steps:
        if step.events:
            payload = stored.get((step.battle_id, step.events[0].seq))
            if payload is None:
                out.append(Landed.NO)
            else:
                out.append(Landed.YES if payload == step.encoded[0].decode() else Landed.TAKEN)
        elif step.votes:
            key = stored_key(step.battle_id, step.votes[0].idempotency_key)
            out.append(Landed.YES if key in voted else Landed.NO)
        else:
            out.append(Landed.YES)  # nothing to write
    return out
