"""The log is the battle: a fold of what the machine emitted (events, plus the vote rows it
recorded) gives back its durable state at every step, and a battle recovered from its log
carries on as the live one would. Also the outage extension (``Opened.outage_ms``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from arena_rt.battle.domain import (
    ArmTimer,
    BattleConfig,
    BattleState,
    Effect,
    Emit,
    Input,
    Leave,
    MachineError,
    Opened,
    RecordVote,
    RequestJudge,
    TimerFired,
    VoteRecord,
)
from arena_rt.battle.log import apply, durable, fold
from arena_rt.battle.machine import STATUS_TIMERS, TIMER_TALLY, is_final, step
from arena_rt.protocol import (
    Event,
    Mode,
    Resumed,
    Status,
    TurnSkipped,
    VoteTally,
    encode,
    event_decoder,
)
from tests.unit.test_machine import (
    FFA,
    Driver,
    cancelled,
    completed,
    emitted,
    judging,
    lobby,
    only,
    seated,
    started,
    voting,
)
from tests.unit.test_machine_properties import (
    PROPERTY_SETTINGS,
    Checker,
    Move,
    configs,
    moves,
)

# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class SeatedLeaves:
    """A seated agent (by index) leaves: forfeits in play, whose turns are then skipped without
    a turn_started (the shape where the old recovery lost ``current_turn``)."""

    index: int


LogMove = Move | SeatedLeaves
log_moves: st.SearchStrategy[LogMove] = st.one_of(
    *[moves] * 6, st.builds(SeatedLeaves, index=st.integers(0, 4))
)
log_scripts = st.lists(st.tuples(st.integers(0, 2_000), log_moves), min_size=30, max_size=100)

# --------------------------------------------------------------------------- the recording runners


class Recorder(Checker):
    """The property tests' checking runner, also keeping what it would have persisted (the
    events and the vote rows); after every step, the fold of that equals the live state."""

    def __init__(self, config: BattleConfig) -> None:
        super().__init__(config)
        self.log: list[Event] = []
        self.votes: list[VoteRecord] = []
        self.effects: list[list[Effect]] = []

    def send(self, inp: Input) -> list[Effect]:
        effects = super().send(inp)
        self.log += [e.event for e in effects if isinstance(e, Emit)]
        self.votes += [e.vote for e in effects if isinstance(e, RecordVote)]
        self.effects.append(effects)
        # Whole dataclasses, seats included; only the runtime fields are blanked.
        assert fold(self.state.config, self.log, self.votes) == durable(self.state)
        return effects

    def play(self, move: LogMove) -> None:
        if isinstance(move, SeatedLeaves):
            if self.state.seats:
                seat = self.state.seats[move.index % len(self.state.seats)]
                self.send(Leave(seat.agent_id, self.now))
        else:
            super().play(move)

    def recovered(self) -> Recorder:
        """This battle as a new runner would load it: the fold of its log, nothing runtime."""
        other = copy.copy(self)
        other.state = fold(self.state.config, self.log, self.votes)
        other.timer_model = {}
        other.decided_turns = set(self.decided_turns)
        other.played = list(self.played)
        other.log = list(self.log)
        other.votes = list(self.votes)
        other.effects = []
        return other


class LogDriver(Driver):
    """The unit tests' driver, also keeping the vote rows, and able to crash and recover."""

    def __init__(self, config: BattleConfig) -> None:
        super().__init__(config)
        self.votes: list[VoteRecord] = []

    def send(self, inp: Input) -> list[Effect]:
        effects = super().send(inp)
        self.votes += [e.vote for e in effects if isinstance(e, RecordVote)]
        return effects

    def failover(self, outage_ms: int = 0) -> list[Effect]:
        """The process dies; after ``outage_ms`` another loads the log and takes charge."""
        self.state = fold(self.state.config, self.log, self.votes)
        self.timer_model = {}
        self.advance(outage_ms)
        return self.send(Opened(self.now, outage_ms))


def logged(make: object, *args: object, **kwargs: object) -> LogDriver:
    """A unit-test scenario (``voting()``, ...) rebuilt on a LogDriver."""
    d: Driver = make(*args, **kwargs)  # type: ignore[operator]
    log_driver = LogDriver(d.state.config)
    log_driver.__dict__.update(d.__dict__)
    log_driver.votes = list(d.state.votes)  # what its RecordVote effects said, in order
    return log_driver


def run(config: BattleConfig, script: list[tuple[int, LogMove]]) -> Recorder:
    recorder = Recorder(config)
    recorder.send(Opened(recorder.now))
    for delay, move in script:
        recorder.now += delay
        recorder.play(move)
    return recorder


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("mode", list(Mode))
@settings(PROPERTY_SETTINGS, max_examples=150)
@given(data=st.data())
def test_the_fold_of_what_was_emitted_is_the_live_state_at_every_step(
    mode: Mode, data: st.DataObject
) -> None:
    config = data.draw(configs(mode))
    script = data.draw(log_scripts)
    run(config, script)  # the Recorder asserts it after every step


def expected_opened_timers(s: BattleState, now: int) -> set[ArmTimer]:
    """What Opened must arm on a freshly recovered (nothing armed) live battle."""
    name = STATUS_TIMERS[s.status]
    if s.status == Status.JUDGING:
        armed = {ArmTimer(name, now + s.config.judge_timeout_ms)}  # the judge is asked anew
    elif s.deadline_at is not None:
        armed = {ArmTimer(name, s.deadline_at)}
    else:
        assert s.status == Status.LOBBY and not s.seats, "only an untouched lobby has no deadline"
        armed = {ArmTimer(name, now + s.config.lobby_timeout_ms)}
    if s.tally_dirty:
        armed.add(ArmTimer(TIMER_TALLY, now + s.config.tally_interval_ms))
    return armed


def only_runtime_is_the_status_timer(s: BattleState) -> bool:
    """Nothing that only the live process knew: no one away, no grace or tally timer running,
    and the status timer (if any) sits at the logged deadline, where recovery arms it."""
    if s.away or s.tally_dirty:
        return False
    if is_final(s):
        return True
    name = STATUS_TIMERS[s.status]
    if any(n != name for n, _ in s.timers):
        return False
    return s.status == Status.JUDGING or s.deadline_at is not None


@pytest.mark.parametrize("mode", list(Mode))
@settings(PROPERTY_SETTINGS, max_examples=100)
@given(data=st.data())
def test_a_battle_recovered_anywhere_carries_on_as_the_live_one(
    mode: Mode, data: st.DataObject
) -> None:
    """Crash after a random prefix of the script and recover with fold, then Opened.

    Opened arms exactly the status timer at the logged deadline and the tally timer when a
    vote_tally is owed. What differs from the live run is only what the log can't know: grace
    timers (a new runner starts them afresh when it reports the agents gone), a tally timer's
    phase, and in JUDGING the judge (asked again, with a fresh timeout, on any Opened). So at
    the first point where none of those is pending, the recovered runner and a live runner
    that is re-Opened at the same instant are identical and emit the same effects to the end.
    """
    config = data.draw(configs(mode))
    script = data.draw(log_scripts)
    cut = data.draw(st.integers(0, len(script)))
    live = run(config, script[:cut])

    recovered = live.recovered()
    effects = recovered.send(Opened(recovered.now))
    armed = {e for e in effects if isinstance(e, ArmTimer)}
    if is_final(live.state):
        assert effects == []
    else:
        assert armed == expected_opened_timers(recovered.state, recovered.now)
        assert not emitted(effects)
        requests = only(effects, RequestJudge)
        assert len(requests) == (1 if live.state.status == Status.JUDGING else 0)

    rest = script[cut:]
    while rest and not only_runtime_is_the_status_timer(live.state):
        delay, move = rest.pop(0)
        live.now += delay
        live.play(move)
    if not only_runtime_is_the_status_timer(live.state):
        event("no point free of runtime-only timers: Opened checked only")
        return
    event(f"carried on after recovery in {live.state.status}")
    recovered = live.recovered()
    live.effects, recovered.effects = [], []
    live.send(Opened(live.now))
    recovered.send(Opened(recovered.now))
    assert recovered.state == live.state
    for delay, move in rest:
        for runner in (live, recovered):
            runner.now += delay
            runner.play(move)
    assert recovered.effects == live.effects
    assert recovered.state == live.state


# --------------------------------------------------------------------------- the divergent fields


def test_recovery_sends_the_pending_vote_tally() -> None:
    d = logged(voting)
    d.vote("ann", "k1", conn="spectator-1")
    d.advance(100)
    d.vote("bob", "k2", voter="ann")
    assert d.state.tally_dirty and d.timer("tally") is not None  # owed, not yet sent
    effects = d.failover()
    assert d.state.tally_dirty
    assert ArmTimer("tally", d.now + 1_000) in effects
    [tally_event] = emitted(d.fire("tally"))
    assert isinstance(tally_event, VoteTally) and tally_event.counts == {"ann": 1, "bob": 1}
    assert not d.state.tally_dirty
    assert fold(d.state.config, d.log, d.votes).tallied == 2


def test_turn_times_are_cleared_when_voting_starts_after_recovery() -> None:
    d = logged(voting)
    live = d.state
    assert live.turn_started_at is None and live.turn_deadline_at is None
    recovered = fold(live.config, d.log, d.votes)
    assert (recovered.turn_started_at, recovered.turn_deadline_at) == (None, None)
    assert recovered.deadline_at == d.timer("vote")
    assert recovered == durable(live)


def test_current_turn_after_forfeit_skips_at_the_end_matches_after_recovery() -> None:
    d = logged(started, FFA)  # p1..p4, 8 turns
    d.leave("p4")  # p4's turns (4 and 8) are skipped as forfeits from now on
    d.play_all_turns()  # ... turn 7 played, turn 8 skipped on the way to voting
    last = d.log[-3]
    assert isinstance(last, TurnSkipped) and (last.turn_number, last.reason) == (8, "forfeit")
    assert d.status() == Status.VOTING and d.state.current_turn == 8
    recovered = fold(d.state.config, d.log, d.votes)
    assert recovered.current_turn == 8
    assert recovered == durable(d.state)


def test_seats_and_presence_after_recovery() -> None:
    d = logged(started, FFA)
    d.disconnect("p2")
    d.leave("p3")
    assert d.state.away == ("p2",)
    recovered = fold(d.state.config, d.log, d.votes)
    assert recovered.seats == d.state.seats  # forfeits included; presence isn't in a seat
    assert recovered.away == () and recovered.timers == ()


# --------------------------------------------------------------------------- outages


OUTAGE = 7_000


def resumed_of(effects: list[Effect]) -> Resumed:
    [event] = emitted(effects)
    assert isinstance(event, Resumed) and event.outage_ms == OUTAGE
    return event


def test_resumed_is_a_wire_event() -> None:
    event = Resumed(seq=3, at=10, outage_ms=OUTAGE, deadline_at=None)
    data = encode(event)
    assert b'"type":"resumed"' in data and b'"outageMs":7000' in data
    assert event_decoder.decode(data) == event


def test_an_outage_in_the_lobby_extends_the_idle_timeout() -> None:
    d = logged(lobby, FFA)
    d.join("p1")
    idle_at = d.state.deadline_at
    assert idle_at == d.timer("lobby")
    effects = d.failover(OUTAGE)
    resumed = resumed_of(effects)
    assert resumed.deadline_at == idle_at + OUTAGE  # type: ignore[operator]
    assert ArmTimer("lobby", idle_at + OUTAGE) in effects  # type: ignore[operator]
    assert d.send(TimerFired("lobby", idle_at)) == []  # type: ignore[arg-type]
    assert d.status() == Status.LOBBY
    assert fold(d.state.config, d.log, d.votes) == durable(d.state)


def test_an_outage_while_starting_extends_the_countdown() -> None:
    d = logged(seated)
    start_at = d.timer("start")
    assert start_at is not None
    effects = d.failover(OUTAGE)
    assert resumed_of(effects).deadline_at == start_at + OUTAGE
    assert effects[-1] == ArmTimer("start", start_at + OUTAGE)
    d.now = start_at
    assert d.send(TimerFired("start", d.now)) == []  # early now: stale
    assert d.status() == Status.STARTING
    assert fold(d.state.config, d.log, d.votes) == durable(d.state)


def test_an_outage_mid_turn_extends_the_turn_and_skips_no_one() -> None:
    d = logged(started)
    turn_at = d.state.turn_deadline_at
    assert turn_at is not None
    effects = d.failover(OUTAGE)
    assert resumed_of(effects).deadline_at == turn_at + OUTAGE
    assert ArmTimer("turn", turn_at + OUTAGE) in effects
    assert d.state.turn_deadline_at == d.state.deadline_at == turn_at + OUTAGE
    assert d.send(TimerFired("turn", turn_at)) == []  # the old deadline: stale
    assert not any(isinstance(e, TurnSkipped) for e in d.log)
    d.submit()  # the agent still has its turn
    assert d.state.current_turn == 2
    assert fold(d.state.config, d.log, d.votes) == durable(d.state)


def test_an_outage_while_voting_extends_the_vote_window() -> None:
    d = logged(voting)
    vote_at = d.timer("vote")
    assert vote_at is not None
    effects = d.failover(OUTAGE)
    assert resumed_of(effects).deadline_at == vote_at + OUTAGE
    assert ArmTimer("vote", vote_at + OUTAGE) in effects
    assert d.send(TimerFired("vote", vote_at)) == []
    d.vote("ann", "late-but-in-time")  # the window is still open
    assert d.status() == Status.VOTING and len(d.state.votes) == 1
    assert fold(d.state.config, d.log, d.votes) == durable(d.state)


def test_an_outage_while_judging_asks_the_judge_again() -> None:
    d = logged(judging)
    effects = d.failover(OUTAGE)
    assert resumed_of(effects).deadline_at is None  # the judge's timeout is not logged
    assert ArmTimer("judge", d.now + 30_000) in effects
    assert len(only(effects, RequestJudge)) == 1
    assert d.status() == Status.JUDGING
    assert fold(d.state.config, d.log, d.votes) == durable(d.state)


@pytest.mark.parametrize("final", [completed, cancelled])
def test_an_outage_after_the_end_changes_nothing(final: object) -> None:
    d = logged(final)
    before = d.state
    assert d.failover(OUTAGE) == []
    assert d.state == before


@pytest.mark.parametrize("scenario", [lobby, seated, started, voting, judging])
def test_no_outage_emits_nothing(scenario: object) -> None:
    d = logged(scenario)
    before = len(d.log)
    effects = d.failover(0)
    assert emitted(effects) == [] and len(d.log) == before


def test_a_second_failover_folds_the_first_extension() -> None:
    d = logged(started)
    turn_at = d.state.turn_deadline_at
    assert turn_at is not None
    d.failover(OUTAGE)
    effects = d.failover(OUTAGE)  # the new owner only has the log: it holds the first extension
    assert resumed_of(effects).deadline_at == turn_at + 2 * OUTAGE
    assert ArmTimer("turn", turn_at + 2 * OUTAGE) in effects


def test_apply_refuses_a_gap_in_the_log() -> None:
    d = logged(started)
    later = msgspec.structs.replace(d.log[-1], seq=d.state.last_seq + 2)
    with pytest.raises(MachineError, match="does not follow"):
        apply(d.state, later)


def test_a_step_changes_no_durable_field_without_an_event() -> None:
    """Presence and timers are the only things a step may change without emitting."""
    d = logged(started)
    before = d.state
    effects = d.disconnect("bob")
    assert emitted(effects) == []
    assert durable(d.state) == durable(before) and d.state.away == ("bob",)
    state, _ = step(d.state, TimerFired("grace:nobody", d.now))
    assert state == d.state
