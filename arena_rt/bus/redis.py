"""The Redis bus: pub/sub for live delivery, a capped stream per battle for recent history.

Keys and channels (``prefix`` defaults to ``arena:battle:``)::

    PUBLISH  arena:battle:{battle_id}       b"<seq>\\n" + event JSON
    STREAM   arena:battle:{battle_id}:log   entry id "<seq>-0", field "data" = event JSON

Why a stream whose entry ids *are* the seqs: ``XRANGE key <after+1> +`` seeks straight to the
first wanted event; Redis refuses an id that is not above the newest one, so a retried publish
can never store an event twice and the history is strictly increasing; ``MAXLEN ~`` trims whole
nodes cheaply (at least ``history_size`` recent events are kept, a few more may be); ``EXPIRE``
(refreshed on every publish) lets finished battles' histories go away on their own.

Publishing is ``XADD`` + ``EXPIRE`` + ``PUBLISH`` per step, every step queued in one loop round
in one pipeline (:mod:`arena_rt.bus.redis_outbox`), so an event a subscriber sees live is
already in the history. On a connection error it is retried once on a fresh connection (a dead
pooled socket after a Redis restart), then :class:`BusUnavailableError` is raised.

Listening uses ONE connection per process (named with ``CLIENT SETNAME``), read by ONE task that
supervises it: when the connection drops (Redis restart, ``CLIENT KILL``, a missed ``PING``) it
reconnects with exponential backoff and jitter, re-subscribes every wanted channel, and once the
server has confirmed them all calls ``on_reconnect(battle_ids)`` *before* delivering any message
read on the new connection. Whatever was published while it was away is in the history, which is
what the hub reads to fill the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arena_rt.bus.base import (
    DEFAULT_HISTORY_SIZE,
    Bus,
    BusError,
    BusNotStartedError,
    BusUnavailableError,
    MessageHandler,
    ReconnectHandler,
    contiguous_after,
)
from arena_rt.bus.redis_outbox import PublishOutbox

__all__ = ["DEFAULT_HISTORY_TTL", "DEFAULT_PREFIX", "RedisBus"]

log = logging.getLogger("arena_rt.bus.redis")

DEFAULT_PREFIX = "arena:battle:"
PUBLISH_POOL_SIZE = 32
DEFAULT_HISTORY_TTL = 24 * 3600
_SUBSCRIBE_CHUNK = 512
_MAX_HELD_WHILE_RESUBSCRIBING = 10_000
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def _default_client_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"arena-bus-{host}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisBus(Bus):
    def __init__(
        self,
        url: str,
        on_message: MessageHandler | None = None,
        *,
        on_reconnect: ReconnectHandler | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl: int = DEFAULT_HISTORY_TTL,
        prefix: str = DEFAULT_PREFIX,
        client_name: str | None = None,
        subscribe_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        health_interval: float = 5.0,
        backoff_base: float = 0.05,
        backoff_max: float = 5.0,
        start_timeout: float = 5.0,
    ) -> None:
        super().__init__(on_message, on_reconnect=on_reconnect, history_size=history_size)
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError("prefix must be a non-empty string without whitespace")
        self._url = url
        self._prefix = prefix
        self._history_ttl = history_ttl
        name = client_name or _default_client_name()
        self.listener_name = f"{name}:sub"
        self.publisher_name = f"{name}:pub"
        self._subscribe_timeout = subscribe_timeout
        self._socket_timeout = socket_timeout
        self._health_interval = health_interval
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._start_timeout = start_timeout

        self._redis: Redis | None = None
        self._listener_pool: ConnectionPool | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None  # the listener connection, once subscribed
        self._connected = asyncio.Event()
        self._write_lock = asyncio.Lock()  # orders every command written on the listener socket
        self._wanted: set[str] = set()  # battles the listener must be subscribed to
        # Futures of subscribe() calls: per battle, one entry per SUBSCRIBE written on the
        # current connection (replies come back in the same order), plus those not written yet.
        self._pending: dict[str, deque[list[asyncio.Future[None]]]] = {}
        self._unsent: dict[str, list[asyncio.Future[None]]] = {}
        # Per battle, the last seq this process delivered to its own subscribers as it
        # published it: the listener's copy of those is not delivered again.
        self._emitted: dict[str, int] = {}
        self._outbox: PublishOutbox | None = None  # what this process publishes, batched
        self.reconnects = 0  # how many times the listener came back after an outage
        self._down_since = 0.0

    # ------------------------------------------------------------------ names

    def channel(self, battle_id: str) -> str:
        return f"{self._prefix}{battle_id}"

    def log_key(self, battle_id: str) -> str:
        return f"{self._prefix}{battle_id}:log"

    @property
    def publish_rounds(self) -> int:
        """Pipelines this bus has written to publish (each carries many steps under load)."""
        return self._outbox.rounds if self._outbox is not None else 0

    @property
    def connected(self) -> bool:
        """Whether the listener is connected with every subscription confirmed."""
        return self._connected.is_set()

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        retry = Retry(NoBackoff(), 0)  # retries are ours: explicit, logged and bounded
        common: dict[str, Any] = {
            "protocol": 2,
            "retry": retry,
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": self._socket_timeout,
        }
        # A bounded pool that waits for a free connection: redis-py's default pool raises
        # "Too many connections" past 100, which under load dropped publishes.
        self._redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                self._url,
                client_name=self.publisher_name,
                max_connections=PUBLISH_POOL_SIZE,
                timeout=self._socket_timeout,
                **common,
            )
        )
        self._listener_pool = ConnectionPool.from_url(
            self._url, client_name=self.listener_name, health_check_interval=0, **common
        )
        self._outbox = PublishOutbox(
            self._client, self.log_key, self.channel, self.history_size, self._history_ttl
        )
        self._outbox.start()
        self._connected = asyncio.Event()
        self._task = asyncio.create_task(self._listen(), name=f"bus-listener:{self.listener_name}")
        try:
            async with asyncio.timeout(self._start_timeout):
                await self._connected.wait()
        except TimeoutError:
            log.warning("bus listener %s: Redis not reachable yet, retrying", self.listener_name)
        except BaseException:
            await self._teardown()
            raise

    async def _stop(self) -> None:
        await self._teardown()

    async def _teardown(self) -> None:
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            await outbox.stop()
        task, self._task = self._task, None
        crash: BaseException | None = None
        try:
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
                except Exception as exc:
                    crash = exc
        finally:
            self._conn = None
            self._connected.clear()
            for futures in [
                *self._unsent.values(),
                *(f for q in self._pending.values() for f in q),
            ]:
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(BusNotStartedError("bus stopped"))
            self._pending.clear()
            self._unsent.clear()
            self._wanted.clear()
            redis, self._redis = self._redis, None
            pool, self._listener_pool = self._listener_pool, None
            if redis is not None:
                await redis.aclose()
            if pool is not None:
                await pool.disconnect()
        if crash is not None:
            raise BusError("bus listener had crashed") from crash

    # ------------------------------------------------------------------ publish / history

    async def _publish(self, battle_id: str, seq: int, data: bytes) -> None:
        await self._publish_many(battle_id, [(seq, data)])

    async def _publish_many(self, battle_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        await self.publish_soon(battle_id, events)

    def publish_soon(
        self, battle_id: str, events: Sequence[tuple[int, bytes]]
    ) -> asyncio.Future[None]:
        self._check_started()
        # This process's own spectators get the events at once, not after a round trip to
        # Redis and back through the listener (whose copy the hub then drops as a duplicate).
        if battle_id in self._subscriptions:
            self._emit_step(battle_id, events)
            self._emitted[battle_id] = max(seq for seq, _ in events)
        return self._outbox_or_fail().put(battle_id, events)

    def _outbox_or_fail(self) -> PublishOutbox:
        if self._outbox is None:
            raise BusNotStartedError("RedisBus is not started")
        return self._outbox

    async def _history(self, battle_id: str, after_seq: int) -> list[tuple[int, bytes]] | None:
        redis = self._client()
        key = self.log_key(battle_id)
        for attempt in (1, 2):
            try:
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.xrange(key, min=str(after_seq + 1), max="+")
                    pipe.xrevrange(key, max="+", min="-", count=1)
                    entries, newest = await pipe.execute()
                break
            except _TRANSIENT as exc:
                if attempt == 2:
                    raise BusUnavailableError(
                        f"history of battle {battle_id} failed twice: {exc}"
                    ) from exc
            except RedisError as exc:
                raise BusError(f"history of battle {battle_id} failed: {exc}") from exc
        parsed = [
            (int(entry_id.split(b"-", 1)[0]), fields[b"data"]) for entry_id, fields in entries
        ]
        return contiguous_after(parsed, after_seq, have_any=bool(newest))

    async def _ping(self) -> None:
        if self._task is None or self._task.done():
            raise BusUnavailableError("bus listener is not running")
        try:
            await self._client().ping()
        except (RedisError, OSError) as exc:
            raise BusUnavailableError(f"Redis did not answer PING: {exc}") from exc
        if not self._connected.is_set():
            raise BusUnavailableError("bus listener is reconnecting to Redis")

    def _client(self) -> Redis:
        if self._redis is None:
            raise BusNotStartedError("RedisBus is not started")
        return self._redis

    # ------------------------------------------------------------------ subscriptions

    async def _subscribe(self, battle_id: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._write_lock:
            self._wanted.add(battle_id)
            if self._conn is None:
                self._unsent.setdefault(battle_id, []).append(fut)  # sent on (re)connect
            else:
                # Queued before the write: the reader may see the confirmation before the
                # write returns. If the write fails, the reconnect answers it all the same.
                self._pending.setdefault(battle_id, deque()).append([fut])
                await self._send("SUBSCRIBE", self.channel(battle_id))
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                await fut
        except BaseException as exc:
            async with self._write_lock:
                self._wanted.discard(battle_id)
                await self._send("UNSUBSCRIBE", self.channel(battle_id))
            if isinstance(exc, TimeoutError):
                raise BusUnavailableError(
                    f"Redis did not confirm SUBSCRIBE for battle {battle_id} "
                    f"within {self._subscribe_timeout}s"
                ) from exc
            raise

    async def _unsubscribe(self, battle_id: str) -> None:
        self._emitted.pop(battle_id, None)
        async with self._write_lock:
            self._wanted.discard(battle_id)
            await self._send("UNSUBSCRIBE", self.channel(battle_id))

    async def _send(self, *args: str) -> bool:
        """Write a command on the listener connection (caller holds ``_write_lock``)."""
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.send_command(*args)
        except (RedisError, OSError) as exc:
            # The reader sees the broken socket too; the reconnect re-sends what is wanted.
            log.debug("bus listener write failed: %s", exc)
            return False
        return True

    # ------------------------------------------------------------------ the listener

    async def _listen(self) -> None:
        """The one supervised task: connect, serve, and on any connection failure reconnect."""
        pool = self._listener_pool
        assert pool is not None  # set by _start before the task exists
        loop = asyncio.get_running_loop()
        attempt = 0
        ever_up = False  # a (re)subscription was confirmed at least once
        while True:
            conn = pool.connection_class(**pool.connection_kwargs)
            try:
                # AbstractConnection.connect() carries no annotations in redis-py.
                await cast(Callable[[], Awaitable[None]], conn.connect)()
                await self._serve(conn, reconnected=ever_up, attempts=max(attempt, 1))
            except (RedisError, OSError) as exc:  # anything wrong with the connection
                if self._connected.is_set() or attempt == 0:
                    log.warning("bus listener %s lost Redis: %s", self.listener_name, exc)
                else:
                    log.debug(
                        "bus listener %s: attempt %d failed: %s", self.listener_name, attempt, exc
                    )
            finally:
                if self._conn is conn:
                    self._conn = None
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            if self._connected.is_set():  # it was up: a fresh outage starts now
                self._connected.clear()
                ever_up = True
                attempt = 0
                self._down_since = loop.time()
            delay = min(self._backoff_max, self._backoff_base * 2**attempt)
            attempt += 1
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _serve(self, conn: AbstractConnection, *, reconnected: bool, attempts: int) -> None:
        async with self._write_lock:
            battles = sorted(self._wanted)
            # A fresh connection gets exactly one SUBSCRIBE per wanted battle, so every waiting
            # subscribe() of a battle is answered by that battle's one confirmation.
            waiting: dict[str, list[asyncio.Future[None]]] = {}
            for battle_id, entries in self._pending.items():
                waiting.setdefault(battle_id, []).extend(f for e in entries for f in e)
            for battle_id, futures in self._unsent.items():
                waiting.setdefault(battle_id, []).extend(futures)
            self._pending = {
                b: deque([[f for f in futures if not f.done()]])
                for b, futures in waiting.items()
                if b in self._wanted
            }
            self._unsent = {}
            for i in range(0, len(battles), _SUBSCRIBE_CHUNK):
                chunk = battles[i : i + _SUBSCRIBE_CHUNK]
                await conn.send_command("SUBSCRIBE", *(self.channel(b) for b in chunk))
            self._conn = conn
        awaiting = set(battles)

        def up() -> None:
            self._connected.set()
            if reconnected:
                self.reconnects += 1
                log.warning(
                    "bus listener %s back after %.2fs (%d attempts), %d battles re-subscribed",
                    self.listener_name,
                    asyncio.get_running_loop().time() - self._down_since,
                    attempts,
                    len(battles),
                )
                self._emit_reconnect(frozenset(battles))

        # Messages read before every re-subscription is confirmed wait here, so the hub learns
        # about the reconnect before it sees any event from the new connection.
        held: list[tuple[bytes, bytes]] | None = [] if reconnected and awaiting else None
        if not awaiting:
            up()
        ping_sent = False
        while True:
            response = await conn.read_response(
                timeout=self._health_interval, disconnect_on_error=False
            )
            if response is None:  # quiet for a whole interval: is the socket still alive?
                if ping_sent:
                    raise RedisTimeoutError(f"no reply to PING within {self._health_interval}s")
                async with self._write_lock:
                    await conn.send_command("PING")
                ping_sent = True
                continue
            ping_sent = False
            if not isinstance(response, list) or len(response) < 2:
                continue  # b"PONG" before any subscription
            kind = response[0]
            if kind == b"message" and len(response) == 3:
                if held is not None:
                    held.append((response[1], response[2]))
                    if len(held) > _MAX_HELD_WHILE_RESUBSCRIBING:
                        raise RedisConnectionError("too many messages while re-subscribing")
                else:
                    self._dispatch(response[1], response[2])
            elif kind == b"subscribe":
                confirmed = self._battle_of(response[1])
                if confirmed is None:
                    continue
                queue = self._pending.get(confirmed)
                if queue:
                    for fut in queue.popleft():
                        if not fut.done():
                            fut.set_result(None)
                    if not queue:
                        del self._pending[confirmed]
                if awaiting:
                    awaiting.discard(confirmed)
                    if not awaiting:
                        up()
                        for channel, payload in held or ():
                            self._dispatch(channel, payload)
                        held = None

    def _battle_of(self, channel: Any) -> str | None:
        if not isinstance(channel, bytes):
            return None
        name = channel.decode("utf-8", "replace")
        if not name.startswith(self._prefix):
            return None
        return name[len(self._prefix) :]

    def _dispatch(self, channel: bytes, payload: bytes) -> None:
        battle_id = self._battle_of(channel)
        if battle_id is None or battle_id not in self._wanted:
            return
        newline = payload.find(b"\n")
        try:
            seq = int(payload[:newline]) if newline > 0 else 0
        except ValueError:
            seq = 0
        if seq < 1:
            log.warning("dropping a malformed bus frame on %r", channel)
            return
        if seq <= self._emitted.get(battle_id, 0):
            return  # ours, delivered when we published it
        self._emit(battle_id, seq, payload[newline + 1 :])
