"""The pure battle state machine: ``step(state, input) -> (new state, effects)``.

No I/O, no clock, no randomness: the only time is ``input.now``. Client mistakes never raise;
they become a ``ReplyError`` and leave the state untouched. ``MachineError`` means a bug.

The machine decides; ``log.apply`` evolves. Every durable field of the state changes only by
applying an event the step emits (or a vote it records, ``log.apply_vote``), so the live state
always equals ``log.fold`` of what was emitted: recovery is that fold. The step itself only
changes the runtime fields, ``timers`` and ``away``.

Effects come out in this order (stable within each group): ``Emit``/``RecordVote`` (persisted in
one transaction), then ``ReplyAck``/``ReplyError``, then ``CancelTimer``/``ArmTimer``, then
``RequestCommentary``/``RequestJudge``.

Timers: ``state.timers`` is exactly what the ``ArmTimer``/``CancelTimer`` effects say, except that
a ``TimerFired`` that is not stale consumes its timer (the runner's timer has gone off), which the
machine drops from ``state.timers`` without emitting ``CancelTimer``. The status timer always
fires at the durable ``state.deadline_at`` when there is one.

Choices where the rules leave room (the protocol document should repeat them):
- Join by an unseated agent: ``battle_full`` in STARTING, ``invalid_state`` from IN_PROGRESS on.
  Join by a seated agent is a reconnect in every state (acked, no event; no change once final).
- A turn from a non-participant is ``forbidden``; a leave from one is ``not_found``.
- Leave in VOTING/JUDGING emits ``participant_left`` and marks the seat forfeited; voting and
  judging go on unchanged and votes for that agent still count. Leave once final: a bare ack.
- Disconnect arms a grace timer only while the seat can still be lost (LOBBY to IN_PROGRESS);
  a second Disconnect keeps the first deadline.
- Opened re-arms every timer the state holds and arms the status timer at the logged deadline
  (only a lobby nobody joined has none: the held or a fresh one); a pending tally gets its
  timer; in JUDGING it asks the judge again with a fresh timeout. With ``outage_ms`` > 0 in a
  live battle it first emits ``resumed``, moving the logged deadline back by the outage.
  Tallies list every seated agent, zeros included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import zip_longest
from typing import assert_never

from arena_rt.battle.domain import (
    ArmTimer,
    BattleConfig,
    BattleState,
    Cancel,
    CancelTimer,
    CastVote,
    CommentaryReady,
    Disconnect,
    Effect,
    Emit,
    Input,
    Join,
    JudgeAnswered,
    JudgeFailed,
    Leave,
    MachineError,
    Opened,
    Reconnect,
    RecordVote,
    ReplyAck,
    ReplyError,
    RequestCommentary,
    RequestJudge,
    Seat,
    SubmitTurn,
    TimerFired,
    TranscriptTurn,
    TurnRecord,
    VoteRecord,
    replace,
)
from arena_rt.battle.log import apply, apply_vote
from arena_rt.protocol import (
    FINAL_STATUSES,
    Commentary,
    ErrorCode,
    Event,
    Mode,
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

TIMER_LOBBY = "lobby"
TIMER_START = "start"
TIMER_TURN = "turn"
TIMER_VOTE = "vote"
TIMER_JUDGE = "judge"
TIMER_TALLY = "tally"
GRACE_PREFIX = "grace:"

# The timer that must be armed while a battle sits in each non-final status (after Opened).
STATUS_TIMERS: dict[Status, str] = {
    Status.LOBBY: TIMER_LOBBY,
    Status.STARTING: TIMER_START,
    Status.IN_PROGRESS: TIMER_TURN,
    Status.VOTING: TIMER_VOTE,
    Status.JUDGING: TIMER_JUDGE,
}

DEFAULT_TEAM_IDS = ("A", "B")
MIN_PARTICIPANTS = 2
MAX_PARTICIPANTS = 10

SKIP_TIMEOUT = "timeout"
SKIP_DISCONNECTED = "disconnected"
SKIP_FORFEIT = "forfeit"

# --------------------------------------------------------------------------- public helpers


def grace_timer(agent_id: str) -> str:
    return GRACE_PREFIX + agent_id


def check_config(config: BattleConfig) -> str | None:
    """Why this configuration can't run (for a 400 at creation), or None when it can."""
    n = config.max_participants
    if config.mode == Mode.HEAD_TO_HEAD and n != 2:
        return "HEAD_TO_HEAD battles have exactly 2 participants"
    if not MIN_PARTICIPANTS <= n <= MAX_PARTICIPANTS:
        return f"maxParticipants must be between {MIN_PARTICIPANTS} and {MAX_PARTICIPANTS}"
    if config.mode == Mode.TEAM and n % 2:
        return "TEAM battles need an even number of participants (two equal teams)"
    if config.max_turns < 1:
        return "maxTurns must be at least 1"
    if config.turn_duration_ms < 1:
        return "turnDurationMs must be positive"
    durations = (
        config.start_delay_ms,
        config.vote_duration_ms,
        config.lobby_timeout_ms,
        config.reconnect_grace_ms,
        config.judge_timeout_ms,
        config.tally_interval_ms,
    )
    if any(d < 0 for d in durations):
        return "durations must not be negative"
    return None


def new_battle(config: BattleConfig) -> BattleState:
    """A fresh battle in LOBBY. Feed it ``Opened`` before anything else to arm its timer."""
    problem = check_config(config)
    if problem is not None:
        raise MachineError(problem)
    return BattleState(config=config)


def is_final(state: BattleState) -> bool:
    return state.status in FINAL_STATUSES


def find_seat(state: BattleState, agent_id: str) -> Seat | None:
    return next((s for s in state.seats if s.agent_id == agent_id), None)


def team_ids(state: BattleState) -> tuple[str, str]:
    """The battle's two team ids: those claimed by seated agents (by position), then defaults."""
    claimed = _claimed_team_ids(state)
    defaults = [t for t in DEFAULT_TEAM_IDS if t not in claimed]
    first, second = [*claimed, *defaults][:2]
    return first, second


def play_order(state: BattleState) -> tuple[Seat, ...]:
    """Seats in the order they speak. TEAM alternates teams: A1, B1, A2, B2, ..."""
    by_position = tuple(sorted(state.seats, key=lambda s: s.position))
    if state.config.mode != Mode.TEAM:
        return by_position
    first, second = (tuple(s for s in by_position if s.team_id == t) for t in team_ids(state))
    pairs = zip_longest(first, second)
    return tuple(seat for pair in pairs for seat in pair if seat is not None)


def turn_agent(state: BattleState, turn_number: int) -> Seat:
    """The seat that speaks on ``turn_number`` (1-based, cycling through the play order)."""
    order = play_order(state)
    if turn_number < 1 or not order:
        raise MachineError(f"no agent for turn {turn_number} with {len(order)} seats")
    return order[(turn_number - 1) % len(order)]


def transcript(state: BattleState, before: int | None = None) -> tuple[TranscriptTurn, ...]:
    """Decided turns in order (optionally only those before turn ``before``)."""
    records = sorted(state.turns, key=lambda t: t.turn_number)
    return tuple(
        TranscriptTurn(t.turn_number, t.agent_id, t.content, t.skip_reason)
        for t in records
        if before is None or t.turn_number < before
    )


def agent_tally(state: BattleState) -> dict[str, int]:
    """Votes cast by agents, per seated target (zeros included)."""
    return _count(state, [v for v in state.votes if v.voter_id is not None])


def audience_tally(state: BattleState) -> dict[str, int]:
    """Votes cast by the audience, per seated target (zeros included)."""
    return _count(state, [v for v in state.votes if v.voter_id is None])


def tally(state: BattleState) -> dict[str, int]:
    """All votes (agents + audience), per seated target (zeros included)."""
    return _count(state, list(state.votes))


def team_tally(state: BattleState) -> dict[str, int]:
    """All votes summed per team (TEAM mode)."""
    totals = tally(state)
    seats_by_id = {s.agent_id: s for s in state.seats}
    return {
        team: sum(n for agent, n in totals.items() if seats_by_id[agent].team_id == team)
        for team in team_ids(state)
    }


def decide_by_votes(state: BattleState) -> tuple[str | None, str | None, str]:
    """(winner_id, winning_team_id, reasoning) from the tally; a tie, 0-0 included, is a draw."""
    if state.config.mode == Mode.TEAM:
        leader, top, total = _leader(team_tally(state))
        if leader is None:
            return None, None, _draw_reasoning(top, total)
        return None, leader, f"Team {leader} received the most votes ({top} of {total})."
    leader, top, total = _leader(tally(state))
    if leader is None:
        return None, None, _draw_reasoning(top, total)
    return leader, None, f"{leader} received the most votes ({top} of {total})."


# --------------------------------------------------------------------------- step


def step(state: BattleState, inp: Input) -> tuple[BattleState, list[Effect]]:
    """Apply one input. Pure: the same state and input always give the same result."""
    b = _Step(state, inp.now)
    match inp:
        case Opened():
            _on_opened(b, inp)
        case Join():
            _on_join(b, inp)
        case Leave():
            _on_leave(b, inp)
        case Disconnect():
            _on_disconnect(b, inp)
        case Reconnect():
            _on_reconnect(b, inp)
        case SubmitTurn():
            _on_submit_turn(b, inp)
        case CastVote():
            _on_cast_vote(b, inp)
        case TimerFired():
            _on_timer(b, inp)
        case CommentaryReady():
            _on_commentary(b, inp)
        case JudgeAnswered():
            _on_judge_answered(b, inp)
        case JudgeFailed():
            _on_judge_failed(b, inp)
        case Cancel():
            _on_cancel(b, inp)
        case _:
            assert_never(inp)
    return b.state, b.ordered_effects()


# --------------------------------------------------------------------------- the step builder


def _effect_rank(effect: Effect) -> int:
    match effect:
        case Emit() | RecordVote():
            return 0
        case ReplyAck() | ReplyError():
            return 1
        case ArmTimer() | CancelTimer():
            return 2
        case RequestCommentary() | RequestJudge():
            return 3
        case _:
            assert_never(effect)


@dataclass
class _Step:
    """Accumulates one step: the evolving state and the effects, kept consistent together."""

    state: BattleState
    now: int
    effects: list[Effect] = field(default_factory=list)

    @property
    def seq(self) -> int:
        """The seq the next emitted event must carry."""
        return self.state.last_seq + 1

    def emit(self, event: Event) -> int:
        """Emit ``event`` and apply it: the live state changes exactly as a fold of the log."""
        if event.seq != self.seq or event.at != self.now:
            raise MachineError(f"event {event!r} out of sequence (expected seq {self.seq})")
        self.state = apply(self.state, event)
        self.effects.append(Emit(event))
        return event.seq

    def record(self, vote: VoteRecord) -> None:
        """Record a vote row and apply it, as recovery will from the stored rows."""
        self.state = apply_vote(self.state, vote)
        self.effects.append(RecordVote(vote))

    def arm(self, name: str, fire_at: int) -> None:
        others = tuple(t for t in self.state.timers if t[0] != name)
        self.state = replace(self.state, timers=(*others, (name, fire_at)))
        self.effects.append(ArmTimer(name, fire_at))

    def cancel(self, name: str) -> None:
        if _armed_at(self.state, name) is None:
            return  # no CancelTimer for what isn't armed: effects mirror state.timers exactly
        self.consume(name)
        self.effects.append(CancelTimer(name))

    def cancel_all(self) -> None:
        for name, _ in self.state.timers:
            self.cancel(name)

    def consume(self, name: str) -> None:
        """Forget a timer without an effect: it has gone off, the runner no longer holds it."""
        self.state = replace(self.state, timers=tuple(t for t in self.state.timers if t[0] != name))

    def ack(self, origin: str | None, ref: str | None, seq: int | None = None) -> None:
        self.effects.append(ReplyAck(origin, ref, seq))

    def error(self, origin: str | None, ref: str | None, code: ErrorCode, message: str) -> None:
        self.effects.append(ReplyError(origin, ref, code, message))

    def set_away(self, agent_id: str, away: bool) -> None:
        """Presence is runtime: the only seat fact that changes without an event."""
        if (agent_id in self.state.away) == away:
            return  # a second Disconnect changes nothing, not even the order
        others = tuple(a for a in self.state.away if a != agent_id)
        self.state = replace(self.state, away=(*others, agent_id) if away else others)

    def set_status(self, status: Status, reason: str | None = None) -> None:
        previous = self.state.status
        self.emit(
            StateChanged(seq=self.seq, at=self.now, status=status, previous=previous, reason=reason)
        )

    def ordered_effects(self) -> list[Effect]:
        return sorted(self.effects, key=_effect_rank)


# --------------------------------------------------------------------------- small queries


def _armed_at(state: BattleState, name: str) -> int | None:
    return next((at for n, at in state.timers if n == name), None)


def _capacity(config: BattleConfig) -> int:
    return 2 if config.mode == Mode.HEAD_TO_HEAD else config.max_participants


def _claimed_team_ids(state: BattleState) -> list[str]:
    claimed: list[str] = []
    for seat in sorted(state.seats, key=lambda s: s.position):
        if seat.team_id is not None and seat.team_id not in claimed:
            claimed.append(seat.team_id)
    return claimed


def _decided(state: BattleState, turn_number: int) -> TurnRecord | None:
    # Records are appended as turns are decided, so in increasing turn order: look from the
    # newest and stop below the number (a step usually asks about the turn in play).
    for record in reversed(state.turns):
        if record.turn_number == turn_number:
            return record
        if record.turn_number < turn_number:
            return None
    return None


def _count(state: BattleState, votes: list[VoteRecord]) -> dict[str, int]:
    counts = {s.agent_id: 0 for s in sorted(state.seats, key=lambda s: s.position)}
    for vote in votes:
        if vote.target_agent_id in counts:
            counts[vote.target_agent_id] += 1
    return counts


def _leader(counts: dict[str, int]) -> tuple[str | None, int, int]:
    """(unique leader or None on a tie, its count, total votes)."""
    total = sum(counts.values())
    top = max(counts.values(), default=0)
    leaders = [k for k, n in counts.items() if n == top]
    return (leaders[0] if len(leaders) == 1 else None), top, total


def _draw_reasoning(top: int, total: int) -> str:
    if total == 0:
        return "Draw: no votes were cast."
    return f"Draw: the vote tally is tied at {top} votes each ({total} votes in all)."


def _sides(state: BattleState) -> list[str]:
    """Who is still in the game: teams in TEAM mode, agents otherwise."""
    alive = [s for s in play_order(state) if not s.forfeited]
    if state.config.mode == Mode.TEAM:
        return [t for t in team_ids(state) if any(s.team_id == t for s in alive)]
    return [s.agent_id for s in alive]


# --------------------------------------------------------------------------- Opened


def _on_opened(b: _Step, inp: Opened) -> None:
    if is_final(b.state):
        return
    if inp.outage_ms > 0:
        _extend_for_outage(b, inp.outage_ms)
    s = b.state
    status_name, status_at = _status_timer(s, b.now, inp.outage_ms)
    for name, at in s.timers:  # the runner lost its timers: hand back the ones we hold
        if name != status_name:
            b.arm(name, at)
    if s.tally_dirty and _armed_at(s, TIMER_TALLY) is None:
        b.arm(TIMER_TALLY, b.now + s.config.tally_interval_ms)  # the owed vote_tally goes out
    if s.status == Status.JUDGING and not s.config.enable_judge:
        _decide_by_tally(b, None)  # unreachable in practice; keeps the battle from hanging
        return
    b.arm(status_name, status_at)
    if s.status == Status.JUDGING:
        _request_judge(b)


def _extend_for_outage(b: _Step, outage_ms: int) -> None:
    """Nobody is skipped, forfeited or cancelled for our outage: the running deadline moves
    back by it, durably (a ``resumed`` event), so a second failover folds the same deadline."""
    deadline = b.state.deadline_at
    b.emit(
        Resumed(
            seq=b.seq,
            at=b.now,
            outage_ms=outage_ms,
            deadline_at=None if deadline is None else deadline + outage_ms,
        )
    )


def _status_timer(s: BattleState, now: int, outage_ms: int) -> tuple[str, int]:
    """The status timer to arm on Opened: at the logged deadline when the log has one."""
    c = s.config
    name = STATUS_TIMERS[s.status]
    if s.status == Status.JUDGING:
        return name, now + c.judge_timeout_ms  # the judge is asked anew
    if s.deadline_at is not None:
        return name, s.deadline_at
    # Only a lobby nobody has joined yet has no logged deadline: keep the one running, if any.
    held = _armed_at(s, name)
    if held is not None:
        return name, held + outage_ms
    fresh = {
        Status.LOBBY: c.lobby_timeout_ms,
        Status.STARTING: c.start_delay_ms,
        Status.IN_PROGRESS: c.turn_duration_ms,
        Status.VOTING: c.vote_duration_ms,
    }[s.status]
    return name, now + fresh


# --------------------------------------------------------------------------- seats


def _on_join(b: _Step, inp: Join) -> None:
    s = b.state
    seat = find_seat(s, inp.agent_id)
    if seat is not None:
        _reattach(b, seat)
        b.ack(inp.origin, None)
    elif s.status == Status.LOBBY:
        _take_seat(b, inp)
    elif s.status == Status.STARTING:
        b.error(inp.origin, None, ErrorCode.BATTLE_FULL, "the battle is full and starting")
    else:
        b.error(inp.origin, None, ErrorCode.INVALID_STATE, f"the battle is {s.status.value}")


def _on_reconnect(b: _Step, inp: Reconnect) -> None:
    seat = find_seat(b.state, inp.agent_id)
    if seat is not None:
        _reattach(b, seat)


def _reattach(b: _Step, seat: Seat) -> None:
    if is_final(b.state):
        return
    b.set_away(seat.agent_id, False)
    b.cancel(grace_timer(seat.agent_id))


@dataclass(frozen=True, slots=True)
class _Refusal:
    code: ErrorCode
    message: str


def _take_seat(b: _Step, inp: Join) -> None:
    s = b.state
    if len(s.seats) >= _capacity(s.config):
        b.error(inp.origin, None, ErrorCode.BATTLE_FULL, "the battle is full")
        return
    team: str | None = None
    if s.config.mode == Mode.TEAM:
        picked = _pick_team(s, inp.team_id or None)
        if isinstance(picked, _Refusal):
            b.error(inp.origin, None, picked.code, picked.message)
            return
        team = picked
    position = 1 + max((seat.position for seat in s.seats), default=0)
    seq = b.emit(
        ParticipantJoined(
            seq=b.seq, at=b.now, agent_id=inp.agent_id, position=position, team_id=team
        )
    )
    b.ack(inp.origin, None, seq)
    if len(b.state.seats) == _capacity(s.config):
        _enter_starting(b)
    else:
        b.arm(TIMER_LOBBY, b.now + s.config.lobby_timeout_ms)  # activity resets the idle timer


def _pick_team(s: BattleState, wanted: str | None) -> str | _Refusal:
    per_team = _capacity(s.config) // 2
    members = {t: sum(1 for seat in s.seats if seat.team_id == t) for t in team_ids(s)}
    if wanted is None:
        team = min(members, key=lambda t: members[t])  # first team wins a tie
    elif wanted in _claimed_team_ids(s) or len(_claimed_team_ids(s)) < 2:
        team = wanted
    else:
        first, second = team_ids(s)
        return _Refusal(ErrorCode.BAD_MESSAGE, f"no team {wanted!r}: teams are {first}, {second}")
    if members.get(team, 0) >= per_team:
        return _Refusal(ErrorCode.BATTLE_FULL, f"team {team} is full")
    return team


def _enter_starting(b: _Step) -> None:
    b.set_status(Status.STARTING)
    b.cancel(TIMER_LOBBY)
    b.arm(TIMER_START, b.now + b.state.config.start_delay_ms)


def _on_leave(b: _Step, inp: Leave) -> None:
    s = b.state
    seat = find_seat(s, inp.agent_id)
    if seat is None:
        b.error(inp.origin, inp.ref, ErrorCode.NOT_FOUND, "you are not in this battle")
        return
    seq: int | None = None
    match s.status:
        case Status.LOBBY | Status.STARTING:
            seq = _free_seat(b, seat, "participant left")
        case Status.IN_PROGRESS:
            seq = _forfeit(b, seat)
        case Status.VOTING | Status.JUDGING:
            seq = _mark_forfeited(b, seat)  # the outcome flow goes on unchanged
        case Status.COMPLETED | Status.CANCELLED:
            pass  # nothing left to leave
    b.ack(inp.origin, inp.ref, seq)


def _free_seat(b: _Step, seat: Seat, reason: str) -> int:
    """Before the start a leaver's seat is simply freed; a starting battle goes back to LOBBY."""
    b.set_away(seat.agent_id, False)  # no seat, nothing to be away from
    b.cancel(grace_timer(seat.agent_id))
    seq = b.emit(
        ParticipantLeft(
            seq=b.seq,
            at=b.now,
            agent_id=seat.agent_id,
            position=seat.position,
            team_id=seat.team_id,
        )
    )
    if b.state.status == Status.STARTING:
        b.set_status(Status.LOBBY, reason)
        b.cancel(TIMER_START)
    b.arm(TIMER_LOBBY, b.now + b.state.config.lobby_timeout_ms)
    return seq


def _mark_forfeited(b: _Step, seat: Seat) -> int | None:
    if seat.forfeited:
        return None
    b.cancel(grace_timer(seat.agent_id))
    return b.emit(
        ParticipantLeft(
            seq=b.seq,
            at=b.now,
            agent_id=seat.agent_id,
            position=seat.position,
            team_id=seat.team_id,
        )
    )


def _forfeit(b: _Step, seat: Seat) -> int | None:
    """After the start leaving forfeits: skip its turn if it is on, end if one side is left."""
    seq = _mark_forfeited(b, seat)
    if seq is None:
        return None
    its_turn = turn_agent(b.state, b.state.current_turn).agent_id == seat.agent_id
    if its_turn:
        _skip(b, b.state.current_turn, SKIP_FORFEIT)
    sides = _sides(b.state)
    if len(sides) == 1:
        _win_by_forfeit(b, sides[0])
    elif not sides:
        _cancel(b, "all participants left")
    elif its_turn:
        _begin_turn(b, b.state.current_turn + 1)
    return seq


def _win_by_forfeit(b: _Step, side: str) -> None:
    if b.state.config.mode == Mode.TEAM:
        reasoning = f"Team {side} wins by forfeit: the other team left the battle."
        _complete(b, None, side, reasoning, "forfeit")
    else:
        reasoning = f"{side} wins by forfeit: every other participant left the battle."
        _complete(b, side, None, reasoning, "forfeit")


def _on_disconnect(b: _Step, inp: Disconnect) -> None:
    s = b.state
    seat = find_seat(s, inp.agent_id)
    if seat is None or is_final(s):
        return
    b.set_away(seat.agent_id, True)
    # Grace only matters while losing the seat is still possible; keep the first deadline.
    can_lose_seat = s.status in (Status.LOBBY, Status.STARTING, Status.IN_PROGRESS)
    name = grace_timer(seat.agent_id)
    if can_lose_seat and not seat.forfeited and _armed_at(s, name) is None:
        b.arm(name, b.now + s.config.reconnect_grace_ms)


def _on_grace_expired(b: _Step, agent_id: str) -> None:
    seat = find_seat(b.state, agent_id)
    if seat is None or agent_id not in b.state.away:
        return
    match b.state.status:
        case Status.LOBBY | Status.STARTING:
            _free_seat(b, seat, "participant disconnected")
        case Status.IN_PROGRESS:
            _forfeit(b, seat)
        case _:
            pass


# --------------------------------------------------------------------------- turns


def _begin_turn(b: _Step, turn_number: int) -> None:
    """Start the next playable turn; forfeited seats' turns are skipped on the way."""
    config = b.state.config
    n = turn_number
    while n <= config.max_turns:
        seat = turn_agent(b.state, n)
        if not seat.forfeited:
            deadline = b.now + config.turn_duration_ms
            b.emit(
                TurnStarted(
                    seq=b.seq, at=b.now, turn_number=n, agent_id=seat.agent_id, deadline_at=deadline
                )
            )
            b.arm(TIMER_TURN, deadline)
            return
        _skip(b, n, SKIP_FORFEIT)
        n += 1
    _start_voting(b)


def _skip(b: _Step, turn_number: int, reason: str) -> None:
    """Decide ``turn_number`` as skipped; applying the event makes it the current turn."""
    agent_id = turn_agent(b.state, turn_number).agent_id
    b.emit(
        TurnSkipped(seq=b.seq, at=b.now, turn_number=turn_number, agent_id=agent_id, reason=reason)
    )


def _on_submit_turn(b: _Step, inp: SubmitTurn) -> None:
    s = b.state
    played = _decided(s, inp.turn_number)
    if played is not None and played.agent_id == inp.agent_id and played.content is not None:
        b.ack(inp.origin, inp.ref, played.seq)  # a retry: same answer, never stored twice
        return
    refusal = _turn_refusal(s, inp)
    if refusal is not None:
        b.error(inp.origin, inp.ref, refusal.code, refusal.message)
        return
    started = s.turn_started_at if s.turn_started_at is not None else b.now
    seq = b.emit(
        TurnPlayed(
            seq=b.seq,
            at=b.now,
            turn_number=inp.turn_number,
            agent_id=inp.agent_id,
            content=inp.content,
            duration_ms=max(0, b.now - started),
        )
    )
    b.ack(inp.origin, inp.ref, seq)
    if s.config.enable_commentator:
        b.effects.append(
            RequestCommentary(
                inp.turn_number, inp.agent_id, inp.content, transcript(s, before=inp.turn_number)
            )
        )
    _begin_turn(b, inp.turn_number + 1)


def _turn_refusal(s: BattleState, inp: SubmitTurn) -> _Refusal | None:
    if s.status != Status.IN_PROGRESS:
        return _Refusal(ErrorCode.INVALID_STATE, f"the battle is {s.status.value}")
    if find_seat(s, inp.agent_id) is None:
        return _Refusal(ErrorCode.FORBIDDEN, "you are not in this battle")
    current = turn_agent(s, s.current_turn)
    if current.agent_id != inp.agent_id:
        return _Refusal(ErrorCode.NOT_YOUR_TURN, f"turn {s.current_turn} is not yours")
    if inp.turn_number != s.current_turn:
        return _Refusal(ErrorCode.WRONG_TURN, f"the current turn is {s.current_turn}")
    return None


def _on_turn_timeout(b: _Step) -> None:
    seat = turn_agent(b.state, b.state.current_turn)
    away = seat.agent_id in b.state.away
    _skip(b, b.state.current_turn, SKIP_DISCONNECTED if away else SKIP_TIMEOUT)
    _begin_turn(b, b.state.current_turn + 1)


def _on_commentary(b: _Step, inp: CommentaryReady) -> None:
    s = b.state
    record = _decided(s, inp.turn_number)
    if is_final(s) or record is None or record.content is None:
        return
    if inp.turn_number in s.commentary_turns:
        return
    b.emit(Commentary(seq=b.seq, at=b.now, turn_number=inp.turn_number, text=inp.text))


# --------------------------------------------------------------------------- voting


def _start_voting(b: _Step) -> None:
    deadline = b.now + b.state.config.vote_duration_ms
    b.set_status(Status.VOTING)
    b.emit(VotingStarted(seq=b.seq, at=b.now, deadline_at=deadline))  # clears the turn times
    b.cancel(TIMER_TURN)
    b.arm(TIMER_VOTE, deadline)


def _on_cast_vote(b: _Step, inp: CastVote) -> None:
    s = b.state
    if any(v.idempotency_key == inp.idempotency_key for v in s.votes):
        b.ack(inp.origin, inp.ref)  # the first answer was this ack
        return
    refusal = _vote_refusal(s, inp)
    if refusal is not None:
        b.error(inp.origin, inp.ref, refusal.code, refusal.message)
        return
    vote = VoteRecord(inp.idempotency_key, inp.voter_id, inp.connection_id, inp.target_agent_id)
    b.record(vote)
    b.ack(inp.origin, inp.ref)
    if _armed_at(s, TIMER_TALLY) is None:  # tallies are coalesced, one per interval
        b.arm(TIMER_TALLY, b.now + s.config.tally_interval_ms)


def _vote_refusal(s: BattleState, inp: CastVote) -> _Refusal | None:
    if s.status != Status.VOTING:
        return _Refusal(ErrorCode.INVALID_STATE, f"the battle is {s.status.value}")
    if find_seat(s, inp.target_agent_id) is None:
        return _Refusal(ErrorCode.NOT_FOUND, "that agent is not in this battle")
    if inp.voter_id is None:
        same_connection = inp.connection_id is not None and any(
            v.voter_id is None and v.connection_id == inp.connection_id for v in s.votes
        )
        if same_connection:
            return _Refusal(ErrorCode.DUPLICATE, "this connection has already voted")
        return None
    if find_seat(s, inp.voter_id) is None:
        return _Refusal(ErrorCode.FORBIDDEN, "only participants vote as agents")
    if inp.voter_id == inp.target_agent_id:
        return _Refusal(ErrorCode.FORBIDDEN, "you cannot vote for yourself")
    if any(v.voter_id == inp.voter_id for v in s.votes):
        return _Refusal(ErrorCode.DUPLICATE, "you have already voted")
    return None


def _flush_tally(b: _Step) -> None:
    s = b.state
    if not s.tally_dirty or is_final(s):
        return
    b.emit(
        VoteTally(
            seq=b.seq,
            at=b.now,
            counts=tally(s),
            agent_counts=agent_tally(s),
            audience_counts=audience_tally(s),
        )
    )  # covers every vote so far: applying it makes the tally clean


def _close_voting(b: _Step) -> None:
    _flush_tally(b)
    b.cancel(TIMER_TALLY)
    b.set_status(Status.JUDGING)
    if not b.state.config.enable_judge:
        _decide_by_tally(b, None)
        return
    _request_judge(b)
    b.arm(TIMER_JUDGE, b.now + b.state.config.judge_timeout_ms)


# --------------------------------------------------------------------------- judging and the end


def _request_judge(b: _Step) -> None:
    s = b.state
    b.effects.append(
        RequestJudge(
            s.config.topic, s.config.mode, s.seats, transcript(s), agent_tally(s), audience_tally(s)
        )
    )


def _on_judge_answered(b: _Step, inp: JudgeAnswered) -> None:
    s = b.state
    if s.status != Status.JUDGING:
        return
    winner = inp.winner_id
    team = inp.winning_team_id
    winner_seat = find_seat(s, winner) if winner is not None else None
    if winner is not None and winner_seat is None:
        _decide_by_tally(b, f"The judge named {winner!r}, who is not in this battle")
        return
    if s.config.mode == Mode.TEAM:
        if team is None and winner_seat is not None:
            team = winner_seat.team_id  # a named agent implies its team
        if team is not None and team not in team_ids(s):
            _decide_by_tally(b, f"The judge named team {team!r}, which is not in this battle")
            return
    elif team is not None:
        team = None  # teams only exist in TEAM mode
    seated = {seat.agent_id for seat in s.seats}
    ranking = [agent for agent in inp.ranking if agent in seated] or None
    _complete(
        b,
        winner,
        team,
        inp.reasoning,
        inp.decided_by,
        scores=inp.scores,
        ranking=ranking,
        confidence=inp.confidence,
    )


def _on_judge_failed(b: _Step, inp: JudgeFailed) -> None:
    if b.state.status == Status.JUDGING:
        _decide_by_tally(b, f"The judge failed ({inp.reason})")


def _decide_by_tally(b: _Step, judge_note: str | None) -> None:
    winner, team, reasoning = decide_by_votes(b.state)
    if judge_note is not None:
        reasoning = f"{judge_note}, so the vote tally decided. {reasoning}"
    _complete(b, winner, team, reasoning, "tally")


def _complete(
    b: _Step,
    winner: str | None,
    team: str | None,
    reasoning: str,
    decided_by: str,
    *,
    scores: dict[str, dict[str, float]] | None = None,
    ranking: list[str] | None = None,
    confidence: float | None = None,
) -> None:
    b.emit(
        Result(
            seq=b.seq,
            at=b.now,
            winner_id=winner,
            winning_team_id=team,
            reasoning=reasoning,
            tally=tally(b.state),
            decided_by=decided_by,
            scores=scores,
            ranking=ranking,
            confidence=confidence,
        )
    )
    b.set_status(Status.COMPLETED)
    b.cancel_all()


def _cancel(b: _Step, reason: str) -> None:
    b.set_status(Status.CANCELLED, reason)
    b.cancel_all()


def _on_cancel(b: _Step, inp: Cancel) -> None:
    if not is_final(b.state):
        _cancel(b, inp.reason)


# --------------------------------------------------------------------------- timers


def _on_timer(b: _Step, inp: TimerFired) -> None:
    armed = _armed_at(b.state, inp.name)
    if armed is None or inp.now < armed:
        return  # stale: cancelled, replaced or early
    b.consume(inp.name)
    status = b.state.status
    if inp.name.startswith(GRACE_PREFIX):
        _on_grace_expired(b, inp.name.removeprefix(GRACE_PREFIX))
    elif inp.name == TIMER_LOBBY and status == Status.LOBBY:
        _cancel(b, "lobby idle timeout")
    elif inp.name == TIMER_START and status == Status.STARTING:
        b.set_status(Status.IN_PROGRESS)
        _begin_turn(b, 1)
    elif inp.name == TIMER_TURN and status == Status.IN_PROGRESS:
        _on_turn_timeout(b)
    elif inp.name == TIMER_VOTE and status == Status.VOTING:
        _close_voting(b)
    elif inp.name == TIMER_JUDGE and status == Status.JUDGING:
        _decide_by_tally(b, "The judge timed out")
    elif inp.name == TIMER_TALLY:
        _flush_tally(b)
