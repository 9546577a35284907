"""The one interpreter of the battle log: ``apply(state, event)`` and ``fold`` over a log.

A battle's durable state is what its event log and its vote rows say, and this module is the
only place it changes. The machine applies each event it emits through ``apply`` (and each vote
it records through ``apply_vote``); recovery folds the stored log with the same two functions,
so the live state and the recovered state cannot drift apart. Pure, like the machine.

The runtime fields (``timers``, ``away``) are never touched here: no log can know them.
"""

from __future__ import annotations

from collections.abc import Iterable

from arena_rt.battle.domain import (
    RUNTIME_FIELDS,
    BattleConfig,
    BattleState,
    MachineError,
    Seat,
    TurnRecord,
    VoteRecord,
    replace,
)
from arena_rt.protocol import (
    Commentary,
    Event,
    ParticipantJoined,
    ParticipantLeft,
    Result,
    Resumed,
    StateChanged,
    Status,
    TurnPlayed,
    TurnSkipped,
    TurnStarted,
    VoteTally,
    VotingStarted,
)

_BLANK_RUNTIME = dict.fromkeys(RUNTIME_FIELDS, ())


def apply(state: BattleState, event: Event) -> BattleState:
    """The state after ``event``, the next one of the battle's log."""
    if event.seq != state.last_seq + 1:
        raise MachineError(f"event seq {event.seq} does not follow {state.last_seq}")
    config = state.config
    changes: dict[str, object] = {"last_seq": event.seq}
    match event:
        case StateChanged(status=status):
            changes["status"] = status
            # Only the deadlines that start with the status; a turn or a vote window brings
            # its own in the event right after (turn_started, voting_started).
            if status is Status.LOBBY:
                changes["deadline_at"] = event.at + config.lobby_timeout_ms
            elif status is Status.STARTING:
                changes["deadline_at"] = event.at + config.start_delay_ms
            else:
                changes["deadline_at"] = None
        case ParticipantJoined(agent_id=agent_id, position=position, team_id=team_id):
            changes["seats"] = (*state.seats, Seat(agent_id, position, team_id))
            if state.status is Status.LOBBY:  # activity restarts the idle clock
                changes["deadline_at"] = event.at + config.lobby_timeout_ms
        case ParticipantLeft(agent_id=agent_id):
            changes["seats"] = _without(state, agent_id)
            if state.status is Status.LOBBY:
                changes["deadline_at"] = event.at + config.lobby_timeout_ms
        case TurnStarted(turn_number=number, deadline_at=deadline):
            changes |= {
                "current_turn": number,
                "turn_started_at": event.at,
                "turn_deadline_at": deadline,
                "deadline_at": deadline,
            }
        case TurnPlayed(turn_number=number, agent_id=agent_id, content=content):
            record = TurnRecord(number, agent_id, event.seq, content)
            changes |= {"turns": (*state.turns, record), "current_turn": number}
        case TurnSkipped(turn_number=number, agent_id=agent_id, reason=reason):
            # Forfeited seats' turns are skipped without a turn_started: the skip moves the turn.
            record = TurnRecord(number, agent_id, event.seq, None, reason)
            changes |= {"turns": (*state.turns, record), "current_turn": number}
        case Commentary(turn_number=number):
            changes["commentary_turns"] = (*state.commentary_turns, number)
        case VotingStarted(deadline_at=deadline):
            changes |= {"turn_started_at": None, "turn_deadline_at": None, "deadline_at": deadline}
        case VoteTally(counts=counts):
            changes["tallied"] = sum(counts.values())
        case Result():
            changes |= {
                "winner_id": event.winner_id,
                "winning_team_id": event.winning_team_id,
                "reasoning": event.reasoning,
            }
        case Resumed(deadline_at=deadline):
            changes["deadline_at"] = deadline
            if state.status is Status.IN_PROGRESS:
                changes["turn_deadline_at"] = deadline
        case _:
            pass  # a type this version doesn't know changes nothing but the seq
    new: BattleState = replace(state, **changes)
    return new


def apply_vote(state: BattleState, vote: VoteRecord) -> BattleState:
    """The state after ``vote`` was recorded (votes are rows, not events, but durable too)."""
    new: BattleState = replace(state, votes=(*state.votes, vote))
    return new


def fold(config: BattleConfig, events: Iterable[Event], votes: Iterable[VoteRecord]) -> BattleState:
    """The durable state a log gives: its events in seq order, then its votes in cast order.

    Runtime fields come back empty: nothing is armed and no socket is known to be gone; the
    runner's ``Opened`` arms the timers, and its reports of who is attached fill ``away``.
    """
    state = BattleState(config=config)
    for event in events:
        state = apply(state, event)
    for vote in votes:
        state = apply_vote(state, vote)
    return state


def durable(state: BattleState) -> BattleState:
    """``state`` with its runtime fields blanked: what a fold of its log must equal."""
    blank: BattleState = replace(state, **_BLANK_RUNTIME)
    return blank


def _without(state: BattleState, agent_id: str) -> tuple[Seat, ...]:
    """The seats after ``agent_id`` left: freed before the start, forfeited after it."""
    if state.status in (Status.LOBBY, Status.STARTING):
        return tuple(s for s in state.seats if s.agent_id != agent_id)
    return tuple(replace(s, forfeited=True) if s.agent_id == agent_id else s for s in state.seats)
