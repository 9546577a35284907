"""Property tests of the battle machine: random input sequences (with ``now`` never going back)
must keep its invariants, and from any reachable state the timers alone must end the battle."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    Opened,
    Reconnect,
    RecordVote,
    ReplyAck,
    ReplyError,
    RequestCommentary,
    RequestJudge,
    SubmitTurn,
    TimerFired,
)
from arena_rt.battle.machine import (
    STATUS_TIMERS,
    TIMER_LOBBY,
    is_final,
    new_battle,
    step,
    turn_agent,
)
from arena_rt.protocol import FINAL_STATUSES, Mode, Result, Status, TurnPlayed, TurnSkipped

T0 = 1_700_000_000_000
AGENTS = ("a1", "a2", "a3", "a4", "a5")
TEAMS = (None, "A", "B", "red")
TIMER_NAMES = ("lobby", "start", "turn", "vote", "judge", "tally", "grace:a1", "grace:a2")
PROPERTY_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- moves


@dataclass(frozen=True)
class FireEarliest:
    """Advance time to the earliest armed timer and fire it. In scripts the lobby timer is left
    out, or few lobbies would ever fill; random TimerFired moves and the drain still fire it."""


@dataclass(frozen=True)
class FillSeats:
    """Unseated agents join (no team asked) until the lobby fills (so games do start)."""


@dataclass(frozen=True)
class SubmitCurrent:
    """The agent whose turn it is plays it (so games do progress)."""


@dataclass(frozen=True)
class RepeatPlayed:
    """Resend an already played turn (idempotency)."""

    index: int


Move = Input | FireEarliest | FillSeats | SubmitCurrent | RepeatPlayed

agents = st.sampled_from(AGENTS)
maybe_agents = st.none() | agents
small_text = st.sampled_from(["", "x", "a long argument"])
# Inputs are drawn with now=0; the runner stamps the real, non-decreasing time. Repeats weight
# the choice towards moves that make a battle progress, so games get to voting and beyond.
joins = st.builds(Join, agent_id=agents, now=st.just(0), team_id=st.sampled_from(TEAMS))
votes = st.builds(
    CastVote,
    target_agent_id=agents,
    idempotency_key=st.sampled_from(["k1", "k2", "k3", "k4", "k5"]),
    now=st.just(0),
    voter_id=maybe_agents,
    connection_id=st.none() | st.sampled_from(["c1", "c2"]),
)
commentary = st.builds(
    CommentaryReady, turn_number=st.integers(0, 7), text=small_text, now=st.just(0)
)
moves: st.SearchStrategy[Move] = st.one_of(
    *[joins] * 6,
    *[st.just(SubmitCurrent())] * 4,
    st.just(FillSeats()),
    *[st.just(FireEarliest())] * 3,
    *[votes] * 4,
    *[commentary] * 2,
    # A runner taking charge again, sometimes after an outage (a failover).
    st.builds(Opened, now=st.just(0), outage_ms=st.sampled_from([0, 0, 3_000])),
    st.builds(Leave, agent_id=agents, now=st.just(0)),
    st.builds(Disconnect, agent_id=agents, now=st.just(0)),
    st.builds(Reconnect, agent_id=agents, now=st.just(0)),
    st.builds(
        SubmitTurn,
        agent_id=agents,
        turn_number=st.integers(0, 7),
        content=small_text,
        now=st.just(0),
    ),
    st.builds(TimerFired, name=st.sampled_from(TIMER_NAMES), now=st.just(0)),
    st.builds(
        JudgeAnswered,
        winner_id=maybe_agents,
        reasoning=small_text,
        now=st.just(0),
        winning_team_id=st.sampled_from(TEAMS),
    ),
    st.builds(JudgeFailed, reason=small_text, now=st.just(0)),
    st.builds(RepeatPlayed, index=st.integers(0, 10)),
)
# Cancel ends everything, so a quarter of the scripts get one, placed anywhere.
cancels = st.builds(Cancel, reason=small_text, now=st.just(0))
timed_moves = st.lists(st.tuples(st.integers(0, 2_000), moves), min_size=30, max_size=100).flatmap(
    lambda script: st.one_of(
        *[st.just(script)] * 3,
        st.tuples(st.integers(0, len(script)), st.integers(0, 2_000), cancels).map(
            lambda c: [*script[: c[0]], (c[1], c[2]), *script[c[0] :]]
        ),
    )
)


@st.composite
def configs(draw: st.DrawFn, mode: Mode | None = None) -> BattleConfig:
    if mode is None:
        mode = draw(st.sampled_from(list(Mode)))
    size = {
        Mode.HEAD_TO_HEAD: st.just(2),
        Mode.TEAM: st.sampled_from([2, 4]),
        Mode.FREE_FOR_ALL: st.integers(2, 4),
    }[mode]
    durations = st.sampled_from([0, 1_000, 5_000])
    return BattleConfig(
        battle_id="b",
        room_code="R",
        topic="t",
        mode=mode,
        max_participants=draw(size),
        max_turns=draw(st.integers(1, 6)),
        turn_duration_ms=draw(st.sampled_from([1_000, 5_000])),
        start_delay_ms=draw(durations),
        vote_duration_ms=draw(durations),
        enable_judge=draw(st.booleans()),
        enable_commentator=draw(st.booleans()),
        lobby_timeout_ms=draw(st.sampled_from([5_000, 600_000])),
        reconnect_grace_ms=draw(durations),
        judge_timeout_ms=draw(durations),
        tally_interval_ms=draw(st.sampled_from([0, 500])),
    )


# --------------------------------------------------------------------------- the checking runner


def _rank(effect: Effect) -> int:
    if isinstance(effect, Emit | RecordVote):
        return 0
    if isinstance(effect, ReplyAck | ReplyError):
        return 1
    if isinstance(effect, ArmTimer | CancelTimer):
        return 2
    assert isinstance(effect, RequestCommentary | RequestJudge)
    return 3


class Checker:
    """Runs inputs through ``step`` and asserts the invariants after every one."""

    def __init__(self, config: BattleConfig) -> None:
        self.state: BattleState = new_battle(config)
        self.now = T0
        self.next_seq = 1
        self.decided_turns: set[int] = set()
        self.timer_model: dict[str, int] = {}
        self.results = 0
        self.played: list[SubmitTurn] = []

    def send(self, inp: Input) -> list[Effect]:
        before = self.state
        if isinstance(inp, TimerFired):
            armed = dict(before.timers).get(inp.name)
            if armed is not None and inp.now >= armed:
                del self.timer_model[inp.name]  # a live timer is consumed by firing
        after, effects = step(before, inp)
        self.state = after
        self._check_events(inp, effects)
        self._check_timers(effects)
        self._check_shape(before, after, effects)
        return effects

    def _check_events(self, inp: Input, effects: list[Effect]) -> None:
        for effect in effects:
            if not isinstance(effect, Emit):
                continue
            event = effect.event
            assert event.seq == self.next_seq, "seq must be gap-free from 1"
            assert event.at == inp.now
            self.next_seq += 1
            if isinstance(event, TurnPlayed | TurnSkipped):
                assert event.turn_number not in self.decided_turns, "turn decided twice"
                self.decided_turns.add(event.turn_number)
            if isinstance(event, TurnPlayed):
                self.played.append(
                    SubmitTurn(event.agent_id, event.turn_number, event.content, 0, ref="r")
                )
            if isinstance(event, Result):
                self.results += 1
        assert self.state.last_seq == self.next_seq - 1

    def _check_timers(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, ArmTimer):
                self.timer_model[effect.name] = effect.fire_at
            elif isinstance(effect, CancelTimer):
                assert effect.name in self.timer_model, "cancelled a timer that was not armed"
                del self.timer_model[effect.name]
        assert dict(self.state.timers) == self.timer_model
        assert len(self.state.timers) == len(self.timer_model), "duplicate timer names"

    def _check_shape(self, before: BattleState, after: BattleState, effects: list[Effect]) -> None:
        ranks = [_rank(e) for e in effects]
        assert ranks == sorted(ranks), "effects out of order"
        if is_final(before):
            assert after == before, "a final state changed"
            assert not any(isinstance(e, Emit | RecordVote | ArmTimer) for e in effects)
        if is_final(after):
            assert after.timers == ()
        else:
            # After Opened, every live status has its own timer armed (nothing can hang) and no
            # timer of another phase lingers; grace timers and the vote tally are the extras.
            phase_timers = {n for n, _ in after.timers if not n.startswith("grace:")}
            allowed = {STATUS_TIMERS[after.status]}
            if after.status == Status.VOTING:
                allowed.add("tally")
            assert STATUS_TIMERS[after.status] in phase_timers
            assert phase_timers <= allowed, f"{phase_timers} armed in {after.status}"
            # The status timer runs out exactly at the logged deadline, when the log has one.
            if after.deadline_at is not None:
                assert dict(after.timers)[STATUS_TIMERS[after.status]] == after.deadline_at
            if after.status == Status.IN_PROGRESS:
                assert after.deadline_at == after.turn_deadline_at is not None
        if any(isinstance(e, ReplyError) for e in effects):
            assert after == before, "a refused input changed the state"
        numbers = [t.turn_number for t in after.turns]
        assert len(numbers) == len(set(numbers))
        assert after.current_turn <= after.config.max_turns
        assert self.results == (1 if after.status == Status.COMPLETED else 0)

    # -- moves
    def play(self, move: Move) -> None:
        if isinstance(move, FireEarliest):
            self.fire_earliest(skip=TIMER_LOBBY)
        elif isinstance(move, FillSeats):
            self.fill_seats()
        elif isinstance(move, SubmitCurrent):
            if self.state.status == Status.IN_PROGRESS:
                seat = turn_agent(self.state, self.state.current_turn)
                self.send(SubmitTurn(seat.agent_id, self.state.current_turn, "arg", self.now))
        elif isinstance(move, RepeatPlayed):
            self.repeat_played(move.index)
        else:
            self.send(replace(move, now=self.now))

    def fill_seats(self) -> None:
        for agent in AGENTS:
            if self.state.status != Status.LOBBY:
                return
            self.send(Join(agent, self.now))

    def fire_earliest(self, skip: str | None = None) -> list[Effect]:
        armed = [t for t in self.state.timers if t[0] != skip]
        if not armed:
            return []
        name, at = min(armed, key=lambda t: t[1])
        self.now = max(self.now, at)
        return self.send(TimerFired(name, self.now))

    def repeat_played(self, index: int) -> None:
        if not self.played:
            return
        original = self.played[index % len(self.played)]
        before = self.state
        effects = self.send(replace(original, now=self.now))
        assert self.state == before
        [ack] = effects
        assert isinstance(ack, ReplyAck)
        assert ack.seq == next(t.seq for t in before.turns if t.turn_number == original.turn_number)


def run(config: BattleConfig, script: list[tuple[int, Move]]) -> Checker:
    checker = Checker(config)
    checker.send(Opened(checker.now))
    for delay, move in script:
        checker.now += delay
        checker.play(move)
    return checker


# --------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(config=configs(), script=timed_moves)
def test_invariants_hold_and_timers_alone_end_any_battle(
    config: BattleConfig, script: list[tuple[int, Move]]
) -> None:
    checker = run(config, script)  # the Checker asserts the invariants after every step
    # Drain: each firing ends a phase, decides a turn or retires a side timer; the judge fails.
    bound = config.max_turns + 2 * len(AGENTS) + 10
    for _ in range(bound):
        if is_final(checker.state):
            break
        effects = checker.fire_earliest()
        if any(isinstance(e, RequestJudge) for e in effects):
            checker.send(JudgeFailed("unavailable", checker.now))
    assert checker.state.status in FINAL_STATUSES


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(config=configs(), script=timed_moves, extra=st.lists(moves, max_size=15))
def test_a_final_state_never_changes(
    config: BattleConfig, script: list[tuple[int, Move]], extra: list[Move]
) -> None:
    checker = run(config, script)
    checker.send(Cancel("stop", checker.now))
    final = checker.state
    assert final.status in FINAL_STATUSES
    for move in extra:
        checker.now += 1_000
        checker.play(move)
        assert checker.state == final


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(list(Mode)), max_turns=st.integers(1, 8), judge=st.booleans())
def test_a_fully_played_game_completes(mode: Mode, max_turns: int, judge: bool) -> None:
    size = 2 if mode == Mode.HEAD_TO_HEAD else 4
    config = BattleConfig("b", "R", "t", mode, size, max_turns=max_turns, enable_judge=judge)
    checker = Checker(config)
    checker.send(Opened(checker.now))
    for agent in AGENTS[:size]:
        checker.send(Join(agent, checker.now))
    checker.fire_earliest()  # start
    while checker.state.status == Status.IN_PROGRESS:
        checker.now += 100
        checker.play(SubmitCurrent())
    assert checker.decided_turns == set(range(1, max_turns + 1))
    checker.fire_earliest()  # vote
    if judge:
        checker.send(JudgeAnswered(None, "a draw", checker.now))
    assert checker.state.status == Status.COMPLETED
    assert checker.state.timers == ()
