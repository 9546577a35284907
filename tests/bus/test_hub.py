"""The hub on both backends: bounded feeds, subscription counting, gap fills, and resume()."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from bus_support import STEP, BusFactory, EventLog, MakeHub, eventually, frame
from redis.asyncio import Redis

from arena_rt.bus import (
    BusError,
    Feed,
    FeedClosedError,
    FeedClosedReason,
    Hub,
    HubNotStartedError,
    MemoryBus,
    RedisBus,
    resume,
)


async def collect(feed: Feed, since: int, into: list[int], until: int) -> None:
    """Read ``resume(feed, since)`` into ``into`` until it reaches seq ``until``."""
    async with contextlib.aclosing(resume(feed, since)) as events:
        async for seq, data in events:
            assert data == frame(feed.battle_id, seq)
            into.append(seq)
            if seq >= until:
                return


# --------------------------------------------------------------------------- bounded feeds


async def test_overflow_closes_only_the_slow_feed(make_bus: BusFactory, make_hub: MakeHub) -> None:
    async with asyncio.timeout(STEP * 2):
        db = EventLog()
        bus = make_bus()
        hub = await make_hub(bus, db.load_after)
        fast: list[int] = []
        async with hub.watch("b1", queue_size=5) as slow, hub.watch("b1", queue_size=500) as quick:
            reader = asyncio.create_task(collect(quick, 0, fast, 200))
            try:
                for _ in range(200):
                    await db.append(bus, "b1")  # the publisher never waits for a feed
                    if random.random() < 0.2:
                        await asyncio.sleep(0)
                await eventually(lambda: fast[-1:] == [200])
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            assert fast == list(range(1, 201))
            assert slow.overflowed and slow.closed.is_set()
            assert slow.close_reason is FeedClosedReason.OVERFLOW
            assert not quick.closed.is_set()
            with pytest.raises(FeedClosedError) as info:
                await anext(resume(slow, 0))
            assert info.value.reason is FeedClosedReason.OVERFLOW
        assert hub.local_count("b1") == 0


async def test_same_bytes_object_reaches_every_feed(
    make_bus: BusFactory, make_hub: MakeHub
) -> None:
    """Encode once: the hub hands the one bytes object it received to every local feed."""
    async with asyncio.timeout(STEP):
        db = EventLog()
        bus = make_bus()
        hub = await make_hub(bus, db.load_after)
        async with hub.watch("b1") as one, hub.watch("b1") as two:
            await db.append(bus, "b1")
            first, second = await one.get(), await two.get()
        assert first == (1, frame("b1", 1))
        assert first[1] is second[1]


# --------------------------------------------------------------------------- subscriptions


async def test_a_step_reaches_a_live_idle_feed_in_one_write_or_else_queued_in_order(
    make_bus: BusFactory, make_hub: MakeHub
) -> None:
    """A turn and the next turn_started are one step: a socket that can write now gets both
    in one write (the same tuple for every feed, framed once); one that can't gets them
    queued, in order, like any event."""
    async with asyncio.timeout(STEP):
        db = EventLog()
        bus = make_bus()
        hub = await make_hub(bus, db.load_after)
        async with hub.watch("b1") as feed, hub.watch("b1") as other:
            events = resume(feed, 0)
            await db.append(bus, "b1")
            assert await anext(events) == (1, frame("b1", 1))  # caught up: live from here
            other_events = resume(other, 0)
            assert await anext(other_events) == (1, frame("b1", 1))
            writes: list[tuple[bytes, ...]] = []
            can_write = True

            def one(data: bytes) -> bool:
                writes.append((data,))
                return can_write

            def step(datas: tuple[bytes, ...]) -> bool:
                writes.append(datas)
                return can_write

            feed.attach(one, step)
            other.attach(one, step)
            await db.append_step(bus, "b1", 2)
            assert writes == [(frame("b1", 2), frame("b1", 3))] * 2
            assert writes[0] is writes[1]  # one tuple for every feed
            assert feed.qsize() == 0
            can_write = False
            await db.append_step(bus, "b1", 2)
            feed.attach(None)
            assert [await anext(events), await anext(events)] == [
                (4, frame("b1", 4)),
                (5, frame("b1", 5)),
            ]


async def test_subscribe_on_first_watcher_unsubscribe_after_last(
    make_bus: BusFactory, make_hub: MakeHub, redis_admin: Redis
) -> None:
    async with asyncio.timeout(STEP * 2):
        db = EventLog()
        bus = make_bus()
        hub = await make_hub(bus, db.load_after)

        async def redis_subscribers(battle_id: str) -> int | None:
            if not isinstance(bus, RedisBus):
                return None
            [(_, count)] = await redis_admin.pubsub_numsub(bus.channel(battle_id))
            return int(count)

        one_if_redis = 1 if isinstance(bus, RedisBus) else None
        zero_if_redis = 0 if isinstance(bus, RedisBus) else None
        assert hub.local_count("b1") == 0
        async with hub.watch("b1"):
            assert bus.subscriptions == {"b1"}
            assert await redis_subscribers("b1") == one_if_redis
            async with hub.watch("b1"), hub.watch("b2"):
                assert hub.local_count("b1") == 2
                assert hub.local_count("b2") == 1
                assert bus.subscriptions == {"b1", "b2"}
                assert await redis_subscribers("b1") == one_if_redis  # one per process
            assert hub.local_count("b1") == 1
            assert hub.local_count("b2") == 0
            assert bus.subscriptions == {"b1"}
            assert await redis_subscribers("b2") == zero_if_redis
        assert hub.local_count("b1") == 0
        assert bus.subscriptions == frozenset()
        assert await redis_subscribers("b1") == zero_if_redis

        # Many spectators coming and going at once, on a few battles.
        async def spectator(battle_id: str) -> None:
            for _ in range(5):
                async with hub.watch(battle_id):
                    assert bus.subscriptions >= {battle_id}
                    await asyncio.sleep(random.random() / 500)

        async with asyncio.TaskGroup() as tasks:
            for i in range(60):
                tasks.create_task(spectator(f"c{i % 4}"))
        assert bus.subscriptions == frozenset()
        assert all(hub.local_count(f"c{i}") == 0 for i in range(4))
        for i in range(4):
            assert await redis_subscribers(f"c{i}") == zero_if_redis


async def test_watch_needs_a_started_hub(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        db = EventLog()
        bus = make_bus()
        hub = Hub(bus, db.load_after)
        with pytest.raises(HubNotStartedError):
            async with hub.watch("b1"):
                pass
        await bus.start()
        await hub.start()
        with pytest.raises(BusError, match="already started"):
            await hub.start()
        await hub.stop()
        with pytest.raises(HubNotStartedError):
            async with hub.watch("b1"):
                pass


async def test_stop_closes_feeds_and_leaves_no_tasks(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        before = asyncio.all_tasks()
        db = EventLog()
        bus = make_bus()
        hub = Hub(bus, db.load_after)
        await bus.start()
        await hub.start()
        got: list[int] = []
        async with hub.watch("b1") as feed:
            reader = asyncio.create_task(collect(feed, 0, got, 10**9))
            await db.append(bus, "b1", 3)
            await eventually(lambda: got == [1, 2, 3])
            await hub.stop()
            with pytest.raises(FeedClosedError) as info:
                await reader
            assert info.value.reason is FeedClosedReason.SHUTDOWN
        await bus.stop()
        assert asyncio.all_tasks() == before


# --------------------------------------------------------------------------- gap filling


async def test_seq_jump_is_filled_in_order_before_newer_events() -> None:
    """Messages fed straight into ``hub.on_message`` (the bus callback): 3 and 4 never arrive;
    the hub reads them from the database (the bus history has nothing), holding 5 and 6."""
    async with asyncio.timeout(STEP):
        db = EventLog()
        released = asyncio.Event()

        async def slow_load_after(battle_id: str, after_seq: int) -> list[tuple[int, bytes]]:
            await released.wait()
            return await db.load_after(battle_id, after_seq)

        bus = MemoryBus()
        hub = Hub(bus, slow_load_after)
        await bus.start()
        await hub.start()
        try:
            async with hub.watch("b1", queue_size=100) as feed:
                for seq in range(1, 8):
                    db.persist("b1", seq)
                for seq in (1, 2, 5):
                    hub.on_message("b1", seq, frame("b1", seq))
                await asyncio.sleep(0.01)
                hub.on_message("b1", 6, frame("b1", 6))  # held while the fill is waiting
                hub.on_message("b1", 2, frame("b1", 2))  # a duplicate: dropped
                assert feed.qsize() == 2
                released.set()
                got = [(await feed.get())[0] for _ in range(6)]
                assert got == [1, 2, 3, 4, 5, 6]
                hub.on_message("b1", 7, frame("b1", 7))
                assert await feed.get() == (7, frame("b1", 7))
                hub.on_message("b1", 4, frame("b1", 4))  # late and old: dropped
                assert feed.qsize() == 0
                assert hub.fills == 1
        finally:
            await hub.stop()
            await bus.stop()


async def test_reconnect_report_fills_what_the_wire_lost() -> None:
    """After the bus reports a reconnect, the hub fetches what came after its last seq even
    though no newer message arrives to reveal the gap (here from the database: the memory
    bus history never saw these events)."""
    async with asyncio.timeout(STEP):
        db = EventLog()
        bus = MemoryBus()
        hub = Hub(bus, db.load_after)
        await bus.start()
        await hub.start()
        try:
            async with hub.watch("b1") as feed:
                got: list[int] = []
                reader = asyncio.create_task(collect(feed, 0, got, 5))
                for seq in (1, 2):
                    hub.on_message("b1", seq, db.persist("b1", seq))
                await eventually(lambda: got == [1, 2])
                for seq in (3, 4, 5):  # committed and published while the listener was away
                    db.persist("b1", seq)
                hub.on_reconnect(frozenset({"b1", "not-watched-here"}))
                await reader
                assert got == [1, 2, 3, 4, 5]
                assert hub.fills == 1
        finally:
            await hub.stop()
            await bus.stop()


async def test_an_unfillable_gap_closes_the_feeds() -> None:
    async with asyncio.timeout(STEP):

        async def broken_load_after(battle_id: str, after_seq: int) -> list[tuple[int, bytes]]:
            raise OSError("database unreachable")

        bus = MemoryBus()
        hub = Hub(bus, broken_load_after, fill_attempts=2, fill_backoff=0.01)
        await bus.start()
        await hub.start()
        try:
            async with hub.watch("b1") as feed:
                hub.on_message("b1", 1, frame("b1", 1))
                hub.on_message("b1", 3, frame("b1", 3))
                await asyncio.wait_for(feed.closed.wait(), STEP)
                assert feed.close_reason is FeedClosedReason.GAP
                with pytest.raises(FeedClosedError):
                    await feed.get()
        finally:
            await hub.stop()
            await bus.stop()


async def test_too_many_held_events_close_the_feeds() -> None:
    async with asyncio.timeout(STEP):
        db = EventLog()
        never = asyncio.Event()

        async def stuck_load_after(battle_id: str, after_seq: int) -> list[tuple[int, bytes]]:
            await never.wait()
            return await db.load_after(battle_id, after_seq)

        bus = MemoryBus()
        hub = Hub(bus, stuck_load_after, max_held=3)
        await bus.start()
        await hub.start()
        try:
            async with hub.watch("b1") as feed:
                for seq in (1, 3, 4, 5):
                    hub.on_message("b1", seq, frame("b1", seq))
                assert not feed.closed.is_set()
                hub.on_message("b1", 6, frame("b1", 6))  # the fourth held event
                assert feed.close_reason is FeedClosedReason.GAP
        finally:
            await hub.stop()
            await bus.stop()


async def test_reconnect_during_the_replay_makes_resume_read_again() -> None:
    """The bus reconnects while a spectator is still replaying (nothing live delivered yet, so
    the hub has no seq to fill from): resume() itself must read again before going live."""
    async with asyncio.timeout(STEP):
        db = EventLog()
        hub: Hub

        async def load_after(battle_id: str, after_seq: int) -> list[tuple[int, bytes]]:
            snapshot = await db.load_after(battle_id, after_seq)
            if db.head(battle_id) == 3:
                for seq in (4, 5):  # committed and published while the listener was away
                    db.persist(battle_id, seq)
                hub.on_reconnect(frozenset({battle_id}))
            return snapshot

        bus = MemoryBus()
        hub = Hub(bus, load_after)
        await bus.start()
        await hub.start()
        try:
            for seq in (1, 2, 3):
                db.persist("b1", seq)
            got: list[int] = []
            async with hub.watch("b1") as feed, contextlib.aclosing(resume(feed, 0)) as events:
                async for seq, _ in events:
                    got.append(seq)
                    await asyncio.sleep(0.01)  # a socket send: the hub's fill runs meanwhile
                    if seq == 5:  # no event 6 will ever come to reveal the gap
                        break
            assert got == [1, 2, 3, 4, 5]
            assert hub.fills == 1
        finally:
            await hub.stop()
            await bus.stop()


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("since", [0, 37, 80], ids=["since-0", "since-middle", "since-head"])
async def test_resume_replays_then_goes_live(
    make_bus: BusFactory, make_hub: MakeHub, since: int
) -> None:
    async with asyncio.timeout(STEP):
        db = EventLog()
        bus = make_bus(history_size=50)  # the oldest events only in the database (memory)
        hub = await make_hub(bus, db.load_after)
        await db.append(bus, "b1", 80)
        got: list[int] = []
        async with hub.watch("b1") as feed:
            reader = asyncio.create_task(collect(feed, since, got, 90))
            await eventually(lambda: len(got) == 80 - since)
            await db.append(bus, "b1", 10)
            await reader
        assert got == list(range(since + 1, 91))


@pytest.mark.parametrize("since", [0, 137, 250], ids=["since-0", "since-middle", "since-head"])
@pytest.mark.parametrize("stale_read", [True, False], ids=["stale-db", "fresh-db"])
async def test_resume_with_live_events_racing_the_replay(
    make_bus: BusFactory, make_hub: MakeHub, since: int, stale_read: bool
) -> None:
    """The battle keeps going while the spectator replays: events are published during the
    database read (which returns either what it had before them, or them too), between the
    replayed events the socket sends, and by the runner all along. Every seq must come out
    once, in order."""
    async with asyncio.timeout(STEP * 2):
        db = EventLog()
        # 250 events with a history of 10: both backends have trimmed everything below 201.
        bus = make_bus(history_size=10)
        last = 300
        racing = 0

        async def add(count: int) -> None:
            for _ in range(count):
                if db.head("b1") < last:
                    await db.append(bus, "b1")

        async def load_after_while_battle_goes_on(
            battle_id: str, after_seq: int
        ) -> list[tuple[int, bytes]]:
            nonlocal racing
            snapshot = await db.load_after(battle_id, after_seq)
            await add(5)  # the runner commits and publishes meanwhile
            racing += 5
            return snapshot if stale_read else await db.load_after(battle_id, after_seq)

        async def runner() -> None:
            while db.head("b1") < last:
                await add(1)
                await asyncio.sleep(0.001)

        hub = await make_hub(bus, load_after_while_battle_goes_on)
        await add(250)
        got: list[int] = []
        async with hub.watch("b1", queue_size=1000) as feed, asyncio.TaskGroup() as tasks:
            tasks.create_task(runner())
            async with contextlib.aclosing(resume(feed, since)) as events:
                async for seq, data in events:
                    assert data == frame("b1", seq)
                    got.append(seq)
                    if seq % 7 == 0:
                        await add(1)  # one more turn while the socket sends
                    if seq == last:
                        break
        assert got == list(range(since + 1, last + 1))
        assert (racing > 0) == (since < 200)  # the database was read only when it had to be


async def test_resume_of_two_feeds_with_different_since(
    make_bus: BusFactory, make_hub: MakeHub
) -> None:
    async with asyncio.timeout(STEP):
        db = EventLog()
        bus = make_bus()
        hub = await make_hub(bus, db.load_after)
        await db.append(bus, "b1", 20)
        early: list[int] = []
        late: list[int] = []
        async with hub.watch("b1") as a, hub.watch("b1") as b, asyncio.TaskGroup() as tasks:
            tasks.create_task(collect(a, 3, early, 40))
            tasks.create_task(collect(b, 19, late, 40))
            for _ in range(20):
                await db.append(bus, "b1")
                await asyncio.sleep(0)
        assert early == list(range(4, 41))
        assert late == list(range(20, 41))
