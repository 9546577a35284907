"""The battle machine's vocabulary: its configuration, state, inputs and effects.

Everything here is plain data. ``machine.step(state, input)`` turns a state and an input into a
new state and a list of effects; the runner performs the effects (persist, publish, reply, arm
timers, ask the judge). Time only enters through the ``now`` (ms since the epoch) of each input.
``BattleState`` says which of its fields are durable (the log's) and which are runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from dataclasses import replace as _dataclass_replace
from typing import Any

from arena_rt.protocol import ErrorCode, Event, Mode, Status

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class BattleConfig:
    battle_id: str
    room_code: str
    topic: str
    mode: Mode = Mode.HEAD_TO_HEAD
    max_participants: int = 2
    turn_duration_ms: int = 30_000
    max_turns: int = 10
    start_delay_ms: int = 10_000
    vote_duration_ms: int = 30_000
    enable_judge: bool = True
    enable_commentator: bool = True
    lobby_timeout_ms: int = 600_000
    reconnect_grace_ms: int = 30_000
    judge_timeout_ms: int = 30_000
    tally_interval_ms: int = 1_000


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Seat:
    """A taken seat: wholly durable (whether its socket is attached is ``BattleState.away``)."""

    agent_id: str
    position: int
    team_id: str | None = None
    forfeited: bool = False


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """A turn number that has been decided: played (with content) or skipped."""

    turn_number: int
    agent_id: str
    seq: int
    content: str | None  # None when skipped
    skip_reason: str | None = None


@dataclass(frozen=True, slots=True)
class VoteRecord:
    idempotency_key: str
    voter_id: str | None  # agent id, None for the audience
    connection_id: str | None
    target_agent_id: str


@dataclass(frozen=True, slots=True)
class BattleState:
    """A battle as the machine sees it.

    Every field but the last two is *durable*: it is what the event log and the vote rows
    determine, changed only by ``log.apply`` / ``log.apply_vote``, so a fold of the log gives it
    back after a crash. The last two are *runtime*, what no log can know: the timers the runner
    has armed and which agents' sockets are gone. A fold leaves them empty (``log.durable``).
    """

    config: BattleConfig
    status: Status = Status.LOBBY
    last_seq: int = 0
    seats: tuple[Seat, ...] = ()
    current_turn: int = 0  # the turn number in play (or last decided); 0 before the first
    turn_started_at: int | None = None
    turn_deadline_at: int | None = None
    # When the current status runs out (lobby idle, start delay, turn, vote window); None when
    # no logged deadline runs (JUDGING asks its judge afresh, final states, a lobby never joined).
    deadline_at: int | None = None
    turns: tuple[TurnRecord, ...] = ()
    votes: tuple[VoteRecord, ...] = ()
    tallied: int = 0  # votes covered by the last vote_tally event (the sum of its counts)
    winner_id: str | None = None
    winning_team_id: str | None = None
    reasoning: str | None = None
    # Turn numbers that already got a Commentary event (at most one per played turn).
    commentary_turns: tuple[int, ...] = ()
    # ---- runtime
    # Armed timers: name -> fire-at (ms). A TimerFired for a name not here, or early, is stale.
    timers: tuple[tuple[str, int], ...] = ()
    away: tuple[str, ...] = ()  # seated agents whose socket is gone

    @property
    def tally_dirty(self) -> bool:
        """Votes were cast since the last vote_tally event: one is owed to the watchers."""
        return len(self.votes) > self.tallied


RUNTIME_FIELDS = ("timers", "away")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Opened:
    """The runner took charge of the battle (first load, a restart, or another node took over):
    arm timers. ``outage_ms`` > 0 says the battle went unattended that long; the running
    deadline is pushed back by it (a ``resumed`` event), so nobody loses a turn to our outage."""

    now: int
    outage_ms: int = 0  # how long the battle had no live owner: its running timers are extended


@dataclass(frozen=True, slots=True)
class Join:
    agent_id: str
    now: int
    team_id: str | None = None
    origin: str | None = None  # connection id, for the reply


@dataclass(frozen=True, slots=True)
class Leave:
    agent_id: str
    now: int
    origin: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Disconnect:
    agent_id: str
    now: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    agent_id: str
    now: int


@dataclass(frozen=True, slots=True)
class SubmitTurn:
    agent_id: str
    turn_number: int
    content: str  # already sanitized and capped by the socket layer
    now: int
    origin: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class CastVote:
    target_agent_id: str
    idempotency_key: str
    now: int
    voter_id: str | None = None  # agent id; None for the audience
    connection_id: str | None = None  # the audience socket, for per-connection dedupe
    origin: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str
    now: int


@dataclass(frozen=True, slots=True)
class CommentaryReady:
    turn_number: int
    text: str
    now: int


@dataclass(frozen=True, slots=True)
class JudgeAnswered:
    winner_id: str | None
    reasoning: str
    now: int
    winning_team_id: str | None = None
    decided_by: str = "judge"
    scores: dict[str, dict[str, float]] | None = None
    ranking: tuple[str, ...] = ()
    confidence: float | None = None
    details: str | None = None  # the judge's raw judgments and usage (JSON), stored, not sent


@dataclass(frozen=True, slots=True)
class JudgeFailed:
    reason: str
    now: int


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str
    now: int


Input = (
    Opened
    | Join
    | Leave
    | Disconnect
    | Reconnect
    | SubmitTurn
    | CastVote
    | TimerFired
    | CommentaryReady
    | JudgeAnswered
    | JudgeFailed
    | Cancel
)

# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Emit:
    """Append this event to the log (seq already assigned), then publish it."""

    event: Event


@dataclass(frozen=True, slots=True)
class RecordVote:
    """Insert a Vote row in the same transaction as the step's events."""

    vote: VoteRecord


@dataclass(frozen=True, slots=True)
class ArmTimer:
    name: str
    fire_at: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    turn_number: int
    agent_id: str
    content: str | None
    skip_reason: str | None


@dataclass(frozen=True, slots=True)
class RequestCommentary:
    turn_number: int
    agent_id: str
    content: str
    previous: tuple[TranscriptTurn, ...]


@dataclass(frozen=True, slots=True)
class RequestJudge:
    topic: str
    mode: Mode
    seats: tuple[Seat, ...]
    turns: tuple[TranscriptTurn, ...]
    agent_tally: dict[str, int] = field(default_factory=dict)
    audience_tally: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplyAck:
    """Answer the frame from ``origin``: sent only after the step's events are committed."""

    origin: str | None
    ref: str | None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ReplyError:
    origin: str | None
    ref: str | None
    code: ErrorCode
    message: str


Effect = (
    Emit
    | RecordVote
    | ArmTimer
    | CancelTimer
    | RequestCommentary
    | RequestJudge
    | ReplyAck
    | ReplyError
)


class MachineError(Exception):
    """A programming error: an input the machine can never accept (not a client mistake)."""


# --------------------------------------------------------------------------- fast copies


def replace(obj: Any, /, **changes: Any) -> Any:
    """``dataclasses.replace``, with a fast path for the state: a step replaces it several
    times and the generic version (field introspection, then the frozen ``__init__``) was
    most of a step's cost. Same result: a new frozen instance with the given fields changed."""
    if type(obj) is BattleState:
        return _replace_state(obj, changes)
    return _dataclass_replace(obj, **changes)


_STATE_FIELDS = tuple(f.name for f in fields(BattleState))
assert all(f.init for f in fields(BattleState))  # _replace_state builds it field by field


def _state_replacer() -> Any:
    """``(state, changes) -> new state``, generated once: one straight line per field."""
    lines = ["def _replace_state(state, changes):", "    new = _new(_State)"]
    for name in _STATE_FIELDS:  # what the frozen dataclass's own __init__ does, field by field
        lines.append(
            f"    _set(new, {name!r}, changes.pop({name!r}) if {name!r} in changes"
            f" else state.{name})"
        )
    lines += [
        "    if changes:",
        "        raise TypeError(f'BattleState has no field(s) {sorted(changes)}')",
        "    return new",
    ]
    namespace: dict[str, Any] = {"_new": object.__new__, "_State": BattleState}
    namespace["_set"] = object.__setattr__
    exec("\n".join(lines), namespace)  # a fixed source, built from the field names
    return namespace["_replace_state"]


_replace_state = _state_replacer()
