"""The hub: this process's fan-out of battle events to its local spectators.

::

    bus ──on_message──> Hub ──(seq, bytes)──> Feed queue (bounded) ──resume()──> socket
                         │ gap or reconnect
                         └─> fill task: bus.history(), else load_after() (the database)

Per battle the hub keeps the last seq it delivered and hands every feed a run of consecutive
seqs: a message that skips ahead (or a reconnect of the bus listener) holds live delivery while a
task owned by the hub fetches the missing events, then delivers them and the held ones in order;
anything at or below the last delivered seq is a duplicate and dropped.

A feed's queue is bounded; a feed that can't keep up is closed with
:attr:`FeedClosedReason.OVERFLOW` (the socket closes with 4008 and the client comes back with
``since``). Delivery never waits, so a slow spectator never slows the others or the battle.

A reader uses it like this::

    async with hub.watch(battle_id, queue_size=256) as feed:   # live first...
        since = ...  # the client's ``since``, or the ``lastSeq`` of the snapshot just sent
        async with contextlib.aclosing(resume(feed, since)) as events:
            async for seq, data in events:                       # ...then replay, then live
                await websocket.send_text(data)                  # (or send_bytes)

and closes with the code for ``FeedClosedError.reason`` (4008 for an overflow). The socket
layer runs the same logic without a task per idle feed: :func:`catch_up` once, then
:func:`drain` whenever ``feed.on_queued`` says events were queued (and the feed's sink writes
the rest directly); ``feed.on_close`` closes the socket even while a send hangs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from arena_rt.bus.base import (
    Bus,
    BusError,
    FeedClosedError,
    FeedClosedReason,
    HubNotStartedError,
)

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "BoundedQueue",
    "Feed",
    "Hub",
    "LoadAfter",
    "Write",
    "catch_up",
    "drain",
    "resume",
]

T = TypeVar("T")

log = logging.getLogger("arena_rt.bus.hub")

DEFAULT_QUEUE_SIZE = 256
DEFAULT_MAX_HELD = 10_000

LoadAfter = Callable[[str, int], Awaitable[list[tuple[int, bytes]]]]
"""``load_after(battle_id, after_seq)``: the persisted events with ``seq > after_seq``, in order."""

Sink = Callable[[bytes], bool]
"""``sink(data)``: deliver one live event at once, synchronously; False when it can't right now
(the event is then queued as usual). See :meth:`Feed.attach`."""

StepSink = Callable[[tuple[bytes, ...]], bool]
"""``step_sink(datas)``: deliver one step's live events at once, in one write; False when it
can't right now. The hub hands every feed the same tuple, so it is framed once."""

_WAKE = (0, b"")  # put in a closed feed's queue to wake a waiting reader; never handed out


class _FillState(enum.Enum):
    IDLE = enum.auto()
    QUEUED = enum.auto()
    RUNNING = enum.auto()


@dataclass(eq=False)
class _Channel:
    """One battle watched on this process."""

    feeds: set[Feed] = field(default_factory=set)
    last: int | None = None  # the last seq delivered to the feeds
    held: dict[int, bytes] = field(default_factory=dict)  # live messages waiting for a fill
    fill: _FillState = _FillState.IDLE
    again: bool = False  # another fill was asked for while one was running
    epoch: int = 0  # bumped on every bus reconnect
    generation: int = 0  # bumped when a fill gives up, so a running fill knows to stop


class BoundedQueue(Generic[T]):
    """A bounded FIFO with one reader: ``asyncio.Queue``'s ``put_nowait``/``get``/``qsize``/
    ``empty`` (``asyncio.QueueFull`` when full), without its three deques per instance (about
    3 KB). Tens of thousands of idle sockets each hold two of these, nearly always empty: the
    deque exists only while items wait."""

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._items: collections.deque[T] | None = None
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        items = self._items
        if items is None:
            items = self._items = collections.deque()
        elif len(items) >= self._maxsize:
            raise asyncio.QueueFull
        items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        return item


class Feed:
    """One local spectator's bounded queue of ``(seq, bytes)``; read it through :func:`resume`
    (or :func:`catch_up` then :func:`drain`, on demand: see ``on_queued``)."""

    __slots__ = (
        "_channel",
        "_closed",
        "_cursor",
        "_direct",
        "_hub",
        "_position",
        "_queue",
        "_replaying",
        "_sink",
        "_step_sink",
        "_tail",
        "battle_id",
        "close_reason",
        "on_close",
        "on_queued",
    )

    def __init__(self, hub: Hub, channel: _Channel, battle_id: str, queue_size: int) -> None:
        self.battle_id = battle_id
        self._closed: asyncio.Event | None = None  # made when first asked for (memory)
        self.close_reason: FeedClosedReason | None = None
        self.on_close: Callable[[FeedClosedReason], None] | None = None
        self._hub = hub
        self._channel = channel
        self._queue: BoundedQueue[tuple[int, bytes]] = BoundedQueue(queue_size)
        # The highest seq this feed is known to have (queued, or replayed by resume()); None
        # while resume() is still replaying. The hub skips what the feed already has.
        self._position: int | None = None
        self._tail = 0  # the highest seq put in the queue (or handed to the sink)
        self._sink: Sink | None = None
        self._step_sink: StepSink | None = None
        self._direct = 0  # the highest seq handed to the sink; resume() skips up to it
        self._replaying = False  # resume() is fetching missing events: nothing may overtake
        self._cursor = 0  # the highest seq handed out by catch_up()/drain()
        # Called when a live event was queued (not taken by the sink): a reader that is not
        # waiting on the queue (see drain()) is told to come and read it.
        self.on_queued: Callable[[], None] | None = None

    @property
    def closed(self) -> asyncio.Event:
        """Set once the feed is closed (``close_reason`` says why)."""
        if self._closed is None:
            self._closed = asyncio.Event()
            if self.close_reason is not None:
                self._closed.set()
        return self._closed

    @property
    def overflowed(self) -> bool:
        return self.close_reason is FeedClosedReason.OVERFLOW

    def qsize(self) -> int:
        return self._queue.qsize()

    async def get(self) -> tuple[int, bytes]:
        """The next queued event; raises :class:`FeedClosedError` once the feed is closed."""
        self._raise_if_closed()
        item = await self._queue.get()
        self._raise_if_closed()
        return item

    def _raise_if_closed(self) -> None:
        if self.close_reason is not None:
            raise FeedClosedError(self.battle_id, self.close_reason)

    def attach(self, sink: Sink | None, step_sink: StepSink | None = None) -> None:
        """Hand live events straight to ``sink`` instead of the queue, whenever the queue is
        empty (so order is kept) and ``sink`` accepts them; None detaches it. The reader of
        :func:`resume` must be the one writing what the sink takes, so it is never ahead:
        the sink must refuse while that reader is in the middle of a write. Used for
        encode-once fan-out without waking one task per spectator per event. ``step_sink``
        takes a whole step's events (a turn and the next turn_started) in one write."""
        self._sink = sink
        self._step_sink = step_sink if sink is not None else None

    def _offer(self, seq: int, data: bytes) -> None:
        if self.close_reason is not None:
            return
        if self._position is not None:
            if seq <= self._position:
                return
            self._position = seq
            sink = self._sink
            if sink is not None and not self._replaying and self._queue.empty() and sink(data):
                self._tail = self._direct = seq
                return
        try:
            self._queue.put_nowait((seq, data))
        except asyncio.QueueFull:
            self._close(FeedClosedReason.OVERFLOW)
            return
        self._tail = seq
        if self.on_queued is not None:
            self.on_queued()

    def _offer_step(self, events: Sequence[tuple[int, bytes]], datas: tuple[bytes, ...]) -> None:
        """A step's events (contiguous seqs): in one write when the feed is live and idle."""
        position, step_sink = self._position, self._step_sink
        if (
            step_sink is not None
            and position is not None
            and self.close_reason is None
            and events[0][0] > position
            and not self._replaying
            and self._queue.empty()
            and step_sink(datas)
        ):
            self._position = self._tail = self._direct = events[-1][0]
            return
        for seq, data in events:
            self._offer(seq, data)

    def _go_live(self, cursor: int) -> None:
        self._position = max(cursor, self._tail)

    def _close(self, reason: FeedClosedReason) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        if self._closed is not None:
            self._closed.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_WAKE)
        if self.on_close is not None:
            try:
                self.on_close(reason)
            except Exception:  # one socket's callback must not stop the hub's delivery
                log.exception("feed close callback failed (battle %s)", self.battle_id)


class Hub:
    """Local fan-out with gap filling. Give it the bus before the bus starts: it binds itself
    as the bus's ``on_message`` and ``on_reconnect``.

    ``hub.on_message`` may also be called directly (it is the bus callback); with the memory bus
    every local publish reaches the hub synchronously through it.
    """

    def __init__(
        self,
        bus: Bus,
        load_after: LoadAfter,
        *,
        fill_attempts: int = 3,
        fill_backoff: float = 0.2,
        max_held: int = DEFAULT_MAX_HELD,
    ) -> None:
        self._bus = bus
        self._load_after = load_after
        self._fill_attempts = fill_attempts
        self._fill_backoff = fill_backoff
        self._max_held = max_held
        self._channels: dict[str, _Channel] = {}
        self._sub_lock = asyncio.Lock()
        self._requests: dict[str, None] = {}  # battles waiting for a fill (an ordered set)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fills = 0  # fills run so far (each one follows a gap or a reconnect)
        bus.bind(self.on_message, self.on_reconnect, self.on_step)

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        if self._task is not None:
            raise BusError("hub already started")
        self._task = asyncio.create_task(self._run(), name="hub-filler")
        self._task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        """Cancel and await the fill work, and close every feed (``SHUTDOWN``). Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        finally:
            self._requests.clear()
            for channel in self._channels.values():
                channel.held.clear()
                channel.fill = _FillState.IDLE
                for feed in channel.feeds:
                    feed._close(FeedClosedReason.SHUTDOWN)

    # ------------------------------------------------------------------ spectators

    def local_count(self, battle_id: str) -> int:
        """How many spectators of this battle are attached to this process."""
        channel = self._channels.get(battle_id)
        return len(channel.feeds) if channel is not None else 0

    @contextlib.asynccontextmanager
    async def watch(
        self, battle_id: str, *, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> AsyncIterator[Feed]:
        """Attach a local spectator. On entry the bus subscription is confirmed, so every
        event published from then on reaches the feed; read it with :func:`resume`."""
        if self._task is None:
            raise HubNotStartedError("hub is not started")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        channel = self._channels.get(battle_id)
        if channel is None:
            channel = self._channels[battle_id] = _Channel()
        feed = Feed(self, channel, battle_id, queue_size)
        channel.feeds.add(feed)
        try:
            await self._sync_subscription(battle_id)
            yield feed
        finally:
            channel.feeds.discard(feed)
            if not channel.feeds and self._channels.get(battle_id) is channel:
                del self._channels[battle_id]
                self._requests.pop(battle_id, None)
                try:
                    await self._sync_subscription(battle_id)
                except BusError as exc:
                    log.warning("could not unsubscribe from battle %s: %s", battle_id, exc)

    async def _sync_subscription(self, battle_id: str) -> None:
        """Make the bus subscription match whether any local feed watches the battle.
        One lock orders every change, so a leave and a join never cross on the wire."""
        async with self._sub_lock:
            want = battle_id in self._channels
            have = battle_id in self._bus.subscriptions
            if want and not have:
                await self._bus.subscribe(battle_id)
            elif have and not want and self._bus.started:
                await self._bus.unsubscribe(battle_id)

    # ------------------------------------------------------------------ reading events

    async def events_after(self, battle_id: str, after_seq: int) -> list[tuple[int, bytes]]:
        """Every event with ``seq > after_seq`` in order: the bus history, else the database."""
        events: list[tuple[int, bytes]] | None
        try:
            events = await self._bus.history(battle_id, after_seq)
        except BusError as exc:
            log.warning(
                "bus history of battle %s unavailable (%s); reading the database", battle_id, exc
            )
            events = None
        if events is not None:
            return events
        loaded = await self._load_after(battle_id, after_seq)
        out = [(seq, data) for seq, data in loaded if seq > after_seq]
        for expected, (seq, _) in enumerate(out, start=after_seq + 1):
            if seq != expected:
                raise BusError(
                    f"load_after({battle_id!r}, {after_seq}) is not contiguous: "
                    f"seq {seq} where {expected} was expected"
                )
        return out

    # ------------------------------------------------------------------ bus callbacks

    def on_message(self, battle_id: str, seq: int, data: bytes) -> None:
        """The bus callback: deliver in order, hold and ask for a fill on a gap. Never waits."""
        channel = self._channels.get(battle_id)
        if channel is None:
            return
        last = channel.last
        if last is not None and seq <= last:
            return  # already delivered
        if channel.fill is not _FillState.IDLE:
            self._hold(battle_id, channel, seq, data)  # a fill is queued or running
        elif last is not None and seq > last + 1:
            self._hold(battle_id, channel, seq, data)
            self._request_fill(battle_id, channel)
        else:
            self._deliver(channel, seq, data)

    def on_step(self, battle_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """The bus callback for this process's own step: delivered together when it follows
        what was delivered (the usual case), else event by event as :meth:`on_message`."""
        channel = self._channels.get(battle_id)
        if channel is None:
            return
        last = channel.last
        if channel.fill is _FillState.IDLE and (last is None or events[0][0] == last + 1):
            channel.last = events[-1][0]
            datas = tuple(data for _, data in events)
            for feed in channel.feeds:
                feed._offer_step(events, datas)
            return
        for seq, data in events:
            self.on_message(battle_id, seq, data)

    def on_reconnect(self, battle_ids: Iterable[str]) -> None:
        """The bus callback after its listener came back: events may have been lost."""
        for battle_id in battle_ids:
            channel = self._channels.get(battle_id)
            if channel is None:
                continue
            channel.epoch += 1
            self._request_fill(battle_id, channel)

    # ------------------------------------------------------------------ delivery and fills

    def _deliver(self, channel: _Channel, seq: int, data: bytes) -> None:
        channel.last = seq
        for feed in channel.feeds:
            feed._offer(seq, data)

    def _hold(self, battle_id: str, channel: _Channel, seq: int, data: bytes) -> None:
        channel.held[seq] = data
        if len(channel.held) > self._max_held:
            log.error(
                "battle %s: %d events held waiting for a fill; dropping feeds",
                battle_id,
                len(channel.held),
            )
            self._fail(battle_id, channel)

    def _request_fill(self, battle_id: str, channel: _Channel) -> None:
        if channel.fill is _FillState.IDLE:
            channel.fill = _FillState.QUEUED
            self._requests[battle_id] = None
            self._wake.set()
        elif channel.fill is _FillState.RUNNING:
            channel.again = True

    def _fail(self, battle_id: str, channel: _Channel) -> None:
        """The gap can't be filled: close the feeds (clients resume from the database)."""
        for feed in channel.feeds:
            feed._close(FeedClosedReason.GAP)
        channel.held.clear()
        channel.last = None
        channel.again = False
        channel.fill = _FillState.IDLE
        channel.generation += 1
        self._requests.pop(battle_id, None)

    async def _run(self) -> None:
        """The hub's one task: it owns every fill (in its TaskGroup), one per battle at a time."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                await self._wake.wait()
                self._wake.clear()
                requests, self._requests = list(self._requests), {}
                for battle_id in requests:
                    channel = self._channels.get(battle_id)
                    if channel is None or channel.fill is not _FillState.QUEUED:
                        continue
                    channel.fill = _FillState.RUNNING
                    self.fills += 1
                    tasks.create_task(self._fill(battle_id, channel), name=f"hub-fill:{battle_id}")

    async def _fill(self, battle_id: str, channel: _Channel) -> None:
        failures = 0
        generation = channel.generation

        def current() -> bool:
            return self._channels.get(battle_id) is channel and channel.generation == generation

        try:
            while current():
                channel.again = False
                after = channel.last
                if after is None:
                    # Nothing delivered live yet: start from what the feeds that finished their
                    # replay have (feeds still replaying re-read on their own: see resume()).
                    positions = [f._position for f in channel.feeds if f._position is not None]
                    after = min(positions) if positions else None
                if after is not None:
                    try:
                        events = await self.events_after(battle_id, after)
                    except Exception as exc:
                        failures += 1
                        if failures >= self._fill_attempts:
                            log.error(
                                "battle %s: gap after seq %d not filled: %r", battle_id, after, exc
                            )
                            self._fail(battle_id, channel)
                            return
                        log.warning(
                            "battle %s: filling after seq %d failed (%r), retrying",
                            battle_id,
                            after,
                            exc,
                        )
                        await asyncio.sleep(self._fill_backoff * failures)
                        continue
                    if not current():
                        return
                    for seq, data in events:
                        if channel.last is None or seq == channel.last + 1:
                            self._deliver(channel, seq, data)
                        # events_after is contiguous, so anything else is <= last: skip it
                self._release_held(channel)
                if channel.held:
                    # Still a hole below the held events: the history/database didn't have
                    # them yet (it should: events are stored before they are published).
                    failures += 1
                    if failures >= self._fill_attempts:
                        log.error(
                            "battle %s: events after seq %s missing everywhere",
                            battle_id,
                            channel.last,
                        )
                        self._fail(battle_id, channel)
                        return
                    await asyncio.sleep(self._fill_backoff * failures)
                    continue
                if not channel.again:
                    return
        finally:
            if channel.generation == generation and channel.fill is _FillState.RUNNING:
                channel.fill = _FillState.IDLE

    def _release_held(self, channel: _Channel) -> None:
        for seq in sorted(channel.held):
            last = channel.last
            if last is not None and seq <= last:
                del channel.held[seq]
            elif last is None or seq == last + 1:
                self._deliver(channel, seq, channel.held.pop(seq))
            else:
                break


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("hub task crashed; stop() will raise it", exc_info=task.exception())


async def resume(
    feed: Feed, since: int, *, replay: bool = True
) -> AsyncGenerator[tuple[int, bytes], None]:
    """Every event of the feed's battle with ``seq > since``, in order, then live ones; no gap,
    no duplicate. Enter ``hub.watch()`` first (live events queue up meanwhile); this replays
    from the bus history (else the database) and then reads the queue, skipping what it has
    already yielded. Raises :class:`FeedClosedError` when the feed is closed (e.g. overflow).
    Wrap it in ``contextlib.aclosing`` when you may stop early. Don't attach a sink to a feed
    read this way (this reader holds no write lock the sink could respect).

    ``replay=False`` when ``since`` was read from the database *after* ``hub.watch()`` was
    entered (a snapshot's ``lastSeq``): every event after it was committed after the feed was
    attached, so it is published to the feed (or filled into it after a bus reconnect) and
    there is nothing to replay.

    :func:`catch_up` and :func:`drain` as a generator: one logic for both kinds of reader."""
    ready: collections.deque[tuple[int, bytes]] = collections.deque()

    async def collect(seq: int, data: bytes) -> None:
        ready.append((seq, data))

    queued = asyncio.Event()
    feed.on_queued = queued.set
    try:
        await catch_up(feed, since, collect, replay=replay)
        while True:
            while ready:
                yield ready.popleft()
            queued.clear()
            if feed.qsize() == 0:
                await _first_of(queued.wait(), feed.closed.wait())
            await drain(feed, collect)
    finally:
        feed.on_queued = None


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


Write = Callable[[int, bytes], Awaitable[None]]  # (seq, frame data)


async def catch_up(feed: Feed, since: int, write: Write, *, replay: bool = True) -> None:
    """Write every event with ``seq > since`` (the replay from the bus history, else the
    database), go live, and write what queued meanwhile with :func:`drain`. Later live events
    go to the feed's sink, or are queued and announced through ``feed.on_queued``;
    :func:`drain` writes those. No task waits on an idle feed. Raises
    :class:`FeedClosedError` once the feed is closed. (:func:`resume` is the same as a
    generator.)"""
    hub = feed._hub
    cursor = max(since, 0)
    while replay:
        epoch = feed._channel.epoch
        for seq, data in await hub.events_after(feed.battle_id, cursor):
            feed._raise_if_closed()
            if seq <= cursor:
                continue
            await write(seq, data)
            cursor = seq
        # If the bus reconnected since that read began, events lost on the wire may be newer
        # than what it returned: read again. Checked and switched with no await in between.
        if feed._channel.epoch == epoch:
            break
    feed._cursor = cursor
    feed._go_live(cursor)
    await drain(feed, write)


async def drain(feed: Feed, write: Write) -> None:
    """Write the live events queued on a feed that :func:`catch_up` made live, until its queue
    is empty (run on demand: one call at a time per feed)."""
    hub = feed._hub
    feed._raise_if_closed()
    while not feed._queue.empty():
        seq, data = await feed.get()  # never waits: the queue is not empty
        cursor = max(feed._cursor, feed._direct)  # the sink wrote up to _direct
        feed._cursor = cursor
        if seq <= cursor:
            continue
        if seq > cursor + 1:
            # The hub hands out consecutive runs, so this is a safety net, not the normal path.
            feed._replaying = True
            try:
                for missing_seq, missing in await hub.events_after(feed.battle_id, cursor):
                    if missing_seq >= seq:
                        break
                    await write(missing_seq, missing)
                    cursor = feed._cursor = missing_seq
            finally:
                feed._replaying = False
            if seq != cursor + 1:
                feed._close(FeedClosedReason.GAP)
                feed._raise_if_closed()
        await write(seq, data)
        feed._cursor = seq
