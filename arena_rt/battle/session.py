"""The agent-session protocol against a battle's runner, wherever the socket is.

A session joins (takes or re-takes its seat, replacing an older socket of the same agent),
sends turns, votes and leaves, and detaches when its socket closes. The same function
performs a call for a socket on this node and for one on another node whose input was
forwarded here, so an agent gets the same answers on any node. It knows no sockets (a
:class:`~arena_rt.battle.runner.Peer` is all it needs) and no transport.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from arena_rt.battle.calls import AnyCall, DetachCall, JoinCall, LeaveCall, TurnCall, VoteCall
from arena_rt.battle.domain import CastVote, Disconnect, Join, Leave, ReplyError, SubmitTurn
from arena_rt.battle.machine import find_seat
from arena_rt.battle.runner import Busy, Peer, Runner, RunnerStopped
from arena_rt.errors import ArenaError, error_for
from arena_rt.protocol import CloseCode, ErrorCode

log = logging.getLogger("arena_rt.session")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a call came to: an ack (``ok``) or an error with its code, plus per-call details."""

    ok: bool
    code: str | None = None
    message: str = ""
    seq: int | None = None
    position: int | None = None  # join: the seat
    team_id: str | None = None
    before_seq: int | None = None  # join: the agent's events start after this seq
    replay: bool = True  # join: whether events up to now must be fetched (else all are live)
    recorded_target: str | None = None  # vote: the target its idempotency key recorded

    @property
    def error_code(self) -> ErrorCode:
        return ErrorCode(self.code or ErrorCode.INTERNAL)

    def as_error(self) -> ArenaError:
        """The refusal as the error HTTP and socket handlers raise (its code, its status)."""
        return error_for(self.error_code, self.message)

    @property
    def moved(self) -> bool:
        """The battle is not run here (any more): ask whoever runs it now."""
        return not self.ok and self.code == ErrorCode.NOT_OWNER


MOVED = Answer(False, ErrorCode.NOT_OWNER, "the battle is not run by this process")


def refused(code: ErrorCode, message: str) -> Answer:
    return Answer(False, code, message)


async def perform(runner: Runner, call: AnyCall, peer: Peer, now: int) -> Answer:
    """Carry out one session call on the runner that owns the battle."""
    try:
        match call:
            case JoinCall():
                return await _join(runner, call, peer, now)
            case TurnCall():
                assert call.agent_id is not None
                inp = SubmitTurn(
                    call.agent_id, call.turn_number, call.content, now, origin=peer.id, ref=call.ref
                )
                return _answer(await runner.call(inp))
            case VoteCall():
                vote = CastVote(
                    call.target_agent_id,
                    call.idempotency_key,
                    now,
                    voter_id=call.agent_id,
                    connection_id=call.connection_id,
                    origin=peer.id,
                    ref=call.ref,
                )
                answer = _answer(await runner.call(vote))
                if not answer.ok:
                    return answer
                recorded = next(
                    (v for v in runner.state.votes if v.idempotency_key == call.idempotency_key),
                    None,
                )
                target = recorded.target_agent_id if recorded else call.target_agent_id
                return Answer(True, seq=answer.seq, recorded_target=target)
            case LeaveCall():
                assert call.agent_id is not None
                return _answer(
                    await runner.call(Leave(call.agent_id, now, origin=peer.id, ref=call.ref))
                )
            case DetachCall():
                assert call.agent_id is not None
                if runner.detach_agent(call.agent_id, peer.id):
                    runner.submit_internal(Disconnect(call.agent_id, now))
                return Answer(True)
    except RunnerStopped:
        return MOVED
    except Busy as exc:
        return refused(ErrorCode.RATE_LIMITED, str(exc))
    except ArenaError as exc:
        return refused(exc.code, exc.message)


async def _join(runner: Runner, call: JoinCall, peer: Peer, now: int) -> Answer:
    assert call.agent_id is not None
    # Without `since`, the agent gets every event after this point: its own join and whatever
    # follows it, even those committed before its welcome is built. When the runner has
    # settled (no step being committed or published), every later event reaches a feed
    # attached before this call: nothing to replay.
    settled = runner.settled_seq
    before = runner.state.last_seq if settled is None else settled
    reply = await runner.call(Join(call.agent_id, now, team_id=call.team_id, origin=peer.id))
    if isinstance(reply, ReplyError):
        return refused(reply.code, reply.message)
    previous = runner.attach_agent(call.agent_id, peer)
    if previous is not None:
        previous.kick(CloseCode.REPLACED, "replaced")
    seat = find_seat(runner.state, call.agent_id)
    if seat is None:  # the join was acked, so the seat exists: a bug if not
        raise RuntimeError(f"agent {call.agent_id} joined without a seat")
    return Answer(
        True,
        position=seat.position,
        team_id=seat.team_id,
        before_seq=before,
        replay=settled is None,
    )


def _answer(reply: object) -> Answer:
    if isinstance(reply, ReplyError):
        return refused(reply.code, reply.message)
    seq = getattr(reply, "seq", None)
    return Answer(True, seq=seq)
