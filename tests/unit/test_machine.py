"""Unit tests of the pure battle machine: every rule, in all three modes, without I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

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
    SubmitTurn,
    TimerFired,
    TranscriptTurn,
)
from arena_rt.battle.machine import (
    check_config,
    decide_by_votes,
    find_seat,
    new_battle,
    play_order,
    step,
    tally,
    team_ids,
    transcript,
    turn_agent,
)
from arena_rt.protocol import (
    Commentary,
    ErrorCode,
    Event,
    Mode,
    ParticipantJoined,
    ParticipantLeft,
    Result,
    StateChanged,
    Status,
    TurnPlayed,
    TurnSkipped,
    TurnStarted,
    VoteTally,
    VotingStarted,
)

T0 = 1_700_000_000_000

H2H = Mode.HEAD_TO_HEAD
TEAM = Mode.TEAM
FFA = Mode.FREE_FOR_ALL
ALL_MODES = [H2H, TEAM, FFA]

# Agents by mode, in join order. TEAM: a* join team A, b* team B (a1 has position 1).
AGENTS: dict[Mode, tuple[str, ...]] = {
    H2H: ("ann", "bob"),
    TEAM: ("a1", "b1", "a2", "b2"),
    FFA: ("p1", "p2", "p3", "p4"),
}
PLAY_ORDER: dict[Mode, tuple[str, ...]] = {
    H2H: ("ann", "bob"),
    TEAM: ("a1", "b1", "a2", "b2"),
    FFA: ("p1", "p2", "p3", "p4"),
}


def make_config(mode: Mode = H2H, **overrides: object) -> BattleConfig:
    n = 2 if mode == H2H else 4
    config = BattleConfig(
        battle_id="battle-1",
        room_code="ROOM01",
        topic="Is a hot dog a sandwich?",
        mode=mode,
        max_participants=n,
        max_turns=2 * n,
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


def team_of(agent: str) -> str | None:
    return agent[0].upper() if agent[0] in "ab" and agent[1:].isdigit() else None


def emitted(effects: list[Effect]) -> list[Event]:
    return [e.event for e in effects if isinstance(e, Emit)]


def event_types(effects: list[Effect]) -> list[type[Event]]:
    return [type(e) for e in emitted(effects)]


def only(effects: list[Effect], kind: type[object]) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


class Driver:
    """Feeds inputs to the machine at a controllable ``now`` and checks invariants each step:
    gap-free seqs stamped with ``now``, and ``state.timers`` matching the timer effects."""

    def __init__(self, config: BattleConfig) -> None:
        self.state: BattleState = new_battle(config)
        self.now = T0
        self.log: list[Event] = []
        self.timer_model: dict[str, int] = {}
        self.effects: list[Effect] = []

    # -- the one way in
    def send(self, inp: Input) -> list[Effect]:
        before = self.state
        if isinstance(inp, TimerFired):
            armed = dict(before.timers).get(inp.name)
            if armed is not None and inp.now >= armed:
                del self.timer_model[inp.name]
        self.state, effects = step(before, inp)
        for event in emitted(effects):
            assert event.seq == len(self.log) + 1
            assert event.at == inp.now
            self.log.append(event)
        assert self.state.last_seq == len(self.log)
        for effect in effects:
            if isinstance(effect, ArmTimer):
                self.timer_model[effect.name] = effect.fire_at
            elif isinstance(effect, CancelTimer):
                del self.timer_model[effect.name]
        assert dict(self.state.timers) == self.timer_model
        assert len({n for n, _ in self.state.timers}) == len(self.state.timers)
        self.effects = effects
        return effects

    # -- conveniences, all at the current ``now``
    def advance(self, ms: int) -> None:
        self.now += ms

    def status(self) -> Status:
        # A call, not an attribute, so type checkers don't narrow it across steps.
        return self.state.status

    def timer(self, name: str) -> int | None:
        return dict(self.state.timers).get(name)

    def open(self) -> list[Effect]:
        return self.send(Opened(self.now))

    def join(self, agent: str, team: str | None = None) -> list[Effect]:
        return self.send(Join(agent, self.now, team_id=team, origin=f"conn-{agent}"))

    def leave(self, agent: str) -> list[Effect]:
        return self.send(Leave(agent, self.now, origin=f"conn-{agent}", ref="leave-1"))

    def disconnect(self, agent: str) -> list[Effect]:
        return self.send(Disconnect(agent, self.now))

    def reconnect(self, agent: str) -> list[Effect]:
        return self.send(Reconnect(agent, self.now))

    def submit(
        self, agent: str | None = None, turn: int | None = None, content: str | None = None
    ) -> list[Effect]:
        turn = self.state.current_turn if turn is None else turn
        agent = turn_agent(self.state, turn).agent_id if agent is None else agent
        content = f"argument {turn} by {agent}" if content is None else content
        inp = SubmitTurn(agent, turn, content, self.now, origin=f"conn-{agent}", ref=f"t{turn}")
        return self.send(inp)

    def vote(
        self, target: str, key: str, voter: str | None = None, conn: str | None = None
    ) -> list[Effect]:
        return self.send(
            CastVote(target, key, self.now, voter_id=voter, connection_id=conn, ref=key)
        )

    def fire(self, name: str) -> list[Effect]:
        at = self.timer(name)
        assert at is not None, f"timer {name!r} is not armed: {self.state.timers}"
        self.now = max(self.now, at)
        return self.send(TimerFired(name, self.now))

    def play_all_turns(self) -> None:
        while self.state.status == Status.IN_PROGRESS:
            self.advance(1_000)
            self.submit()


def lobby(mode: Mode = H2H, **overrides: object) -> Driver:
    d = Driver(make_config(mode, **overrides))
    d.open()
    return d


def seated(mode: Mode = H2H, **overrides: object) -> Driver:
    d = lobby(mode, **overrides)
    for agent in AGENTS[mode]:
        d.join(agent, team_of(agent))
    assert d.status() == Status.STARTING
    return d


def started(mode: Mode = H2H, **overrides: object) -> Driver:
    d = seated(mode, **overrides)
    d.fire("start")
    assert d.status() == Status.IN_PROGRESS
    return d


def voting(mode: Mode = H2H, **overrides: object) -> Driver:
    d = started(mode, **overrides)
    d.play_all_turns()
    assert d.status() == Status.VOTING
    return d


def judging(mode: Mode = H2H, **overrides: object) -> Driver:
    d = voting(mode, **overrides)
    d.fire("vote")
    assert d.status() == Status.JUDGING
    return d


def completed(mode: Mode = H2H) -> Driver:
    d = judging(mode)
    d.send(JudgeAnswered(PLAY_ORDER[mode][0], "Sharper arguments.", d.now))
    assert d.status() == Status.COMPLETED
    return d


def cancelled(mode: Mode = H2H) -> Driver:
    d = started(mode)
    d.send(Cancel("admin", d.now))
    return d


def error_code(effects: list[Effect]) -> ErrorCode:
    errors = [e for e in effects if isinstance(e, ReplyError)]
    assert len(errors) == 1, effects
    return errors[0].code


def assert_rejected(d: Driver, before: BattleState, code: ErrorCode) -> None:
    assert error_code(d.effects) == code
    assert d.effects == [e for e in d.effects if isinstance(e, ReplyError)]
    assert d.state == before


# --------------------------------------------------------------------------- configuration


def test_new_battle_starts_in_lobby_with_nothing_armed() -> None:
    state = new_battle(make_config())
    assert state.status == Status.LOBBY
    assert state.last_seq == 0
    assert state.seats == () and state.timers == ()


@pytest.mark.parametrize(
    "mode, overrides",
    [
        (H2H, {"max_participants": 3}),
        (FFA, {"max_participants": 1}),
        (FFA, {"max_participants": 11}),
        (TEAM, {"max_participants": 5}),
        (H2H, {"max_turns": 0}),
        (H2H, {"turn_duration_ms": 0}),
        (H2H, {"vote_duration_ms": -1}),
    ],
)
def test_invalid_config_is_a_programming_error(mode: Mode, overrides: dict[str, object]) -> None:
    config = make_config(mode, **overrides)
    assert check_config(config) is not None
    with pytest.raises(MachineError):
        new_battle(config)


@pytest.mark.parametrize("mode, n", [(H2H, 2), (FFA, 2), (FFA, 10), (TEAM, 2), (TEAM, 10)])
def test_valid_configs(mode: Mode, n: int) -> None:
    assert check_config(make_config(mode, max_participants=n)) is None


def test_turn_agent_rejects_turn_zero() -> None:
    d = started()
    with pytest.raises(MachineError):
        turn_agent(d.state, 0)


# --------------------------------------------------------------------------- Opened


def test_opened_in_lobby_arms_the_idle_timer() -> None:
    d = Driver(make_config())
    effects = d.open()
    assert effects == [ArmTimer("lobby", T0 + 600_000)]
    assert d.state.last_seq == 0


def test_lobby_idle_timeout_cancels() -> None:
    d = lobby()
    d.join("ann")
    effects = d.fire("lobby")
    assert d.status() == Status.CANCELLED
    [event] = emitted(effects)
    assert isinstance(event, StateChanged)
    assert (event.status, event.previous, event.reason) == (
        Status.CANCELLED,
        Status.LOBBY,
        "lobby idle timeout",
    )
    assert d.state.timers == ()


def restart(d: Driver, keep_timers: bool = False) -> list[Effect]:
    """Simulate a process restart: a new runner loads the state (with or without the timers it
    recorded) and sends Opened again."""
    if not keep_timers:
        d.state = replace(d.state, timers=())
    d.timer_model = dict(d.state.timers)
    d.advance(5_000)
    return d.open()


def test_opened_after_restart_in_starting_arms_start_at_the_logged_deadline() -> None:
    d = seated()
    start_at = d.now + 10_000  # entered STARTING now: the log says when it starts
    effects = restart(d)
    assert effects == [ArmTimer("start", start_at)]


def test_opened_keeps_deadlines_the_state_still_holds() -> None:
    d = seated()
    start_at = d.timer("start")
    d.advance(3_000)
    assert d.open() == [ArmTimer("start", start_at)]  # type: ignore[arg-type]


def test_opened_in_progress_arms_turn_at_the_recorded_deadline() -> None:
    d = started()
    deadline = d.state.turn_deadline_at
    d.disconnect("bob")
    grace_at = d.timer("grace:bob")
    effects = restart(d, keep_timers=True)
    assert set(effects) == {ArmTimer("turn", deadline), ArmTimer("grace:bob", grace_at)}  # type: ignore[arg-type]


def test_disconnect_after_restart_arms_a_fresh_grace() -> None:
    d = started()
    d.disconnect("bob")
    restart(d)  # grace timer lost with the old runner; the new one reports bob as gone
    assert d.disconnect("bob") == [ArmTimer("grace:bob", d.now + 30_000)]


def test_opened_in_progress_without_deadline_arms_a_fresh_turn() -> None:
    d = started()
    d.state = replace(d.state, turn_deadline_at=None, deadline_at=None)  # not from any log
    effects = restart(d)
    assert effects == [ArmTimer("turn", d.now + 30_000)]


def test_opened_in_voting_arms_vote_and_a_pending_tally() -> None:
    d = voting()
    vote_at = d.timer("vote")
    d.vote("ann", "k1")
    effects = restart(d)
    assert ArmTimer("vote", vote_at) in effects  # type: ignore[arg-type]
    assert ArmTimer("tally", d.now + 1_000) in effects


def test_opened_in_judging_asks_the_judge_again() -> None:
    d = judging()
    effects = restart(d)
    assert ArmTimer("judge", d.now + 30_000) in effects
    [request] = only(effects, RequestJudge)
    assert isinstance(request, RequestJudge)
    assert request.topic == "Is a hot dog a sandwich?"
    assert len(request.turns) == 4


@pytest.mark.parametrize("final", [completed, cancelled])
def test_opened_in_a_final_state_does_nothing(final: object) -> None:
    d = final()  # type: ignore[operator]
    before = d.state
    assert d.open() == []
    assert d.state == before


# --------------------------------------------------------------------------- joining


def test_join_takes_seats_in_order_and_starts_when_full() -> None:
    d = lobby()
    effects = d.join("ann")
    [joined] = emitted(effects)
    assert isinstance(joined, ParticipantJoined)
    assert (joined.agent_id, joined.position, joined.team_id) == ("ann", 1, None)
    assert ReplyAck("conn-ann", None, joined.seq) in effects
    assert ArmTimer("lobby", T0 + 600_000) in effects

    d.advance(100)
    effects = d.join("bob")
    joined, changed = emitted(effects)
    assert isinstance(joined, ParticipantJoined) and joined.position == 2
    assert isinstance(changed, StateChanged)
    assert (changed.status, changed.previous) == (Status.STARTING, Status.LOBBY)
    assert CancelTimer("lobby") in effects
    assert ArmTimer("start", d.now + 10_000) in effects
    assert d.status() == Status.STARTING
    assert d.timer("lobby") is None


def test_join_resets_the_lobby_idle_timer() -> None:
    d = lobby(FFA)
    first_deadline = d.timer("lobby")
    d.advance(500_000)
    d.join("p1")
    assert d.timer("lobby") == d.now + 600_000
    d.now = first_deadline  # type: ignore[assignment]
    assert d.send(TimerFired("lobby", d.now)) == []  # early for the new deadline: stale
    assert d.status() == Status.LOBBY


def test_rejoin_by_seated_agent_is_a_reconnect() -> None:
    d = lobby(FFA)
    d.join("p1")
    d.disconnect("p1")
    assert d.timer("grace:p1") is not None
    before_seq = d.state.last_seq
    effects = d.join("p1")
    assert emitted(effects) == []
    assert ReplyAck("conn-p1", None, None) in effects
    assert CancelTimer("grace:p1") in effects
    assert find_seat(d.state, "p1") is not None and d.state.away == ()
    assert d.state.last_seq == before_seq


def test_positions_stay_stable_after_a_leave() -> None:
    d = lobby(FFA)
    for agent in ("p1", "p2", "p3"):
        d.join(agent)
    d.leave("p2")
    d.join("p4")
    positions = {s.agent_id: s.position for s in d.state.seats}
    assert positions == {"p1": 1, "p3": 3, "p4": 4}


def test_join_while_starting_is_battle_full() -> None:
    d = seated()
    before = d.state
    d.join("carol")
    assert_rejected(d, before, ErrorCode.BATTLE_FULL)


@pytest.mark.parametrize("make", [started, voting, judging, completed, cancelled])
def test_join_after_start_by_a_stranger_is_invalid_state(make: object) -> None:
    d = make()  # type: ignore[operator]
    before = d.state
    d.join("carol")
    assert_rejected(d, before, ErrorCode.INVALID_STATE)


def test_join_after_start_by_a_seated_agent_reconnects() -> None:
    d = started()
    d.disconnect("bob")
    effects = d.join("bob")
    assert emitted(effects) == []
    assert ReplyAck("conn-bob", None, None) in effects
    assert CancelTimer("grace:bob") in effects


def test_join_in_a_final_state_by_a_seated_agent_changes_nothing() -> None:
    d = completed()
    before = d.state
    assert d.join("ann") == [ReplyAck("conn-ann", None, None)]
    assert d.state == before


def test_head_to_head_ignores_team_ids() -> None:
    d = lobby()
    d.join("ann", "red")
    seat = find_seat(d.state, "ann")
    assert seat is not None and seat.team_id is None


def test_free_for_all_starts_only_when_every_seat_is_taken() -> None:
    d = lobby(FFA, max_participants=5)
    for agent in ("p1", "p2", "p3", "p4"):
        d.join(agent)
    assert d.status() == Status.LOBBY
    d.join("p5")
    assert d.status() == Status.STARTING


def test_free_for_all_plays_in_position_order() -> None:
    d = started(FFA)
    assert [s.agent_id for s in play_order(d.state)] == ["p1", "p2", "p3", "p4"]
    assert [turn_agent(d.state, n).agent_id for n in range(1, 9)] == ["p1", "p2", "p3", "p4"] * 2


# --------------------------------------------------------------------------- teams


def test_team_join_with_explicit_teams() -> None:
    d = lobby(TEAM)
    effects = d.join("x", "red")
    [joined] = emitted(effects)
    assert isinstance(joined, ParticipantJoined) and joined.team_id == "red"
    d.join("y", "blue")
    assert team_ids(d.state) == ("red", "blue")
    before = d.state
    d.join("z", "green")
    assert_rejected(d, before, ErrorCode.BAD_MESSAGE)


def test_team_join_to_a_full_team_is_battle_full() -> None:
    d = lobby(TEAM)
    d.join("x1", "red")
    d.join("x2", "red")
    before = d.state
    d.join("x3", "red")
    assert_rejected(d, before, ErrorCode.BATTLE_FULL)


def test_team_join_without_team_goes_to_the_smaller_team() -> None:
    d = lobby(TEAM)
    d.join("x1")
    d.join("x2")
    d.join("x3")
    teams = {s.agent_id: s.team_id for s in d.state.seats}
    assert teams == {"x1": "A", "x2": "B", "x3": "A"}


def test_team_auto_assignment_uses_claimed_ids() -> None:
    d = lobby(TEAM)
    d.join("x1", "red")
    d.join("x2")  # red has one member, the other (default) team none
    d.join("x3", "red")
    d.join("x4")
    teams = {s.agent_id: s.team_id for s in d.state.seats}
    assert teams == {"x1": "red", "x2": "A", "x3": "red", "x4": "A"}
    assert d.status() == Status.STARTING


def test_team_custom_ids_then_auto_assignment() -> None:
    d = lobby(TEAM)
    d.join("x1", "red")
    d.join("x2", "blue")
    d.join("x3")
    seat = find_seat(d.state, "x3")
    assert seat is not None and seat.team_id == "red"


def test_team_play_order_alternates_teams() -> None:
    d = lobby(TEAM)
    for agent, team in (("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")):
        d.join(agent, team)
    d.fire("start")
    assert [s.agent_id for s in play_order(d.state)] == ["a1", "b1", "a2", "b2"]
    [started_event] = [e for e in d.log if isinstance(e, TurnStarted)]
    assert started_event.agent_id == "a1"


def test_team_battle_starts_only_when_both_teams_are_full() -> None:
    d = lobby(TEAM, max_participants=6)
    for agent, team in (("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("b2", "B")):
        d.join(agent, team)
    assert d.status() == Status.LOBBY
    d.join("b3")
    assert d.status() == Status.STARTING


# --------------------------------------------------------------------------- leaving


def test_leave_in_lobby_frees_the_seat() -> None:
    d = lobby(FFA)
    d.join("p1")
    d.advance(1_000)
    effects = d.leave("p1")
    [left] = emitted(effects)
    assert isinstance(left, ParticipantLeft) and (left.agent_id, left.position) == ("p1", 1)
    assert ReplyAck("conn-p1", "leave-1", left.seq) in effects
    assert ArmTimer("lobby", d.now + 600_000) in effects
    assert d.state.seats == ()


def test_leave_while_starting_returns_to_lobby() -> None:
    d = seated()
    effects = d.leave("bob")
    left, changed = emitted(effects)
    assert isinstance(left, ParticipantLeft)
    assert isinstance(changed, StateChanged)
    assert (changed.status, changed.previous, changed.reason) == (
        Status.LOBBY,
        Status.STARTING,
        "participant left",
    )
    assert CancelTimer("start") in effects
    assert ArmTimer("lobby", d.now + 600_000) in effects
    assert d.status() == Status.LOBBY
    d.join("carol")
    assert d.status() == Status.STARTING


def test_leave_by_a_stranger_is_not_found() -> None:
    d = lobby()
    before = d.state
    d.leave("nobody")
    assert_rejected(d, before, ErrorCode.NOT_FOUND)


def test_head_to_head_leave_in_progress_is_a_forfeit_win() -> None:
    d = started()
    d.advance(2_000)
    effects = d.leave("bob")  # ann is to speak
    left, result, changed = emitted(effects)
    assert isinstance(left, ParticipantLeft) and left.agent_id == "bob"
    assert isinstance(result, Result)
    assert result.winner_id == "ann" and result.decided_by == "forfeit"
    assert "forfeit" in result.reasoning
    assert result.tally == {"ann": 0, "bob": 0}
    assert isinstance(changed, StateChanged) and changed.status == Status.COMPLETED
    assert ReplyAck("conn-bob", "leave-1", left.seq) in effects
    assert d.state.timers == ()
    assert d.state.winner_id == "ann"


def test_head_to_head_leave_on_own_turn_skips_it_then_forfeits() -> None:
    d = started()
    effects = d.leave("ann")
    assert event_types(effects) == [ParticipantLeft, TurnSkipped, Result, StateChanged]
    skipped = emitted(effects)[1]
    assert isinstance(skipped, TurnSkipped)
    assert (skipped.turn_number, skipped.agent_id, skipped.reason) == (1, "ann", "forfeit")
    assert d.state.winner_id == "bob"


def test_free_for_all_forfeit_skips_the_leavers_later_turns() -> None:
    d = started(FFA)
    d.leave("p2")  # while p1 speaks
    assert d.status() == Status.IN_PROGRESS
    effects = d.submit()  # p1's turn 1; turn 2 (p2) is skipped at once, p3 starts turn 3
    assert event_types(effects) == [TurnPlayed, TurnSkipped, TurnStarted]
    skipped, begun = emitted(effects)[1:]
    assert isinstance(skipped, TurnSkipped) and skipped.reason == "forfeit"
    assert isinstance(begun, TurnStarted) and (begun.turn_number, begun.agent_id) == (3, "p3")


def test_free_for_all_leave_on_own_turn_moves_on() -> None:
    d = started(FFA)
    effects = d.leave("p1")
    assert event_types(effects) == [ParticipantLeft, TurnSkipped, TurnStarted]
    assert d.state.current_turn == 2
    assert ReplyAck("conn-p1", "leave-1", emitted(effects)[0].seq) in effects


def test_free_for_all_last_one_standing_wins_by_forfeit() -> None:
    d = started(FFA)
    d.leave("p2")
    d.leave("p3")
    assert d.status() == Status.IN_PROGRESS
    effects = d.leave("p1")  # p1 was speaking: skipped, then p4 is alone
    assert event_types(effects) == [ParticipantLeft, TurnSkipped, Result, StateChanged]
    assert d.status() == Status.COMPLETED
    assert d.state.winner_id == "p4"


def test_team_forfeit_needs_a_whole_team_to_leave() -> None:
    d = started(TEAM)
    d.leave("b1")
    assert d.status() == Status.IN_PROGRESS
    effects = d.leave("b2")
    result = next(e for e in emitted(effects) if isinstance(e, Result))
    assert result.winning_team_id == "A" and result.winner_id is None
    assert result.decided_by == "forfeit"
    assert d.status() == Status.COMPLETED
    assert d.state.winning_team_id == "A"


def test_team_forfeited_member_turns_are_skipped() -> None:
    d = started(TEAM)
    d.leave("a2")
    d.play_all_turns()
    skipped = [e for e in d.log if isinstance(e, TurnSkipped)]
    assert [(e.turn_number, e.agent_id, e.reason) for e in skipped] == [
        (3, "a2", "forfeit"),
        (7, "a2", "forfeit"),
    ]
    assert d.status() == Status.VOTING


def test_second_leave_after_forfeit_is_acked_without_events() -> None:
    d = started(FFA)
    d.leave("p3")
    before = d.state
    effects = d.leave("p3")
    assert effects == [ReplyAck("conn-p3", "leave-1", None)]
    assert d.state == before


def test_leave_in_voting_marks_forfeit_but_voting_goes_on() -> None:
    d = voting()
    effects = d.leave("bob")
    assert event_types(effects) == [ParticipantLeft]
    seat = find_seat(d.state, "bob")
    assert seat is not None and seat.forfeited
    assert d.status() == Status.VOTING
    d.vote("bob", "k1")  # still a valid target
    d.fire("vote")
    assert d.status() == Status.JUDGING


def test_leave_in_judging_changes_nothing_in_the_outcome_flow() -> None:
    d = judging()
    d.leave("ann")
    assert d.status() == Status.JUDGING
    d.send(JudgeAnswered("ann", "Still better.", d.now))
    assert d.state.winner_id == "ann"


def test_leave_in_a_final_state_is_acked_without_change() -> None:
    d = completed()
    before = d.state
    assert d.leave("bob") == [ReplyAck("conn-bob", "leave-1", None)]
    assert d.state == before


# --------------------------------------------------------------------------- disconnects


def test_disconnect_arms_grace_and_reconnect_cancels_it() -> None:
    d = lobby(FFA)
    d.join("p1")
    effects = d.disconnect("p1")
    assert effects == [ArmTimer("grace:p1", d.now + 30_000)]
    assert d.state.away == ("p1",)
    effects = d.reconnect("p1")
    assert effects == [CancelTimer("grace:p1")]
    assert not d.state.away
    assert d.send(TimerFired("grace:p1", d.now + 30_000)) == []  # cancelled: stale


def test_second_disconnect_keeps_the_first_grace_deadline() -> None:
    d = started()
    d.disconnect("bob")
    deadline = d.timer("grace:bob")
    d.advance(10_000)
    before = d.state
    assert d.disconnect("bob") == []
    assert d.timer("grace:bob") == deadline
    assert d.state == before


def test_disconnect_of_a_stranger_is_ignored() -> None:
    d = started()
    before = d.state
    assert d.disconnect("nobody") == []
    assert d.reconnect("nobody") == []
    assert d.state == before


def test_grace_expiry_in_lobby_frees_the_seat() -> None:
    d = lobby(FFA)
    d.join("p1")
    d.disconnect("p1")
    effects = d.fire("grace:p1")
    assert event_types(effects) == [ParticipantLeft]
    assert d.state.seats == ()
    assert d.timer("lobby") == d.now + 600_000


def test_grace_expiry_while_starting_returns_to_lobby() -> None:
    d = seated()
    d.disconnect("ann")
    effects = d.fire("grace:ann")
    assert event_types(effects) == [ParticipantLeft, StateChanged]
    changed = emitted(effects)[1]
    assert isinstance(changed, StateChanged) and changed.reason == "participant disconnected"
    assert d.status() == Status.LOBBY
    assert d.timer("start") is None


def test_grace_expiry_in_progress_forfeits() -> None:
    d = started()
    d.disconnect("bob")
    effects = d.fire("grace:bob")
    assert event_types(effects)[0] is ParticipantLeft
    assert d.status() == Status.COMPLETED
    assert d.state.winner_id == "ann"


def test_grace_expiry_after_play_ended_does_nothing() -> None:
    d = started()
    d.disconnect("bob")
    d.play_all_turns()  # bob's turns are submitted anyway in this test
    assert d.status() == Status.VOTING
    before_events = len(d.log)
    assert emitted(d.fire("grace:bob")) == []
    assert len(d.log) == before_events
    assert d.status() == Status.VOTING


def test_disconnect_in_voting_arms_no_grace() -> None:
    d = voting()
    assert d.disconnect("bob") == []
    assert d.state.away == ("bob",)


def test_turn_timeout_of_a_disconnected_agent_says_disconnected() -> None:
    d = started()
    d.disconnect("ann")
    effects = d.fire("turn")
    skipped = emitted(effects)[0]
    assert isinstance(skipped, TurnSkipped) and skipped.reason == "disconnected"


def test_disconnect_and_reconnect_in_a_final_state_do_nothing() -> None:
    d = completed()
    before = d.state
    assert d.disconnect("ann") == []
    assert d.reconnect("ann") == []
    assert d.state == before


# --------------------------------------------------------------------------- turns


@pytest.mark.parametrize("mode", ALL_MODES)
def test_start_timer_begins_turn_one(mode: Mode) -> None:
    d = seated(mode)
    effects = d.fire("start")
    changed, begun = emitted(effects)
    assert isinstance(changed, StateChanged)
    assert (changed.status, changed.previous) == (Status.IN_PROGRESS, Status.STARTING)
    assert isinstance(begun, TurnStarted)
    assert (begun.turn_number, begun.agent_id) == (1, PLAY_ORDER[mode][0])
    assert begun.deadline_at == d.now + 30_000
    assert ArmTimer("turn", d.now + 30_000) in effects
    assert (d.state.current_turn, d.state.turn_started_at) == (1, d.now)
    assert d.state.turn_deadline_at == d.now + 30_000


def test_accepted_turn_is_played_acked_commented_and_the_next_begins() -> None:
    d = started()
    d.advance(4_200)
    effects = d.submit("ann", 1, "Bread around a filling: a sandwich.")
    played, begun = emitted(effects)
    assert isinstance(played, TurnPlayed)
    assert (played.turn_number, played.agent_id, played.duration_ms) == (1, "ann", 4_200)
    assert played.content == "Bread around a filling: a sandwich."
    assert isinstance(begun, TurnStarted) and (begun.turn_number, begun.agent_id) == (2, "bob")
    assert ReplyAck("conn-ann", "t1", played.seq) in effects
    assert ArmTimer("turn", d.now + 30_000) in effects
    [request] = only(effects, RequestCommentary)
    assert request == RequestCommentary(1, "ann", "Bread around a filling: a sandwich.", ())
    effects = d.submit("bob", 2, "A taco is not.")
    [request] = only(effects, RequestCommentary)
    assert isinstance(request, RequestCommentary)
    assert request.previous == (
        TranscriptTurn(1, "ann", "Bread around a filling: a sandwich.", None),
    )


def test_effects_are_ordered_events_replies_timers_requests() -> None:
    d = started()
    effects = d.submit()
    kinds = [type(e) for e in effects]
    assert kinds == [Emit, Emit, ReplyAck, ArmTimer, RequestCommentary]


def test_no_commentary_request_when_the_commentator_is_off() -> None:
    d = started(enable_commentator=False)
    assert only(d.submit(), RequestCommentary) == []


def test_turn_by_the_wrong_agent_is_not_your_turn() -> None:
    d = started()
    before = d.state
    d.submit("bob", 1)
    assert_rejected(d, before, ErrorCode.NOT_YOUR_TURN)


def test_turn_with_the_wrong_number_is_wrong_turn() -> None:
    d = started()
    before = d.state
    d.submit("ann", 3)
    assert_rejected(d, before, ErrorCode.WRONG_TURN)


def test_turn_by_a_stranger_is_forbidden() -> None:
    d = started()
    before = d.state
    d.submit("mallory", 1)
    assert_rejected(d, before, ErrorCode.FORBIDDEN)


@pytest.mark.parametrize("make", [lobby, seated, voting, judging, completed, cancelled])
def test_turn_outside_play_is_invalid_state(make: object) -> None:
    d = make()  # type: ignore[operator]
    before = d.state
    d.submit("ann", 99, "late")
    assert_rejected(d, before, ErrorCode.INVALID_STATE)


def test_repeat_turn_is_acked_with_the_original_seq_and_never_stored_twice() -> None:
    d = started()
    d.submit("ann", 1, "first")
    seq = d.log[-2].seq
    before = d.state
    effects = d.submit("ann", 1, "first")
    assert effects == [ReplyAck("conn-ann", "t1", seq)]
    assert d.state == before
    assert d.submit("ann", 1, "different text") == [ReplyAck("conn-ann", "t1", seq)]


@pytest.mark.parametrize("make", [voting, judging])
def test_repeat_turn_is_acked_even_after_play_ended(make: object) -> None:
    d = make()  # type: ignore[operator]
    played = next(e for e in d.log if isinstance(e, TurnPlayed))
    effects = d.submit(played.agent_id, played.turn_number, played.content)
    assert effects == [ReplyAck(f"conn-{played.agent_id}", "t1", played.seq)]


def test_repeat_turn_is_acked_in_a_final_state() -> None:
    d = completed()
    played = next(e for e in d.log if isinstance(e, TurnPlayed) and e.turn_number == 2)
    before = d.state
    assert d.submit("bob", 2, "x") == [ReplyAck("conn-bob", "t2", played.seq)]
    assert d.state == before


def test_a_skipped_turn_cannot_be_played_late() -> None:
    d = started()
    d.fire("turn")  # ann's turn 1 times out
    before = d.state
    d.submit("ann", 1)
    assert_rejected(d, before, ErrorCode.NOT_YOUR_TURN)


def test_turn_timeout_skips_and_moves_on() -> None:
    d = started()
    effects = d.fire("turn")
    skipped, begun = emitted(effects)
    assert isinstance(skipped, TurnSkipped)
    assert (skipped.turn_number, skipped.agent_id, skipped.reason) == (1, "ann", "timeout")
    assert isinstance(begun, TurnStarted) and begun.turn_number == 2


def test_turn_timer_of_a_played_turn_is_stale() -> None:
    d = started()
    old_deadline = d.state.turn_deadline_at
    d.advance(1_000)
    d.submit()
    before = d.state
    assert d.send(TimerFired("turn", old_deadline)) == []  # type: ignore[arg-type]
    assert d.state == before


def test_early_timer_is_stale() -> None:
    d = started()
    before = d.state
    assert d.send(TimerFired("turn", d.now + 1)) == []
    assert d.state == before


def test_unknown_timer_is_stale() -> None:
    d = started()
    before = d.state
    assert d.send(TimerFired("bogus", d.now + 10**9)) == []
    assert d.state == before


def test_turns_cycle_through_the_play_order() -> None:
    d = started(max_turns=5)
    d.play_all_turns()
    speakers = [e.agent_id for e in d.log if isinstance(e, TurnPlayed)]
    assert speakers == ["ann", "bob", "ann", "bob", "ann"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_after_the_last_turn_voting_starts(mode: Mode) -> None:
    d = started(mode)
    while d.state.current_turn < d.state.config.max_turns:
        d.submit()
    effects = d.submit()
    assert event_types(effects) == [TurnPlayed, StateChanged, VotingStarted]
    voting_started = emitted(effects)[2]
    assert isinstance(voting_started, VotingStarted)
    assert voting_started.deadline_at == d.now + 30_000
    assert CancelTimer("turn") in effects
    assert ArmTimer("vote", d.now + 30_000) in effects
    assert d.status() == Status.VOTING
    assert d.timer("turn") is None


# --------------------------------------------------------------------------- commentary


def test_commentary_for_a_played_turn_is_emitted_once() -> None:
    d = started()
    d.submit()
    effects = d.send(CommentaryReady(1, "A bold opening.", d.now))
    [commentary] = emitted(effects)
    assert isinstance(commentary, Commentary)
    assert (commentary.turn_number, commentary.text) == (1, "A bold opening.")
    assert d.send(CommentaryReady(1, "Again?", d.now)) == []


def test_commentary_for_a_skipped_or_unplayed_turn_is_dropped() -> None:
    d = started()
    d.fire("turn")
    assert d.send(CommentaryReady(1, "Silence.", d.now)) == []
    assert d.send(CommentaryReady(2, "Not yet.", d.now)) == []


def test_commentary_arriving_during_voting_is_still_emitted() -> None:
    d = voting()
    [commentary] = emitted(d.send(CommentaryReady(4, "Closing words.", d.now)))
    assert isinstance(commentary, Commentary)


def test_commentary_after_the_end_is_dropped() -> None:
    d = completed()
    before = d.state
    assert d.send(CommentaryReady(1, "Too late.", d.now)) == []
    assert d.state == before


# --------------------------------------------------------------------------- votes


@pytest.mark.parametrize("make", [lobby, started, judging, completed, cancelled])
def test_vote_outside_voting_is_invalid_state(make: object) -> None:
    d = make()  # type: ignore[operator]
    before = d.state
    d.vote("ann", "k1")
    assert_rejected(d, before, ErrorCode.INVALID_STATE)


def test_audience_vote_is_recorded_acked_and_tallied_later() -> None:
    d = voting()
    effects = d.vote("ann", "k1", conn="spec-1")
    [record] = only(effects, RecordVote)
    assert isinstance(record, RecordVote)
    assert record.vote.target_agent_id == "ann" and record.vote.voter_id is None
    assert ReplyAck(None, "k1", None) in effects
    assert ArmTimer("tally", d.now + 1_000) in effects
    assert emitted(effects) == []
    assert d.state.tally_dirty

    d.advance(100)
    effects = d.vote("bob", "k2", voter="ann")
    assert only(effects, ArmTimer) == []  # the tally is already armed: coalesced

    effects = d.fire("tally")
    [tally_event] = emitted(effects)
    assert isinstance(tally_event, VoteTally)
    assert tally_event.counts == {"ann": 1, "bob": 1}
    assert tally_event.agent_counts == {"ann": 0, "bob": 1}
    assert tally_event.audience_counts == {"ann": 1, "bob": 0}
    assert not d.state.tally_dirty


def test_vote_for_a_stranger_is_not_found() -> None:
    d = voting()
    before = d.state
    d.vote("nobody", "k1")
    assert_rejected(d, before, ErrorCode.NOT_FOUND)


def test_agent_vote_by_a_non_participant_is_forbidden() -> None:
    d = voting()
    before = d.state
    d.vote("ann", "k1", voter="mallory")
    assert_rejected(d, before, ErrorCode.FORBIDDEN)


def test_self_vote_is_forbidden() -> None:
    d = voting()
    before = d.state
    d.vote("ann", "k1", voter="ann")
    assert_rejected(d, before, ErrorCode.FORBIDDEN)


def test_second_agent_vote_is_duplicate() -> None:
    d = voting(FFA)
    d.vote("p2", "k1", voter="p1")
    before = d.state
    d.vote("p3", "k2", voter="p1")
    assert_rejected(d, before, ErrorCode.DUPLICATE)


def test_second_audience_vote_from_one_connection_is_duplicate() -> None:
    d = voting()
    d.vote("ann", "k1", conn="spec-1")
    before = d.state
    d.vote("bob", "k2", conn="spec-1")
    assert_rejected(d, before, ErrorCode.DUPLICATE)
    d.vote("bob", "k3", conn="spec-2")
    assert tally(d.state) == {"ann": 1, "bob": 1}


def test_audience_votes_without_a_connection_are_only_deduplicated_by_key() -> None:
    d = voting()
    d.vote("ann", "k1")
    d.vote("ann", "k2")
    assert tally(d.state) == {"ann": 2, "bob": 0}


def test_same_idempotency_key_gets_the_first_answer_again() -> None:
    d = voting()
    d.vote("ann", "k1", voter="bob")
    before = d.state
    assert d.vote("ann", "k1", voter="bob") == [ReplyAck(None, "k1", None)]
    assert d.state == before
    d.fire("vote")
    assert d.vote("ann", "k1", voter="bob") == [ReplyAck(None, "k1", None)]


def test_votes_for_a_forfeited_agent_count() -> None:
    d = voting(FFA)
    d.leave("p2")
    d.vote("p2", "k1", voter="p1")
    assert tally(d.state)["p2"] == 1


# --------------------------------------------------------------------------- judging


def test_vote_deadline_flushes_the_tally_and_asks_the_judge() -> None:
    d = voting()
    d.vote("ann", "k1", voter="bob")
    effects = d.fire("vote")
    assert event_types(effects) == [VoteTally, StateChanged]
    changed = emitted(effects)[1]
    assert isinstance(changed, StateChanged)
    assert (changed.status, changed.previous) == (Status.JUDGING, Status.VOTING)
    assert CancelTimer("tally") in effects
    assert ArmTimer("judge", d.now + 30_000) in effects
    [request] = only(effects, RequestJudge)
    assert isinstance(request, RequestJudge)
    assert request.mode == H2H
    assert [s.agent_id for s in request.seats] == ["ann", "bob"]
    assert request.turns == transcript(d.state)
    assert request.agent_tally == {"ann": 1, "bob": 0}
    assert request.audience_tally == {"ann": 0, "bob": 0}
    assert effects[-1] == request


def test_vote_deadline_without_votes_emits_no_tally() -> None:
    d = voting()
    assert event_types(d.fire("vote")) == [StateChanged]


def test_judge_answer_completes_the_battle() -> None:
    d = judging()
    d.vote("ann", "late", conn="x")  # refused: not VOTING
    effects = d.send(JudgeAnswered("bob", "Bob cited sources.", d.now, decided_by="judge-v1"))
    result, changed = emitted(effects)
    assert isinstance(result, Result)
    assert (result.winner_id, result.reasoning, result.decided_by) == (
        "bob",
        "Bob cited sources.",
        "judge-v1",
    )
    assert result.tally == {"ann": 0, "bob": 0}
    assert isinstance(changed, StateChanged)
    assert (changed.status, changed.previous) == (Status.COMPLETED, Status.JUDGING)
    assert CancelTimer("judge") in effects
    assert d.state.timers == ()
    assert (d.state.winner_id, d.state.reasoning) == ("bob", "Bob cited sources.")


def test_judge_may_declare_a_draw() -> None:
    d = judging()
    d.send(JudgeAnswered(None, "Evenly matched.", d.now))
    assert d.status() == Status.COMPLETED and d.state.winner_id is None


def test_judge_answer_naming_a_stranger_falls_back_to_the_tally() -> None:
    d = judging()
    effects = d.send(JudgeAnswered("mallory", "?", d.now))
    result = emitted(effects)[0]
    assert isinstance(result, Result) and result.decided_by == "tally"
    assert "mallory" in result.reasoning and "Draw" in result.reasoning


def test_team_judge_naming_an_agent_implies_its_team() -> None:
    d = judging(TEAM)
    d.send(JudgeAnswered("b2", "Team B was sharper.", d.now))
    assert d.state.winning_team_id == "B"


def test_team_judge_naming_an_unknown_team_falls_back() -> None:
    d = judging(TEAM)
    d.send(JudgeAnswered(None, "?", d.now, winning_team_id="Z"))
    result = next(e for e in d.log if isinstance(e, Result))
    assert result.decided_by == "tally"


def test_judge_failure_decides_by_tally() -> None:
    d = voting()
    d.vote("bob", "k1", conn="s1")
    d.vote("bob", "k2", conn="s2")
    d.vote("ann", "k3", voter="bob")
    d.fire("vote")
    effects = d.send(JudgeFailed("HTTP 500", d.now))
    result = emitted(effects)[0]
    assert isinstance(result, Result)
    assert result.winner_id == "bob" and result.decided_by == "tally"
    assert "judge failed" in result.reasoning and "tally" in result.reasoning
    assert result.tally == {"ann": 1, "bob": 2}
    assert d.status() == Status.COMPLETED


def test_judge_timeout_decides_by_tally() -> None:
    d = judging()
    effects = d.fire("judge")
    result = emitted(effects)[0]
    assert isinstance(result, Result)
    assert "timed out" in result.reasoning and "Draw" in result.reasoning
    assert result.winner_id is None
    assert d.status() == Status.COMPLETED


def test_a_tied_tally_is_a_draw_never_a_win_by_position() -> None:
    d = voting()
    d.vote("bob", "k1", voter="ann")
    d.vote("ann", "k2", voter="bob")
    d.fire("vote")
    d.send(JudgeFailed("down", d.now))
    assert d.state.winner_id is None and d.state.winning_team_id is None
    assert d.state.reasoning is not None and "Draw" in d.state.reasoning


def test_judge_answers_outside_judging_are_ignored() -> None:
    d = voting()
    before = d.state
    assert d.send(JudgeAnswered("ann", "early", d.now)) == []
    assert d.send(JudgeFailed("early", d.now)) == []
    assert d.state == before
    c = completed()
    before = c.state
    assert c.send(JudgeAnswered("bob", "late", c.now)) == []
    assert c.state == before


def test_without_a_judge_the_tally_decides_at_once() -> None:
    d = voting(FFA, enable_judge=False)
    d.vote("p3", "k1", voter="p1")
    effects = d.fire("vote")
    assert event_types(effects) == [VoteTally, StateChanged, Result, StateChanged]
    assert only(effects, RequestJudge) == []
    assert d.status() == Status.COMPLETED
    assert d.state.winner_id == "p3"
    assert d.state.timers == ()


def test_team_tally_sums_per_team() -> None:
    d = voting(TEAM, enable_judge=False)
    d.vote("b1", "k1", voter="a1")
    d.vote("b2", "k2", voter="a2")
    d.vote("a1", "k3", voter="b1")
    d.fire("vote")
    assert d.state.winning_team_id == "B" and d.state.winner_id is None
    assert d.state.reasoning is not None and "Team B" in d.state.reasoning


def test_team_tie_is_a_draw() -> None:
    d = voting(TEAM, enable_judge=False)
    d.vote("b1", "k1", voter="a1")
    d.vote("a2", "k2", voter="b2")
    d.fire("vote")
    assert d.state.winning_team_id is None and d.state.winner_id is None


def test_decide_by_votes_with_no_votes_is_a_draw() -> None:
    d = voting(FFA)
    assert decide_by_votes(d.state) == (None, None, "Draw: no votes were cast.")


# --------------------------------------------------------------------------- cancel and finality


@pytest.mark.parametrize("make", [lobby, seated, started, voting, judging])
def test_cancel_from_any_live_state(make: object) -> None:
    d = make()  # type: ignore[operator]
    previous = d.state.status
    armed = [name for name, _ in d.state.timers]
    effects = d.send(Cancel("room closed by admin", d.now))
    [changed] = emitted(effects)
    assert isinstance(changed, StateChanged)
    assert (changed.status, changed.previous, changed.reason) == (
        Status.CANCELLED,
        previous,
        "room closed by admin",
    )
    assert sorted(e.name for e in effects if isinstance(e, CancelTimer)) == sorted(armed)
    assert d.state.timers == ()


@pytest.mark.parametrize("make", [completed, cancelled])
def test_final_states_never_change(make: object) -> None:
    d = make()  # type: ignore[operator]
    before = d.state
    inputs: list[Input] = [
        Opened(d.now),
        Cancel("again", d.now),
        Disconnect("ann", d.now),
        Reconnect("ann", d.now),
        TimerFired("turn", d.now + 10**9),
        TimerFired("lobby", d.now + 10**9),
        CommentaryReady(1, "late", d.now),
        JudgeAnswered("ann", "late", d.now),
        JudgeFailed("late", d.now),
    ]
    for inp in inputs:
        assert d.send(inp) == []
        assert d.state == before


# --------------------------------------------------------------------------- whole games


@pytest.mark.parametrize("mode", ALL_MODES)
def test_full_game_to_completed(mode: Mode) -> None:
    d = started(mode)
    d.play_all_turns()
    agents = PLAY_ORDER[mode]
    d.vote(agents[1], "k1", voter=agents[0])
    d.vote(agents[1], "k2", conn="spectator-1")
    d.fire("tally")
    d.fire("vote")
    [request] = only(d.effects, RequestJudge)
    assert isinstance(request, RequestJudge) and len(request.turns) == d.state.config.max_turns
    team = team_of(agents[1]) if mode == TEAM else None
    winner = None if mode == TEAM else agents[1]
    d.send(JudgeAnswered(winner, "Clear and concise.", d.now, winning_team_id=team))
    assert d.status() == Status.COMPLETED
    assert (d.state.winner_id, d.state.winning_team_id) == (winner, team)
    statuses = [e.status for e in d.log if isinstance(e, StateChanged)]
    assert statuses == [
        Status.STARTING,
        Status.IN_PROGRESS,
        Status.VOTING,
        Status.JUDGING,
        Status.COMPLETED,
    ]
    assert [e.seq for e in d.log] == list(range(1, len(d.log) + 1))
    assert d.state.timers == ()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_full_game_where_nobody_speaks_or_votes_is_a_draw(mode: Mode) -> None:
    d = started(mode)
    while d.state.status == Status.IN_PROGRESS:
        d.fire("turn")
    skipped = [e.turn_number for e in d.log if isinstance(e, TurnSkipped)]
    assert skipped == list(range(1, d.state.config.max_turns + 1))
    d.fire("vote")
    d.fire("judge")
    assert d.status() == Status.COMPLETED
    assert d.state.winner_id is None and d.state.winning_team_id is None
    [result] = [e for e in d.log if isinstance(e, Result)]
    assert "Draw" in result.reasoning


def test_full_game_with_a_reconnect_mid_battle() -> None:
    d = started()
    d.submit()
    d.disconnect("ann")
    d.advance(10_000)
    d.submit()  # bob's turn 2
    d.reconnect("ann")
    assert d.timer("grace:ann") is None
    d.play_all_turns()
    d.fire("vote")
    d.send(JudgeAnswered("ann", "Came back strong.", d.now))
    assert d.state.winner_id == "ann"
    assert not any(isinstance(e, ParticipantLeft) for e in d.log)
