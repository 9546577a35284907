"""Battle rows: creation, lookup by room code, the battle resource and paginated listing."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from arena_rt.errors import BadRequest, NotFound
from arena_rt.ids import new_room_code
from arena_rt.protocol import Mode, Status
from arena_rt.resources import BattlePage, BattleResource, CreateBattle, Participant
from arena_rt.store.models import Agent, Battle, BattleEvent, BattleParticipant
from arena_rt.store.timeconv import maybe_ms, to_ms

ROOM_CODE_ATTEMPTS = 5


def check_mode_shape(body: CreateBattle) -> None:
    """Seat counts each mode can actually play (the machine relies on these)."""
    n = body.max_participants
    if body.mode is Mode.HEAD_TO_HEAD and n != 2:
        raise BadRequest("maxParticipants must be 2 for HEAD_TO_HEAD")
    if body.mode is Mode.TEAM and (n < 4 or n % 2):
        raise BadRequest("maxParticipants must be an even number >= 4 for TEAM (two teams)")


async def create_battle(session: AsyncSession, body: CreateBattle, creator_id: str) -> Battle:
    check_mode_shape(body)
    for _ in range(ROOM_CODE_ATTEMPTS):
        battle = Battle(
            room_code=new_room_code(),
            topic=body.topic,
            mode=body.mode.value,
            max_participants=body.max_participants,
            turn_duration_ms=body.turn_duration_ms,
            max_turns=body.max_turns,
            start_delay_ms=body.start_delay_ms,
            vote_duration_ms=body.vote_duration_ms,
            enable_judge=body.enable_judge,
            enable_commentator=body.enable_commentator,
            enable_tts=body.enable_tts,
            created_by_id=creator_id,
        )
        session.add(battle)
        try:
            await session.commit()
            return battle
        except IntegrityError:  # a room code collision: draw another
            await session.rollback()
    raise RuntimeError("could not allocate a unique room code")


async def delete_unstarted(session: AsyncSession, battle_id: str) -> None:
    """Remove a battle that never ran (no event in its log): its creation is undone."""
    logged = await session.scalar(
        select(func.count()).select_from(BattleEvent).where(BattleEvent.battle_id == battle_id)
    )
    if not logged:
        await session.execute(delete(Battle).where(Battle.id == battle_id))


async def battle_by_room(session: AsyncSession, room_code: str) -> Battle:
    battle = await session.scalar(select(Battle).where(Battle.room_code == room_code.upper()))
    if battle is None:
        raise NotFound(f"battle {room_code!r} not found")
    return battle


async def last_seq(session: AsyncSession, battle_id: str) -> int:
    value = await session.scalar(
        select(func.max(BattleEvent.seq)).where(BattleEvent.battle_id == battle_id)
    )
    return value or 0


async def participants(
    session: AsyncSession, battle_ids: Sequence[str]
) -> dict[str, list[Participant]]:
    rows = await session.execute(
        select(BattleParticipant, Agent)
        .join(Agent, Agent.id == BattleParticipant.agent_id)
        .where(BattleParticipant.battle_id.in_(battle_ids))
        .order_by(BattleParticipant.battle_id, BattleParticipant.position)
    )
    found: dict[str, list[Participant]] = {battle_id: [] for battle_id in battle_ids}
    for seat, agent in rows:
        found[seat.battle_id].append(
            Participant(
                agent_id=agent.id,
                name=agent.name,
                display_name=agent.display_name,
                rating=agent.rating,
                position=seat.position,
                team_id=seat.team_id,
                is_active=seat.is_active,
            )
        )
    return found


def to_resource(battle: Battle, seats: list[Participant], seq: int) -> BattleResource:
    return BattleResource(
        id=battle.id,
        room_code=battle.room_code,
        topic=battle.topic,
        status=Status(battle.status),
        mode=Mode(battle.mode),
        max_participants=battle.max_participants,
        turn_duration_ms=battle.turn_duration_ms,
        max_turns=battle.max_turns,
        start_delay_ms=battle.start_delay_ms,
        vote_duration_ms=battle.vote_duration_ms,
        enable_judge=battle.enable_judge,
        enable_commentator=battle.enable_commentator,
        enable_tts=battle.enable_tts,
        current_turn=battle.current_turn,
        participants=seats,
        winner_id=battle.winner_id,
        winning_team_id=battle.winning_team_id,
        judge_reasoning=battle.judge_reasoning,
        cancel_reason=battle.cancel_reason,
        created_by_id=battle.created_by_id,
        created_at=to_ms(battle.created_at),
        started_at=maybe_ms(battle.started_at),
        completed_at=maybe_ms(battle.completed_at),
        last_seq=seq,
    )


async def battle_resource(session: AsyncSession, battle: Battle) -> BattleResource:
    seats = await participants(session, [battle.id])
    return to_resource(battle, seats[battle.id], await last_seq(session, battle.id))


def encode_cursor(battle: Battle) -> str:
    instant = battle.created_at
    raw = f"{int(instant.timestamp()) * 1_000_000 + instant.microsecond}:{battle.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros_text, battle_id = raw.split(":", 1)
        micros = int(micros_text)
        instant = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
            microsecond=micros % 1_000_000
        )
    except ValueError as exc:
        raise BadRequest("cursor is not valid; pass back nextCursor unchanged") from exc
    return instant, battle_id


def parse_statuses(raw: str | None) -> list[str]:
    if not raw:
        return []
    statuses = [part.strip().upper() for part in raw.split(",") if part.strip()]
    unknown = sorted(set(statuses) - {s.value for s in Status})
    if unknown:
        raise BadRequest(f"status: unknown value(s) {', '.join(unknown)}")
    return statuses


async def list_battles(
    session: AsyncSession, statuses: list[str], limit: int, cursor: str | None
) -> BattlePage:
    # Newest first; (created_at, id) is a total order so pages never skip or repeat a row.
    query = select(Battle).order_by(Battle.created_at.desc(), Battle.id.desc()).limit(limit + 1)
    if statuses:
        query = query.where(Battle.status.in_(statuses))
    if cursor:
        query = query.where(tuple_(Battle.created_at, Battle.id) < decode_cursor(cursor))
    battles = list((await session.scalars(query)).all())
    more = len(battles) > limit
    battles = battles[:limit]
    ids = [b.id for b in battles]
    seats = await participants(session, ids) if ids else {}
    seqs: dict[str, int] = {}
    if ids:
        rows = await session.execute(
            select(BattleEvent.battle_id, func.max(BattleEvent.seq))
            .where(BattleEvent.battle_id.in_(ids))
            .group_by(BattleEvent.battle_id)
        )
        seqs = {battle_id: seq for battle_id, seq in rows}
    return BattlePage(
        battles=[to_resource(b, seats[b.id], seqs.get(b.id, 0)) for b in battles],
        next_cursor=encode_cursor(battles[-1]) if more else None,
    )
