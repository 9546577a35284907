"""One WebSocket's plumbing: a bounded outbox, its writer, and frame policing.

Replies (acks, errors, pongs) go through the outbox; battle events go through the hub feed.
Both are bounded; a socket that cannot keep up is closed with 4008 instead of slowing anyone.

Frames are encoded once: an event's text frame (header + the event's bytes, unmasked as a
server sends it) is built once and the same bytes are written to every socket's transport.
Under uvicorn's ``websockets-sansio`` protocol without compression a write goes straight to
the transport, and the hub hands a live event to an idle socket synchronously (no task wakes
up per spectator). Anything else (compression negotiated, frame-level debug logging, another
server, a socket that is closing or whose transport is paused) takes the ASGI path, which
behaves exactly as before; both paths put the same bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.protocol import State

from arena_rt.bus.hub import BoundedQueue
from arena_rt.config import Limits
from arena_rt.protocol import CloseCode, ErrorCode, ErrorFrame, encode
from arena_rt.ratelimit import TokenBucket

_ids = itertools.count(1)
T = TypeVar("T")
OUTBOX_SIZE = 256
RECANCEL_AFTER_S = 0.25


class Closing(Exception):
    """Stop serving this socket and close it with ``code``."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_frame_of: tuple[bytes, bytes] = (b"", b"")  # the last (data, frame): one event, many sockets


def text_frame(data: bytes) -> bytes:
    """The server's (unmasked) text frame carrying ``data``; the hub hands every socket the
    same ``data`` object, so one event's frame is built once and shared."""
    global _frame_of
    cached, frame = _frame_of
    if cached is data:
        return frame
    frame = _text_header(len(data)) + data
    _frame_of = (data, frame)
    return frame


_frames_of: tuple[tuple[bytes, ...], bytes] = ((), b"")  # the last step's (datas, frames)


def text_frames(datas: tuple[bytes, ...]) -> bytes:
    """One step's events as consecutive text frames, for one write; the hub hands every
    socket the same tuple, so they are built once per step and shared."""
    global _frames_of
    cached, frames = _frames_of
    if cached is datas:
        return frames
    frames = b"".join(_text_header(len(data)) + data for data in datas)
    _frames_of = (datas, frames)
    return frames


def _text_header(length: int) -> bytes:
    """RFC 6455 5.2: FIN + text opcode, no mask, then the payload length in 7, 16 or 64 bits.
    (websockets' ``Frame.serialize`` builds the same bytes with ~3 us of generic work.)"""
    if length < 126:
        return _SHORT.pack(0x81, length)
    if length < 1 << 16:
        return _MEDIUM.pack(0x81, 126, length)
    return _LONG.pack(0x81, 127, length)


_SHORT, _MEDIUM, _LONG = struct.Struct("!BB"), struct.Struct("!BBH"), struct.Struct("!BBQ")


def sansio_protocol(ws: WebSocket) -> Any | None:
    """uvicorn's ``websockets-sansio`` protocol object behind ``ws``, when the socket has one
    and frames may be written to its transport as they are (no extension such as
    permessage-deflate was negotiated, and frame-level debug logging is off); else None.

    Starlette wraps the ASGI ``send`` in closures (exception handling); the innermost one is
    the protocol's bound ``send`` method.
    """
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # pragma: no cover - another server
        return None
    send: Any = getattr(ws, "_send", None)
    for _ in range(10):
        owner = getattr(send, "__self__", None)
        if isinstance(owner, WebSocketsSansIOProtocol):
            conn = owner.conn
            if conn.extensions or conn.debug or owner.transport is None:
                return None
            return owner
        inner = []
        for cell in getattr(send, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # an empty cell
                if callable(cell.cell_contents):
                    inner.append(cell.cell_contents)
        if len(inner) != 1:
            return None
        send = inner[0]
    return None


class _Flag:
    """``asyncio.Event``'s ``is_set``/``set``/``clear``/``wait`` without its deque (about 0.8 KB
    per instance): waiters are a list made only while someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


def lean_sansio_protocol() -> type[Any]:
    """uvicorn's ``websockets-sansio`` protocol with less held per open socket; ``serve``
    passes it as uvicorn's ``ws`` protocol class. Same behaviour, same wire bytes:

    * the receive queue and the ``writable`` event are :class:`BoundedQueue` / :class:`_Flag`
      (``asyncio.Queue`` + ``asyncio.Event`` hold five deques, about 3.8 KB per socket, for a
      queue that is nearly always empty and an event that is nearly always set);
    * the handshake's request and response (their header maps, about 2.5 KB) are dropped once
      the handshake is complete: uvicorn reads them only while handshaking.
    """
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class LeanSansIOProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = BoundedQueue(sys.maxsize)  # type: ignore[assignment]
            writable = _Flag()
            if self.writable.is_set():
                writable.set()
            self.writable = writable  # type: ignore[assignment]

        async def send(self, message: Any) -> None:
            await super().send(message)
            if self.handshake_complete and getattr(self, "response", None) is not None:
                self.request = self.response = None  # type: ignore[assignment]

    return LeanSansIOProtocol


class SocketPeer:
    """What a runner answers: ``send`` never blocks; an overflowing outbox closes the socket.

    While :meth:`serve` runs, the socket's reader is its only long-lived task: the outbox and
    the battle's queued events are written by helper tasks started when there is something to
    write (:meth:`spawn`), which end once it is written. A helper's failure ends the socket
    like a kick does (its exception is raised by :meth:`serve`)."""

    __slots__ = (
        "_bucket",
        "_helpers",
        "_max_strikes",
        "_outbox_task",
        "_proto",
        "_send_lock",
        "_serving",
        "_strikes",
        "id",
        "kicked",
        "outbox",
        "ws",
    )

    def __init__(self, ws: WebSocket, node_id: str, limits: Limits) -> None:
        self.id = f"{node_id}-{next(_ids)}"
        self.ws = ws
        self.outbox: BoundedQueue[bytes] = BoundedQueue(OUTBOX_SIZE)
        self.kicked: asyncio.Future[Closing] = asyncio.get_running_loop().create_future()
        self._bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
        self._strikes = 0
        self._max_strikes = limits.abuse_strikes
        self._send_lock = asyncio.Lock()
        # Created after ``accept``: the handshake (and so the extensions) is settled.
        self._proto = sansio_protocol(ws)
        self._serving = False  # serve() is running: helpers may be started
        self._helpers: set[asyncio.Task[None]] | None = None  # made when the first one starts
        self._outbox_task: asyncio.Task[None] | None = None

    @property
    def direct(self) -> bool:
        """Whether frames can go straight to this socket's transport (see the module doc)."""
        return self._proto is not None

    def _transport_ready(self) -> bool:
        """Open, not closing, not paused: the ASGI ``send`` would write at once, so may we."""
        proto = self._proto
        return (
            proto is not None
            and proto.writable.is_set()
            and not proto.close_sent
            and not proto.disconnected
            and proto.conn.state is State.OPEN
            and not proto.transport.is_closing()
            and self.ws.application_state is WebSocketState.CONNECTED
        )

    def write_now(self, data: bytes) -> bool:
        """Write ``data`` at once when nothing is being written ahead of it and the transport
        takes it without waiting; False means: queue it (the hub then does)."""
        return self._writable_now() and self._write_frames(text_frame(data))

    def write_step_now(self, datas: tuple[bytes, ...]) -> bool:
        """:meth:`write_now` for a step's events: all of them in one write (one syscall)."""
        return self._writable_now() and self._write_frames(text_frames(datas))

    def _writable_now(self) -> bool:
        return not self._send_lock.locked() and self._transport_ready()

    def _write_frames(self, frames: bytes) -> bool:
        try:
            self._proto.transport.write(frames)  # type: ignore[union-attr]
        except Exception:  # the ASGI path reports it properly
            return False
        return True

    def send(self, data: bytes) -> None:
        try:
            self.outbox.put_nowait(data)
        except asyncio.QueueFull:
            self.kick(CloseCode.SLOW_CONSUMER, "slow_consumer")
            return
        self._pump_outbox_soon()

    def kick(self, code: int, reason: str) -> None:
        """Ask this socket's handler to close it (from any task, e.g. a replacing socket)."""
        if not self.kicked.done():
            self.kicked.set_result(Closing(code, reason))

    def _fail(self, exc: BaseException) -> None:
        """A helper failed: end the socket, raising ``exc`` from :meth:`serve`."""
        if self._serving and not self.kicked.done():
            self.kicked.set_exception(exc)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run ``coro`` as a helper of :meth:`serve` (cancelled when it ends); None (and the
        coroutine is closed) when the socket is no longer served."""
        if not self._serving or self.kicked.done():
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro)
        if self._helpers is None:
            self._helpers = set()
        self._helpers.add(task)
        task.add_done_callback(self._helper_done)
        return task

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        if self._helpers is not None:
            self._helpers.discard(task)
            if not self._helpers:
                self._helpers = None
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())  # type: ignore[arg-type]

    def _pump_outbox_soon(self) -> None:
        """Start the outbox's writer unless it is running (it writes until the outbox is empty)."""
        if self._serving and not self.outbox.empty():
            task = self._outbox_task
            if task is None or task.done():
                self._outbox_task = self.spawn(self._pump_outbox())

    async def _pump_outbox(self) -> None:
        while not self.outbox.empty():
            await self.write(await self.outbox.get())

    async def serve(
        self, reader: Coroutine[Any, Any, None], *starting: Coroutine[Any, Any, None]
    ) -> None:
        """Read (``reader``) until it ends, fails, or the socket is kicked (the ``Closing`` is
        raised) or a helper fails (its exception is raised); ``starting`` run as helpers. The
        outbox is written from now on (what was sent before waits until now). Every helper is
        cancelled and awaited before this returns."""
        self._serving = True
        try:
            for coro in starting:
                self.spawn(coro)
            self._pump_outbox_soon()
            await first_done(reader, until=self.kicked)
        finally:
            self._serving = False
            helpers, self._helpers = self._helpers, None
            if helpers:
                await cancel_all(list(helpers))
            if self.kicked.done() and not self.kicked.cancelled():
                self.kicked.exception()  # retrieved (a helper may have failed meanwhile)

    def error(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        self.send(encode(ErrorFrame(code=code, message=message, ref=ref)))

    def strike(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        """A bad frame: answer it, and close with 1008 when they keep coming."""
        self.error(code, message, ref)
        self._strikes += 1
        if self._strikes >= self._max_strikes:
            raise Closing(CloseCode.POLICY, "too many bad frames")

    def allow_message(self) -> bool:
        return self._bucket.take()

    async def write(self, data: bytes) -> None:
        async with self._send_lock:
            if self._transport_ready():
                self._proto.transport.write(text_frame(data))  # type: ignore[union-attr]
            else:
                await self.ws.send_text(data.decode())

    async def wait_kicked(self) -> None:
        raise await self.kicked


async def receive_text(ws: WebSocket) -> str:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        data = message.get("bytes") or b""
        try:
            return bytes(data).decode()
        except UnicodeDecodeError:
            return "\ufffd"  # fails to decode as JSON below: an error frame, not a crash
    return str(text)


async def next_frame(peer: SocketPeer, decoder: msgspec.json.Decoder[T]) -> T:
    """The next well-formed frame within the rate limit; bad ones are answered and struck."""
    while True:
        raw = await receive_text(peer.ws)
        if not peer.allow_message():
            peer.strike(ErrorCode.RATE_LIMITED, "too many messages; slow down")
            continue
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as exc:
            peer.strike(ErrorCode.BAD_MESSAGE, f"bad frame: {exc}")


async def close_quietly(ws: WebSocket, code: int, reason: str = "") -> None:
    if (
        ws.application_state is WebSocketState.CONNECTED
        and ws.client_state is WebSocketState.CONNECTED
    ):
        with contextlib.suppress(Exception):
            await ws.close(code, reason[:120])


async def first_done(
    *coros: Coroutine[Any, Any, None], until: asyncio.Future[Closing] | None = None
) -> None:
    """Run together; when one ends, cancel the rest (websockets' consumer/producer pattern).

    The first task's exception (e.g. ``Closing``) propagates after the others are cancelled.
    ``until`` (a peer's ``kicked``) ends them too, and its ``Closing`` is raised: a future to
    wait on rather than one more task per socket.
    """
    tasks = [asyncio.create_task(c) for c in coros]
    waited: list[asyncio.Future[Any]] = [*tasks, until] if until is not None else [*tasks]
    try:
        done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_all(tasks)
    for task in tasks:  # a task's own exception first, as before
        if task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
    if until is not None and until in done and not until.cancelled():
        raise until.result()


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until every one has ended.

    A cancellation can be swallowed below us: on Python 3.11 ``asyncio.wait_for`` (which
    redis-py uses to send commands) returns the result instead of raising when the result and
    the cancel race, and the task then carries on to its next await (e.g. a feed's ``get``)
    and would keep this socket open forever. So a task still running after a short while is
    cancelled again.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER_S)
        except asyncio.CancelledError:
            for task in pending:
                task.cancel()
            raise
    for task in tasks:  # retrieve every outcome (no "exception never retrieved" warnings)
        if not task.cancelled():
            task.exception()
