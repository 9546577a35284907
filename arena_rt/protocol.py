"""The wire contract (PROTOCOL.md): every socket frame and battle event as a msgspec struct.

Python names are snake_case; on the wire they are camelCase (``rename="camel"``). Never rename
or reorder a wire field; new fields get defaults. Encoders and decoders are built once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class Status(StrEnum):
    LOBBY = "LOBBY"
    STARTING = "STARTING"
    IN_PROGRESS = "IN_PROGRESS"
    VOTING = "VOTING"
    JUDGING = "JUDGING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.CANCELLED})


class Mode(StrEnum):
    HEAD_TO_HEAD = "HEAD_TO_HEAD"
    TEAM = "TEAM"
    FREE_FOR_ALL = "FREE_FOR_ALL"


class ErrorCode(StrEnum):
    BAD_MESSAGE = "bad_message"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NOT_YOUR_TURN = "not_your_turn"
    WRONG_TURN = "wrong_turn"
    INVALID_STATE = "invalid_state"
    BATTLE_FULL = "battle_full"
    DUPLICATE = "duplicate"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    # Extension (PROTOCOL section 4 allows additions): the battle is run by another process.
    NOT_OWNER = "not_owner"
    UNAVAILABLE = "unavailable"


# Idempotency keys are scoped to their battle: stored as "<battleId>:<key>" in a 200-char column.
MAX_IDEMPOTENCY_KEY = 160


# The close reason of every socket when its server drains (SIGTERM, a deploy): connect again,
# to any node (behind a load balancer, the same address), with `since` to miss nothing.
DRAIN_REASON = "server restarting; reconnect"


class CloseCode:
    REPLACED = 4000
    UNAUTHORIZED = 4001
    NOT_FOUND = 4004
    SLOW_CONSUMER = 4008
    BATTLE_FULL = 4009
    NOT_OWNER = 4010
    GOING_AWAY = 1001
    TRY_AGAIN_LATER = 1013  # RFC 6455 registry: a dependency is down (unavailable)
    POLICY = 1008
    TOO_BIG = 1009


# --------------------------------------------------------------------------- battle events


class Event(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    """Base of every battle event: ``seq`` per battle from 1 with no gaps, ``at`` in ms."""

    seq: int
    at: int


class StateChanged(Event, tag="state"):
    status: Status
    previous: Status | None
    reason: str | None = None


class ParticipantJoined(Event, tag="participant_joined"):
    agent_id: str
    position: int
    team_id: str | None = None


class ParticipantLeft(Event, tag="participant_left"):
    agent_id: str
    position: int
    team_id: str | None = None


class TurnStarted(Event, tag="turn_started"):
    turn_number: int
    agent_id: str
    deadline_at: int


class TurnPlayed(Event, tag="turn"):
    turn_number: int
    agent_id: str
    content: str
    duration_ms: int
    audio_url: str | None = None


class TurnSkipped(Event, tag="turn_skipped"):
    turn_number: int
    agent_id: str
    reason: str  # timeout | disconnected | forfeit


class Commentary(Event, tag="commentary"):
    turn_number: int
    text: str


class VotingStarted(Event, tag="voting_started"):
    deadline_at: int


class VoteTally(Event, tag="vote_tally"):
    counts: dict[str, int]
    # Extension: the same counts split by who voted (agents vs audience).
    agent_counts: dict[str, int] = msgspec.field(default_factory=dict)
    audience_counts: dict[str, int] = msgspec.field(default_factory=dict)


class RatingChange(msgspec.Struct, rename="camel"):
    before: float
    after: float


class Result(Event, tag="result"):
    winner_id: str | None
    reasoning: str
    tally: dict[str, int]
    winning_team_id: str | None = None
    ratings: dict[str, RatingChange] | None = None
    # Extensions: who decided (the judge's name, "tally" or "forfeit"); an AI judge's
    # per-criterion scores (participant -> criterion -> 0..10, plus "weighted"), its ranking
    # (FREE_FOR_ALL, best first) and confidence (0..1).
    decided_by: str = "tally"
    scores: dict[str, dict[str, float]] | None = None
    ranking: list[str] | None = None
    confidence: float | None = None


class Resumed(Event, tag="resumed"):
    """Extension: the runner took charge again after an outage of ``outage_ms``; the deadline
    running in the current status moved back by it (``deadline_at``, None if none runs)."""

    outage_ms: int
    deadline_at: int | None


BattleEvent = (
    StateChanged
    | ParticipantJoined
    | ParticipantLeft
    | TurnStarted
    | TurnPlayed
    | TurnSkipped
    | Commentary
    | VotingStarted
    | VoteTally
    | Result
    | Resumed
)

# --------------------------------------------------------------------------- client frames


class ClientFrame(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class AuthFrame(ClientFrame, tag="auth"):
    token: str


class TurnFrame(ClientFrame, tag="turn"):
    turn_number: int
    content: str
    ref: str | None = None


class VoteFrame(ClientFrame, tag="vote"):
    target_agent_id: str
    idempotency_key: str
    ref: str | None = None


class LeaveFrame(ClientFrame, tag="leave"):
    ref: str | None = None


class PingFrame(ClientFrame, tag="ping"):
    t: int | float | str | None = None


AgentFrame = AuthFrame | TurnFrame | VoteFrame | LeaveFrame | PingFrame
SpectatorFrame = VoteFrame | PingFrame

# --------------------------------------------------------------------------- server frames


class ServerFrame(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class AgentIdentity(msgspec.Struct, rename="camel"):
    agent_id: str
    position: int
    team_id: str | None


class Welcome(ServerFrame, tag="welcome"):
    battle: dict[str, Any]
    you: AgentIdentity
    session_token: str
    session_expires_at: int
    last_seq: int


class Snapshot(ServerFrame, tag="snapshot"):
    battle: dict[str, Any]
    turns: list[dict[str, Any]]
    last_seq: int


class Ack(ServerFrame, tag="ack"):
    ref: str | None
    seq: int | None = None


class ErrorFrame(ServerFrame, tag="error"):
    code: ErrorCode
    message: str
    ref: str | None = None


class Pong(ServerFrame, tag="pong"):
    t: int | float | str | None = None


# Built once, reused everywhere (msgspec perf tips).
encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(BattleEvent)
agent_frame_decoder = msgspec.json.Decoder(AgentFrame)
spectator_frame_decoder = msgspec.json.Decoder(SpectatorFrame)


def encode(obj: Any) -> bytes:
    return encoder.encode(obj)


def event_to_builtins(event: Event) -> dict[str, Any]:
    """The event as plain JSON-ready data (camelCase keys, with ``type``)."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data


def event_type(event: Event) -> str:
    """The wire ``type`` tag of an event (e.g. ``"turn"``)."""
    tag: str = type(event).__struct_config__.tag  # type: ignore[assignment]
    return tag
