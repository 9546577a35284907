"""What a battle step writes: its events into the log and their effect on the battle's rows.

Called inside one transaction per step (or per group of steps, see ``battle.committer``), so the
log and the Battle / BattleParticipant / BattleTurn / Vote rows never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from arena_rt.battle.domain import VoteRecord
from arena_rt.protocol import (
    Commentary,
    Event,
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
from arena_rt.store.events import append_events
from arena_rt.store.models import Agent, Battle, BattleParticipant, BattleTurn, Vote
from arena_rt.store.timeconv import from_ms


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One step of one battle: its events (encoded once, here) and vote rows."""

    battle_id: str
    events: Sequence[Event]
    encoded: Sequence[bytes]
    votes: Sequence[VoteRecord]
    seats: dict[str, str | None]  # agent id -> team id, for deciding wins and losses

    @classmethod
    def of(
        cls,
        battle_id: str,
        events: Sequence[Event],
        votes: Sequence[VoteRecord],
        seats: dict[str, str | None],
    ) -> StepWrite:
        return cls(battle_id, events, [encode(e) for e in events], votes, seats)


async def write_step(session: AsyncSession, step: StepWrite) -> None:
    battle_id = step.battle_id
    await append_events(
        session,
        battle_id,
        [(e.seq, event_type(e), data) for e, data in zip(step.events, step.encoded, strict=True)],
    )
    if step.votes:
        await session.execute(
            insert(Vote),
            [
                {
                    "battle_id": battle_id,
                    "voter_id": v.voter_id,
                    "target_agent_id": v.target_agent_id,
                    "idempotency_key": v.idempotency_key,
                }
                for v in step.votes
            ],
        )
    for event in step.events:
        await _apply(session, step, event)


async def _apply(session: AsyncSession, step: StepWrite, event: Event) -> None:
    battle_id = step.battle_id
    match event:
        case StateChanged(status=status, reason=reason):
            values: dict[str, object] = {"status": status.value}
            if status is Status.IN_PROGRESS:
                values["started_at"] = from_ms(event.at)
            elif status in (Status.COMPLETED, Status.CANCELLED):
                values["completed_at"] = from_ms(event.at)
                if status is Status.CANCELLED:
                    values["cancel_reason"] = (reason or "")[:200]
            await _update_battle(session, battle_id, values)
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
        case TurnStarted(turn_number=number):
            await _update_battle(session, battle_id, {"current_turn": number})
        case TurnPlayed():
            session.add(
                BattleTurn(
                    battle_id=battle_id,
                    agent_id=event.agent_id,
                    turn_number=event.turn_number,
                    content=event.content,
                    duration_ms=event.duration_ms,
                    audio_url=event.audio_url,
                    created_at=from_ms(event.at),
                )
            )
            await session.flush()
        case Commentary(turn_number=number, text=text):
            await session.execute(
                update(BattleTurn)
                .where(BattleTurn.battle_id == battle_id, BattleTurn.turn_number == number)
                .values(commentary=text)
            )
        case Result():
            await _update_battle(
                session,
                battle_id,
                {
                    "winner_id": event.winner_id,
                    "winning_team_id": event.winning_team_id,
                    "judge_reasoning": event.reasoning,
                },
            )
            await _record_outcome(session, event, step.seats)
        case _:
            pass  # turn_skipped, voting_started, vote_tally: the log is their record


async def _update_battle(session: AsyncSession, battle_id: str, values: dict[str, object]) -> None:
    await session.execute(update(Battle).where(Battle.id == battle_id).values(**values))


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


async def _record_outcome(
    session: AsyncSession, result: Result, seats: dict[str, str | None]
) -> None:
    draw = result.winner_id is None and result.winning_team_id is None
    for agent_id, team_id in seats.items():
        if draw:
            column = Agent.draws
        elif agent_id == result.winner_id or (
            result.winning_team_id is not None and team_id == result.winning_team_id
        ):
            column = Agent.wins
        else:
            column = Agent.losses
        await session.execute(
            update(Agent).where(Agent.id == agent_id).values({column: column + 1})
        )
