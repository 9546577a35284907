"""A session's calls on its battle: what an agent's (or a voter's) socket asks of the runner.

Plain data, encodable as it is: a socket on the battle's own node performs them directly, one
on another node forwards them to the owner (:mod:`arena_rt.cluster`).
"""

from __future__ import annotations

import msgspec


class Call(msgspec.Struct, tag_field="call", kw_only=True):
    agent_id: str | None = None  # authenticated by the node that holds the socket; None: audience
    peer: str  # the socket the answers are for


class JoinCall(Call, tag="join"):
    team_id: str | None = None


class TurnCall(Call, tag="turn"):
    turn_number: int
    content: str
    ref: str | None = None


class VoteCall(Call, tag="vote"):
    target_agent_id: str
    idempotency_key: str
    connection_id: str | None = None
    ref: str | None = None


class LeaveCall(Call, tag="leave"):
    ref: str | None = None


class DetachCall(Call, tag="detach"):
    """The agent's socket closed."""


AnyCall = JoinCall | TurnCall | VoteCall | LeaveCall | DetachCall
