"""Any node takes any socket: a session's calls go to the battle's runner wherever it runs.

On the node that runs the battle a call is performed directly. Elsewhere it is forwarded to
the owner over the relay (the agent's identity already authenticated here) and the owner's
answer comes back the same way, so the agent sees the same frames and errors as on the owner.
A call follows the battle across a takeover or a hand-off: when the owner is gone (nobody
listens on its channel, its lease lapsed, it says the battle moved) the gateway asks again
who runs the battle — taking it itself when nobody does — until ``forward_timeout_ms``; only
then is the answer ``not_owner``.

Sessions on this node are remembered per battle, so that when another node announces it runs
the battle now (failover, drain), each re-attaches to it at once and keeps its seat.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from arena_rt.battle.calls import AnyCall, DetachCall, JoinCall
from arena_rt.battle.clock import Clock
from arena_rt.battle.ownership import Holder
from arena_rt.battle.runner import Peer
from arena_rt.battle.session import MOVED, Answer, perform, refused
from arena_rt.battle.supervisor import NotOwner, Supervisor
from arena_rt.cluster.messages import Handoff, Kick, Owned, Reply, Request
from arena_rt.cluster.relay import Relay, Undelivered
from arena_rt.errors import ArenaError
from arena_rt.protocol import ErrorCode
from arena_rt.store.models import Battle

log = logging.getLogger("arena_rt.gateway")

ATTEMPT_S = 3.0  # one forward's wait for its reply before asking again who runs the battle
RETRY_S = (0.05, 0.25)  # pause between attempts while a battle changes hands
OWNER_CACHE_SIZE = 10_000  # battles whose owner this node remembers
HANDOFF_JITTER_S = 0.05  # peers claiming a drained node's battles don't all race at once


class RemotePeer:
    """A socket on another node, as this node's runner sees it. Answers travel back as
    replies to the forwarded calls; a kick (4000 replaced) is sent to its node."""

    __slots__ = ("_gateway", "id", "node")

    def __init__(self, peer_id: str, node: str, gateway: Gateway) -> None:
        self.id = peer_id
        self.node = node
        self._gateway = gateway

    def kick(self, code: int, reason: str) -> None:
        self._gateway.kick_remote(self.node, self.id, code, reason)


@dataclass(slots=True)
class _Session:
    battle: Battle
    agent_id: str
    team_id: str | None
    peer: Peer
    token: int = -1  # the lease token of the owner it is attached to


class Gateway:
    def __init__(
        self,
        supervisor: Supervisor,
        relay: Relay | None,
        clock: Clock,
        forward_timeout_ms: int,
    ) -> None:
        self._supervisor = supervisor
        self._relay = relay
        self._clock = clock
        self._timeout_s = forward_timeout_ms / 1000
        self._owners: dict[str, Holder] = {}  # battle -> who ran it when last asked
        self._sessions: dict[str, dict[str, _Session]] = {}  # battle -> peer id -> session
        self._peers: dict[str, Peer] = {}  # this node's agent sockets, for kicks
        self._work: set[asyncio.Task[Any]] = set()
        if relay is not None:
            relay.on_request = self._serve
            relay.on_kick = self._on_kick
            relay.on_owned = self._on_owned
            relay.on_handoff = self._on_handoff
            supervisor.on_owned = relay.announce_owned
            supervisor.on_handoff = relay.announce_handoff
            supervisor.count_nodes = relay.count_nodes

    @property
    def node_id(self) -> str:
        return self._relay.node_id if self._relay is not None else "local"

    async def stop(self) -> None:
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)

    # ----------------------------------------------------------------- sessions on this node

    async def join(self, battle: Battle, agent_id: str, team_id: str | None, peer: Peer) -> Answer:
        """Take (or re-take) the agent's seat; its session then follows the battle's owner."""
        session = _Session(battle, agent_id, team_id, peer)
        self._sessions.setdefault(battle.id, {})[peer.id] = session
        self._peers[peer.id] = peer
        answer = await self._attach(session)
        if not answer.ok:
            self._forget(session)
        return answer

    async def detach(self, battle: Battle, agent_id: str, peer: Peer) -> None:
        """The agent's socket closed: its seat's reconnect grace starts on the owner."""
        session = self._sessions.get(battle.id, {}).get(peer.id)
        if session is not None:
            self._forget(session)
        call = DetachCall(agent_id=agent_id, peer=peer.id)
        try:
            async with asyncio.timeout(ATTEMPT_S):
                await self._route(battle, call, peer, adopt=False)
        except (TimeoutError, ArenaError) as exc:  # the owner's grace timer starts anyway
            log.info(
                "detach of agent %s from battle %s not delivered: %s", agent_id, battle.id, exc
            )

    def _forget(self, session: _Session) -> None:
        sessions = self._sessions.get(session.battle.id)
        if sessions is not None:
            sessions.pop(session.peer.id, None)
            if not sessions:
                del self._sessions[session.battle.id]
        self._peers.pop(session.peer.id, None)

    async def _attach(self, session: _Session) -> Answer:
        call = JoinCall(agent_id=session.agent_id, peer=session.peer.id, team_id=session.team_id)
        answer, token = await self._route(session.battle, call, session.peer)
        if answer.ok:
            session.token = token
        return answer

    # ----------------------------------------------------------------- calls

    async def perform(self, battle: Battle, call: AnyCall, peer: Peer) -> Answer:
        """Carry out a session call wherever the battle runs; ``not_owner`` only when no
        owner could be reached within the forward timeout."""
        answer, _ = await self._route(battle, call, peer)
        return answer

    async def _route(
        self, battle: Battle, call: AnyCall, peer: Peer, *, adopt: bool = True
    ) -> tuple[Answer, int]:
        """Perform ``call`` where the battle runs; with ``adopt`` (every call but a detach)
        this node takes a battle that nobody runs, as any node contacted for it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        owner = "unknown"
        fault: Exception | None = None  # the database or Redis could not be reached
        while True:
            holder = self._owners.get(battle.id)
            if not adopt and holder is None and self._supervisor.live(battle.id) is None:
                try:
                    holder = await self._supervisor.holder(battle.id)
                except Exception as exc:
                    return refused(ErrorCode.UNAVAILABLE, f"could not reach Redis: {exc}"), -1
                if holder is None:
                    return Answer(True), -1  # nobody runs it: nothing to detach from
            if holder is None or holder.node_id == self.node_id:
                try:
                    runner = await self._supervisor.runner_for(battle)
                except NotOwner as exc:
                    holder = exc.holder
                    self._remember(battle.id, holder)
                except ArenaError as exc:  # a finished battle, a draining node
                    return refused(exc.code, exc.message), -1
                except Exception as exc:  # a lost connection: ask again until the deadline
                    fault = exc
                    log.warning("battle %s could not be loaded here: %r", battle.id, exc)
                    holder = None
                else:
                    answer = await perform(runner, call, peer, self._clock.now_ms())
                    if not answer.moved:
                        return answer, runner.lease.token
                    holder = None
            if holder is not None and holder.node_id != self.node_id:
                owner = holder.node_id
                forwarded = await self._forward(holder, battle.id, call, deadline - loop.time())
                if forwarded is not None and not forwarded.moved:
                    return forwarded, holder.token
                self._owners.pop(battle.id, None)  # ask again who runs it
            # A database or Redis fault is answered sooner than an owner that does not answer:
            # the client is told to retry rather than kept waiting.
            faulted_for = loop.time() - (deadline - self._timeout_s)
            if fault is not None and owner == "unknown" and faulted_for >= ATTEMPT_S:
                message = f"battle {battle.id} could not be loaded: {fault}; try again"
                return refused(ErrorCode.UNAVAILABLE, message), -1
            if loop.time() >= deadline:
                message = (
                    f"battle {battle.id} is run by node {owner}, which did not answer within "
                    f"{self._timeout_s:g} s; connect again"
                )
                return refused(ErrorCode.NOT_OWNER, message), -1
            await asyncio.sleep(random.uniform(*RETRY_S))

    def _remember(self, battle_id: str, holder: Holder) -> None:
        if len(self._owners) >= OWNER_CACHE_SIZE:
            self._owners.clear()  # a cache: a miss costs one Redis round trip
        self._owners[battle_id] = holder

    async def _forward(
        self, holder: Holder, battle_id: str, call: AnyCall, remaining_s: float
    ) -> Answer | None:
        if self._relay is None or remaining_s <= 0:
            return None
        timeout = min(ATTEMPT_S, remaining_s)
        result = await self._relay.request(holder.node_id, battle_id, holder.token, call, timeout)
        if isinstance(result, Undelivered):
            log.info(
                "forward to node %s for battle %s: %s", holder.node_id, battle_id, result.value
            )
            return None
        return _answer_of(result)

    # ----------------------------------------------------------------- the owner's side

    async def _serve(self, request: Request) -> Reply:
        assert self._relay is not None
        runner = self._supervisor.live(request.battle_id)
        if runner is None or runner.lease.token != request.token:
            if runner is not None:
                log.warning(
                    "refused a forward for battle %s with stale token %d (ours: %d) from node %s",
                    request.battle_id,
                    request.token,
                    runner.lease.token,
                    request.sender,
                )
            return self._relay.reply_to(request, **_reply_fields(MOVED))
        peer = RemotePeer(request.call.peer, request.sender, self)
        answer = await perform(runner, request.call, peer, self._clock.now_ms())
        return self._relay.reply_to(request, **_reply_fields(answer))

    def kick_remote(self, node: str, peer_id: str, code: int, reason: str) -> None:
        if self._relay is not None:
            self._spawn(self._relay.kick(node, peer_id, code, reason))

    # ----------------------------------------------------------------- announcements

    def _on_kick(self, kick: Kick) -> None:
        peer = self._peers.get(kick.peer)
        if peer is not None:
            peer.kick(kick.code, kick.reason)

    def _on_owned(self, owned: Owned) -> None:
        if owned.battle_id in self._owners or owned.battle_id in self._sessions:
            self._owners[owned.battle_id] = Holder(owned.sender, owned.token)
        for session in list(self._sessions.get(owned.battle_id, {}).values()):
            if session.token != owned.token:
                self._spawn(self._reattach(session))

    async def _reattach(self, session: _Session) -> None:
        answer = await self._attach(session)
        if not answer.ok:
            log.warning(
                "agent %s could not re-attach to battle %s: %s",
                session.agent_id,
                session.battle.id,
                answer.message,
            )

    def _on_handoff(self, handoff: Handoff) -> None:
        for battle_id in handoff.battle_ids:
            self._owners.pop(battle_id, None)
            self._spawn(self._claim(battle_id))

    async def _claim(self, battle_id: str) -> None:
        await asyncio.sleep(random.uniform(0, HANDOFF_JITTER_S))
        try:
            await self._supervisor.adopt(battle_id)
        except Exception as exc:  # the lease scan takes it on its next round
            log.warning("could not claim handed-off battle %s: %r", battle_id, exc)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)


def _answer_of(reply: Reply) -> Answer:
    return Answer(
        reply.ok,
        reply.code,
        reply.message,
        seq=reply.seq,
        position=reply.position,
        team_id=reply.team_id,
        before_seq=reply.before_seq,
        replay=True,  # this node's feed may lag the owner's: fetch what it has not seen
        recorded_target=reply.recorded_target,
    )


def _reply_fields(answer: Answer) -> dict[str, Any]:
    return {
        "ok": answer.ok,
        "code": answer.code,
        "message": answer.message,
        "seq": answer.seq,
        "position": answer.position,
        "team_id": answer.team_id,
        "before_seq": answer.before_seq,
        "recorded_target": answer.recorded_target,
    }
