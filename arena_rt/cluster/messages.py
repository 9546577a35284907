"""What nodes say to each other over Redis (never seen by clients).

Every message names its sender and the time it was sent and travels signed (see
:mod:`arena_rt.cluster.relay`). A request carries a correlation id and the fencing token of the
lease the sender believes the owner holds; the owner refuses one whose token is not its own.
"""

from __future__ import annotations

import msgspec

from arena_rt.battle.calls import AnyCall


class Message(msgspec.Struct, tag_field="kind", kw_only=True):
    sender: str  # node id
    sent_at: int  # ms since the epoch, the sender's clock


class Request(Message, tag="request"):
    corr: str
    to: str
    battle_id: str
    token: int
    call: AnyCall


class Reply(Message, tag="reply"):
    corr: str
    to: str
    ok: bool
    code: str | None = None  # an ErrorCode when not ok
    message: str = ""
    seq: int | None = None
    # JoinCall only: the seat, and the seq the agent's events start after.
    position: int | None = None
    team_id: str | None = None
    before_seq: int | None = None
    # VoteCall only: the target the vote's idempotency key recorded (a repeat's first answer).
    recorded_target: str | None = None


class Kick(Message, tag="kick"):
    """Close that socket (its agent connected again elsewhere: 4000 replaced)."""

    to: str
    peer: str
    code: int
    reason: str


# --------------------------------------------------------------------------- broadcasts


class Owned(Message, tag="owned"):
    """The sender runs this battle now: sessions elsewhere re-attach to it."""

    battle_id: str
    token: int


class Handoff(Message, tag="handoff"):
    """The sender is draining and released these battles: claim them now."""

    battle_ids: list[str]


AnyMessage = Request | Reply | Kick | Owned | Handoff
message_decoder = msgspec.json.Decoder(AnyMessage)
