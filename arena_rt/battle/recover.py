"""Rebuild a battle's machine state from its persisted event log (first load or a restart).

The log is the source of truth: folding its events gives back the state that produced them.
Nothing is connected after a load; agents re-attach by connecting again. Pure, like the machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from arena_rt.battle.domain import BattleConfig, BattleState, Seat, TurnRecord, VoteRecord
from arena_rt.battle.machine import STATUS_TIMERS, new_battle
from arena_rt.protocol import (
    Commentary,
    Event,
    ParticipantJoined,
    ParticipantLeft,
    Result,
    StateChanged,
    Status,
    TurnPlayed,
    TurnSkipped,
    TurnStarted,
    VotingStarted,
)


def fold(config: BattleConfig, events: Iterable[Event], votes: Sequence[VoteRecord]) -> BattleState:
    state = new_battle(config)
    deadline: int | None = None  # of the current status, as the log recorded it
    for event in events:
        state, deadline = _apply(state, event, deadline)
        state = replace(state, last_seq=event.seq)
    timers: tuple[tuple[str, int], ...] = ()
    if deadline is not None and state.status in STATUS_TIMERS:
        timers = ((STATUS_TIMERS[state.status], deadline),)
    seats = tuple(replace(seat, connected=False) for seat in state.seats)
    return replace(state, seats=seats, votes=tuple(votes), timers=timers)


def _apply(
    state: BattleState, event: Event, deadline: int | None
) -> tuple[BattleState, int | None]:
    config = state.config
    match event:
        case StateChanged(status=status):
            state = replace(state, status=status)
            if status is Status.STARTING:
                deadline = event.at + config.start_delay_ms
            elif status is Status.LOBBY:
                deadline = event.at + config.lobby_timeout_ms
            else:
                deadline = None
        case ParticipantJoined(agent_id=agent_id, position=position, team_id=team_id):
            seat = Seat(agent_id, position, team_id)
            state = replace(state, seats=(*state.seats, seat))
            if state.status is Status.LOBBY:
                deadline = event.at + config.lobby_timeout_ms
        case ParticipantLeft(agent_id=agent_id):
            if state.status in (Status.LOBBY, Status.STARTING):
                seats = tuple(s for s in state.seats if s.agent_id != agent_id)
            else:
                seats = tuple(
                    replace(s, forfeited=True) if s.agent_id == agent_id else s for s in state.seats
                )
            state = replace(state, seats=seats)
        case TurnStarted(turn_number=number, deadline_at=turn_deadline):
            state = replace(
                state, current_turn=number, turn_started_at=event.at, turn_deadline_at=turn_deadline
            )
            deadline = turn_deadline
        case TurnPlayed(turn_number=number, agent_id=agent_id, content=content):
            record = TurnRecord(number, agent_id, event.seq, content)
            state = replace(state, turns=(*state.turns, record))
        case TurnSkipped(turn_number=number, agent_id=agent_id, reason=reason):
            record = TurnRecord(number, agent_id, event.seq, None, reason)
            state = replace(state, turns=(*state.turns, record))
        case Commentary(turn_number=number):
            state = replace(state, commentary_turns=(*state.commentary_turns, number))
        case VotingStarted(deadline_at=vote_deadline):
            deadline = vote_deadline
        case Result():
            state = replace(
                state,
                winner_id=event.winner_id,
                winning_team_id=event.winning_team_id,
                reasoning=event.reasoning,
            )
        case _:
            pass
    return state, deadline
