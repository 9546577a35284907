"""Node-to-node messages over Redis pub/sub: signed, request/reply with correlation ids.

Each node listens on its own channel (``arena:<deployment>:node:<id>``: requests for battles it
owns, replies to its requests, kicks for its sockets) and on one channel for everyone
(``arena:<deployment>:cluster``: owner changes, hand-offs). ``<deployment>`` is derived from the
signing key, so deployments with different secrets sharing one Redis (staging beside
production, concurrent test runs) neither hear each other nor count each other's nodes.

A message is ``<hex HMAC-SHA256>`` + its JSON, keyed by a key derived from ``ARENA_SECRET``
(every node has it): a node refuses, and logs, a message that is unsigned or forged, older than
``MAX_AGE_MS``, addressed to another node, a request it has already seen (a replay) or a reply
to a request it did not make.

Pub/sub delivers at most once and only to who is listening: ``PUBLISH`` says how many
listeners got a request, so a request to a dead node is known undelivered at once rather than
after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from enum import Enum

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arena_rt.battle.calls import AnyCall
from arena_rt.cluster.messages import (
    AnyMessage,
    Handoff,
    Kick,
    Message,
    Owned,
    Reply,
    Request,
    message_decoder,
)

log = logging.getLogger("arena_rt.relay")

MAX_AGE_MS = 30_000  # older messages are refused (replays; a node whose clock is far off)
_SIG_LEN = 64  # hex digest of SHA-256
_RECONNECT_S = (0.05, 2.0)

RequestHandler = Callable[[Request], Awaitable[Reply]]
KickHandler = Callable[[Kick], None]
OwnedHandler = Callable[[Owned], None]
HandoffHandler = Callable[[Handoff], None]


class Undelivered(Enum):
    NO_LISTENER = "no_listener"  # nobody listens on the node's channel: it is gone
    TIMEOUT = "timeout"  # delivered, no reply in time


def relay_key(secret: str) -> bytes:
    """The signing key: derived from ``ARENA_SECRET``, never the secret itself."""
    return hmac.new(secret.encode(), b"arena-relay-v1", hashlib.sha256).digest()


def deployment_tag(key: bytes) -> str:
    """What the channels of the nodes sharing ``key`` are named by (not the key itself)."""
    return hmac.new(key, b"arena-relay-channels", hashlib.sha256).hexdigest()[:12]


def node_channel(key: bytes, node_id: str) -> str:
    return node_prefix(key) + node_id


def node_prefix(key: bytes) -> str:
    return f"arena:{deployment_tag(key)}:node:"


def cluster_channel(key: bytes) -> str:
    return f"arena:{deployment_tag(key)}:cluster"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Relay:
    def __init__(self, redis_url: str, node_id: str, key: bytes) -> None:
        self.node_id = node_id
        self._key = key
        self._redis = Redis.from_url(redis_url, client_name=f"arena-{node_id}:relay")
        self._node_prefix = node_prefix(key)  # named once: every message is sent on one
        self._channel = self._node_prefix + node_id
        self._cluster = cluster_channel(key)
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._seen: dict[str, int] = {}  # request corr -> when it may be forgotten (ms)
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._work: set[asyncio.Task[None]] = set()
        self.on_request: RequestHandler | None = None
        self.on_kick: KickHandler | None = None
        self.on_owned: OwnedHandler | None = None
        self.on_handoff: HandoffHandler | None = None
        self.refused = 0  # messages refused (forged, stale, misaddressed, replayed, unknown)

    # ----------------------------------------------------------------- lifetime

    async def start(self, timeout_s: float = 5.0) -> None:
        self._task = asyncio.create_task(self._listen(), name=f"relay-{self.node_id}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._listening.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        await self._redis.aclose()

    # ----------------------------------------------------------------- sending

    async def request(
        self, to: str, battle_id: str, token: int, call: AnyCall, timeout_s: float
    ) -> Reply | Undelivered:
        corr = secrets.token_hex(8)
        message = Request(
            sender=self.node_id,
            sent_at=_now_ms(),
            corr=corr,
            to=to,
            battle_id=battle_id,
            token=token,
            call=call,
        )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[corr] = future
        try:
            if not await self._send(self._node_prefix + to, message):
                return Undelivered.NO_LISTENER
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return Undelivered.TIMEOUT
        finally:
            self._pending.pop(corr, None)

    async def kick(self, to: str, peer: str, code: int, reason: str) -> None:
        kick = Kick(
            sender=self.node_id, sent_at=_now_ms(), to=to, peer=peer, code=code, reason=reason
        )
        await self._send(self._node_prefix + to, kick)

    async def announce_owned(self, battle_id: str, token: int) -> None:
        owned = Owned(sender=self.node_id, sent_at=_now_ms(), battle_id=battle_id, token=token)
        await self._send(self._cluster, owned)

    async def announce_handoff(self, battle_ids: list[str]) -> None:
        handoff = Handoff(sender=self.node_id, sent_at=_now_ms(), battle_ids=battle_ids)
        await self._send(self._cluster, handoff)

    async def count_nodes(self) -> int:
        """How many nodes are up: those listening on the cluster channel."""
        counts = await self._redis.pubsub_numsub(self._cluster)
        return max(1, int(counts[0][1])) if counts else 1

    async def _send(self, channel: str, message: Message) -> bool:
        """Publish; True when at least one node was listening. Redis unreachable (after one
        retry, for a stale pooled connection) counts as nobody listening: callers retry."""
        body = msgspec.json.encode(message)
        signature = hmac.new(self._key, body, hashlib.sha256).hexdigest().encode()
        for attempt in (1, 2):
            try:
                return int(await self._redis.publish(channel, signature + body)) > 0
            except (RedisError, OSError) as exc:
                if attempt == 2:
                    log.warning("relay %s could not publish: %s", self.node_id, exc)
        return False

    # ----------------------------------------------------------------- receiving

    async def _listen(self) -> None:
        delay = _RECONNECT_S[0]
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel, self._cluster)
                self._listening.set()
                delay = _RECONNECT_S[0]
                while True:
                    item = await pubsub.get_message(timeout=5.0)
                    if item is not None and item.get("type") == "message":
                        self._receive(item["data"])
            except (RedisError, OSError) as exc:
                self._listening.clear()
                log.warning("relay %s lost Redis (%s); reconnecting", self.node_id, exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(_RECONNECT_S[1], delay * 2)

    def _receive(self, raw: bytes) -> None:
        message = self._open(raw)
        if message is None:
            return
        match message:
            case Request():
                self._spawn(self._serve(message))
            case Reply():
                future = self._pending.get(message.corr)
                if future is None or message.to != self.node_id:
                    self._refuse("a reply to no request of ours", message)
                elif not future.done():
                    future.set_result(message)
            case Kick():
                if message.to == self.node_id and self.on_kick is not None:
                    self.on_kick(message)
            case Owned():
                if self.on_owned is not None:
                    self.on_owned(message)
            case Handoff():
                if message.sender != self.node_id and self.on_handoff is not None:
                    self.on_handoff(message)

    def _open(self, raw: bytes) -> AnyMessage | None:
        signature, body = raw[:_SIG_LEN], raw[_SIG_LEN:]
        expected = hmac.new(self._key, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(signature, expected):
            self.refused += 1
            log.warning("relay %s refused a message with a bad signature", self.node_id)
            return None
        try:
            message = message_decoder.decode(body)
        except msgspec.DecodeError as exc:
            self.refused += 1
            log.warning("relay %s refused a malformed message: %s", self.node_id, exc)
            return None
        if abs(_now_ms() - message.sent_at) > MAX_AGE_MS:
            self._refuse(f"a message older than {MAX_AGE_MS} ms", message)
            return None
        return message

    async def _serve(self, request: Request) -> None:
        if request.to != self.node_id:
            self._refuse("a request for another node", request)
            return
        now = _now_ms()
        if request.corr in self._seen:
            self._refuse("a replayed request", request)
            return
        self._seen[request.corr] = now + 2 * MAX_AGE_MS
        # Inserted in time order: forget from the oldest while expired (O(1) a request).
        for corr, forget_at in list(itertools.islice(self._seen.items(), 2)):
            if forget_at > now:
                break
            del self._seen[corr]
        if self.on_request is None:
            return
        reply = await self.on_request(request)
        await self._send(self._node_prefix + request.sender, reply)

    def _refuse(self, why: str, message: Message) -> None:
        self.refused += 1
        log.warning(
            "relay %s refused %s from node %s (%s %s)",
            self.node_id,
            why,
            message.sender,
            type(message).__name__,
            getattr(message, "corr", ""),
        )

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        task.add_done_callback(_log_failure)

    def reply_to(self, request: Request, **fields: object) -> Reply:
        """A reply to ``request`` from this node (``ok`` and the rest in ``fields``)."""
        return Reply(
            sender=self.node_id,
            sent_at=_now_ms(),
            corr=request.corr,
            to=request.sender,
            **fields,  # type: ignore[arg-type]
        )


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("relay work failed", exc_info=task.exception())
