"""One contract, every backend: MemoryBus and RedisBus (a real Redis) pass the same tests.
Then the Redis-only behaviour: a killed listener, a killed publisher, an unreachable server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from bus_support import (
    STEP,
    BusFactory,
    EventLog,
    MakeHub,
    Recorder,
    client_ids,
    eventually,
    frame,
    kill_clients,
)
from redis.asyncio import Redis

from arena_rt.bus import (
    BusError,
    BusNotStartedError,
    BusUnavailableError,
    MemoryBus,
    RedisBus,
    from_url,
    resume,
)
from arena_rt.bus.redis_outbox import MAX_QUEUED_STEPS

# --------------------------------------------------------------------------- the contract


async def test_publish_reaches_subscriber_in_order(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP * 2):
        rec = Recorder()
        bus = make_bus(rec.on_message)
        await bus.start()
        await bus.subscribe("b1")  # returns once delivery is guaranteed
        for seq in range(1, 101):
            await bus.publish("b1", seq, frame("b1", seq))
            await bus.publish("other", seq, frame("other", seq))  # not subscribed
        await eventually(lambda: len(rec.messages) >= 100)
        assert rec.messages == [("b1", seq, frame("b1", seq)) for seq in range(1, 101)]


async def test_publish_many_delivers_a_step_once_in_order_and_keeps_it(
    make_bus: BusFactory,
) -> None:
    """A step's events in one call: each reaches the subscriber once (on Redis: at once, not
    again when its copy comes back through the listener) and lands in the history."""
    async with asyncio.timeout(STEP * 2):
        rec = Recorder()
        bus = make_bus(rec.on_message)
        await bus.start()
        await bus.subscribe("b1")
        for first in range(1, 31, 3):
            await bus.publish_many("b1", [(s, frame("b1", s)) for s in range(first, first + 3)])
        await eventually(lambda: len(rec.messages) >= 30)
        await asyncio.sleep(0.2)  # time for any duplicate to arrive through the listener
        assert rec.messages == [("b1", seq, frame("b1", seq)) for seq in range(1, 31)]
        history = await bus.history("b1", 27)
        assert history == [(seq, frame("b1", seq)) for seq in (28, 29, 30)]


async def test_steps_handed_over_without_waiting_are_published_in_order(
    make_bus: BusFactory,
) -> None:
    """``publish_soon``: runners hand their steps over and go on; every battle's events still
    arrive once, in seq order, and land in the history."""
    async with asyncio.timeout(STEP * 2):
        rec = Recorder()
        bus = make_bus(rec.on_message)
        await bus.start()
        battles = [f"b{n}" for n in range(20)]
        for battle in battles:
            await bus.subscribe(battle)
        handed = [
            bus.publish_soon(b, [(s, frame(b, s)), (s + 1, frame(b, s + 1))])
            for s in range(1, 40, 2)
            for b in battles
        ]
        await asyncio.gather(*handed)
        await eventually(lambda: all(len(rec.seqs(b)) >= 40 for b in battles))
        for battle in battles:
            assert rec.seqs(battle) == list(range(1, 41))
            assert await bus.history(battle, 38) == [(s, frame(battle, s)) for s in (39, 40)]


async def test_unsubscribe_stops_delivery(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP * 2):
        rec = Recorder()
        bus = make_bus(rec.on_message)
        await bus.start()
        await bus.subscribe("b1")
        await bus.subscribe("marker")
        await bus.publish("b1", 1, frame("b1", 1))
        await eventually(lambda: rec.seqs("b1") == [1])
        await bus.unsubscribe("b1")
        await bus.publish("b1", 2, frame("b1", 2))
        # Published after seq 2 by the same publisher: once it arrives, seq 2 would have too.
        await bus.publish("marker", 1, frame("marker", 1))
        await eventually(lambda: rec.seqs("marker") == [1])
        assert rec.seqs("b1") == [1]
        assert bus.subscriptions == {"marker"}


async def test_subscriptions_are_a_set(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        rec = Recorder()
        bus = make_bus(rec.on_message)
        await bus.start()
        await bus.subscribe("b1")
        await bus.subscribe("b1")
        assert bus.subscriptions == {"b1"}
        await bus.publish("b1", 1, frame("b1", 1))
        await eventually(lambda: rec.seqs("b1") == [1])
        await bus.unsubscribe("b1")
        await bus.unsubscribe("b1")  # not subscribed: nothing to do
        assert bus.subscriptions == frozenset()


async def test_history_after_seq(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        bus = make_bus()
        await bus.start()
        assert await bus.history("b1", 0) is None  # nothing known: read the database
        for seq in range(1, 11):
            await bus.publish("b1", seq, frame("b1", seq))
        everything = [(seq, frame("b1", seq)) for seq in range(1, 11)]
        assert await bus.history("b1", 0) == everything
        assert await bus.history("b1", -3) == everything
        assert await bus.history("b1", 4) == everything[4:]
        assert await bus.history("b1", 9) == everything[9:]
        assert await bus.history("b1", 10) == []  # at the head: nothing newer
        assert await bus.history("b1", 15) == []  # ahead of the head: nothing newer either
        assert await bus.history("b2", 0) is None


async def test_history_is_none_when_capped_away(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP * 2):
        bus = make_bus(history_size=5)
        await bus.start()
        for seq in range(1, 301):
            await bus.publish("b1", seq, frame("b1", seq))
        assert await bus.history("b1", 0) is None
        assert await bus.history("b1", 100) is None
        # At least history_size recent events are always kept (Redis may keep a few more).
        assert await bus.history("b1", 295) == [(s, frame("b1", s)) for s in range(296, 301)]
        assert await bus.history("b1", 300) == []


async def test_history_has_no_duplicates_and_no_holes(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        bus = make_bus()
        await bus.start()
        for seq in (1, 2, 2, 3):  # a repeated publish (e.g. a retry) is stored once
            await bus.publish("b1", seq, frame("b1", seq))
        assert await bus.history("b1", 0) == [(s, frame("b1", s)) for s in (1, 2, 3)]
        await bus.publish("b1", 5, frame("b1", 5))  # seq 4 never reached the bus
        assert await bus.history("b1", 0) is None  # the hole sends the caller to the database
        assert await bus.history("b1", 3) is None
        assert await bus.history("b1", 4) == [(5, frame("b1", 5))]


async def test_ping(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        bus = make_bus()
        await bus.start()
        await bus.ping()


async def test_not_started_guard(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        bus = make_bus()
        operations: list[Callable[[], object]] = [
            lambda: bus.publish("b1", 1, b"{}"),
            lambda: bus.history("b1", 0),
            lambda: bus.subscribe("b1"),
            lambda: bus.unsubscribe("b1"),
            lambda: bus.ping(),
        ]
        for operation in operations:
            with pytest.raises(BusNotStartedError):
                await operation()  # type: ignore[misc]
        await bus.start()
        with pytest.raises(BusError, match="already started"):
            await bus.start()
        await bus.stop()
        await bus.stop()  # idempotent
        for operation in operations:
            with pytest.raises(BusNotStartedError):
                await operation()  # type: ignore[misc]


async def test_stop_leaves_nothing_running(
    make_bus: BusFactory, backend: str, redis_admin: Redis
) -> None:
    async with asyncio.timeout(STEP * 2):
        before = asyncio.all_tasks()
        rec = Recorder()
        bus = make_bus(rec.on_message)
        await bus.start()
        await bus.subscribe("b1")
        await bus.publish("b1", 1, frame("b1", 1))
        await eventually(lambda: rec.seqs("b1") == [1])
        await bus.history("b1", 0)
        await bus.stop()
        assert asyncio.all_tasks() == before
        assert bus.subscriptions == frozenset()
        if isinstance(bus, RedisBus):
            names = (bus.listener_name, bus.publisher_name)

            async def connections() -> int:
                return sum([len(await client_ids(redis_admin, name)) for name in names])

            for _ in range(500):
                if await connections() == 0:
                    break
                await asyncio.sleep(0.01)
            assert await connections() == 0


async def test_a_failing_callback_does_not_stop_delivery(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        seen: list[int] = []

        def on_message(battle_id: str, seq: int, data: bytes) -> None:
            seen.append(seq)
            if seq == 2:
                raise RuntimeError("a bug in the handler")

        bus = make_bus(on_message)
        await bus.start()
        await bus.subscribe("b1")
        for seq in (1, 2, 3):
            await bus.publish("b1", seq, frame("b1", seq))
        await eventually(lambda: seen == [1, 2, 3])


async def test_bind_only_once_and_before_start(make_bus: BusFactory) -> None:
    async with asyncio.timeout(STEP):
        rec = Recorder()
        bus = make_bus()
        bus.bind(rec.on_message, rec.on_reconnect)
        with pytest.raises(BusError, match="already has"):
            bus.bind(rec.on_message)
        await bus.start()
        with pytest.raises(BusError, match="before start"):
            bus.bind(rec.on_message)


def test_from_url_picks_the_backend() -> None:
    assert isinstance(from_url(None), MemoryBus)
    assert isinstance(from_url(""), MemoryBus)
    assert isinstance(from_url("memory://", history_size=10), MemoryBus)
    assert isinstance(from_url("redis://127.0.0.1:6379/0"), RedisBus)
    assert isinstance(from_url("rediss://example.invalid:6380/0"), RedisBus)
    with pytest.raises(ValueError, match="unsupported"):
        from_url("amqp://localhost")


# --------------------------------------------------------------------------- Redis only


async def test_redis_layout_frame_stream_and_ttl(
    make_redis_bus: Callable[..., RedisBus], redis_admin: Redis
) -> None:
    async with asyncio.timeout(STEP):
        bus = make_redis_bus(history_size=50, history_ttl=600)
        await bus.start()
        for seq in range(1, 4):
            await bus.publish("b1", seq, frame("b1", seq))
        key = bus.log_key("b1")
        assert await redis_admin.xrange(key) == [
            (b"%d-0" % s, {b"data": frame("b1", s)}) for s in (1, 2, 3)
        ]
        assert 0 < await redis_admin.ttl(key) <= 600
        # The listener is one named pub/sub connection.
        listeners = [c for c in await redis_admin.client_list() if c["name"] == bus.listener_name]
        assert len(listeners) == 1


async def test_redis_steps_handed_over_at_once_reach_another_process_in_order(
    make_redis_bus: Callable[..., RedisBus],
) -> None:
    """What one node hands over in one loop round goes out in few pipelines (not a round
    trip per step) and reaches every other node's listener in each battle's seq order."""
    async with asyncio.timeout(STEP * 2):
        rec = Recorder()
        owner, other = make_redis_bus(), make_redis_bus(rec.on_message)
        await owner.start()
        await other.start()
        battles = [f"b{n}" for n in range(50)]
        for battle in battles:
            await other.subscribe(battle)
        handed = [owner.publish_soon(b, [(s, frame(b, s))]) for s in range(1, 11) for b in battles]
        await asyncio.gather(*handed)
        assert owner.publish_rounds == 1  # 500 steps handed over in one loop round
        await eventually(lambda: all(len(rec.seqs(b)) >= 10 for b in battles))
        for battle in battles:
            assert rec.seqs(battle) == list(range(1, 11))
        assert await owner.history("b7", 8) == [(s, frame("b7", s)) for s in (9, 10)]


async def test_redis_publish_queue_is_bounded_and_refuses_past_it(
    make_redis_bus: Callable[..., RedisBus],
) -> None:
    """Runners don't wait for their publishes: past the bound a step is refused at once
    (a clear error for the runner to log), not queued without end."""
    async with asyncio.timeout(STEP * 2):
        bus = make_redis_bus()
        await bus.start()
        handed = [
            bus.publish_soon(f"q{n}", [(1, frame(f"q{n}", 1))]) for n in range(MAX_QUEUED_STEPS)
        ]
        refused = bus.publish_soon("q-over", [(1, frame("q-over", 1))])
        with pytest.raises(BusUnavailableError):
            await refused
        await asyncio.gather(*handed)  # those within the bound are all published


async def test_redis_malformed_frames_are_skipped(
    make_redis_bus: Callable[..., RedisBus], redis_admin: Redis
) -> None:
    async with asyncio.timeout(STEP):
        rec = Recorder()
        bus = make_redis_bus(rec.on_message)
        await bus.start()
        await bus.subscribe("b1")
        for junk in (b"", b"no newline", b"x\n{}", b"-4\n{}", b"\n{}"):
            await redis_admin.publish(bus.channel("b1"), junk)
        await bus.publish("b1", 1, frame("b1", 1))
        await eventually(lambda: len(rec.messages) == 1)
        assert rec.messages == [("b1", 1, frame("b1", 1))]


async def test_redis_listener_reconnects_and_reports_it(
    make_redis_bus: Callable[..., RedisBus], redis_admin: Redis
) -> None:
    async with asyncio.timeout(STEP * 2):
        rec = Recorder()
        bus = make_redis_bus(rec.on_message, on_reconnect=rec.on_reconnect)
        await bus.start()
        await bus.subscribe("b1")
        await bus.subscribe("b2")
        first_id = await client_ids(redis_admin, bus.listener_name)
        assert await kill_clients(redis_admin, bus.listener_name) == 1
        await eventually(lambda: rec.reconnects == [frozenset({"b1", "b2"})])
        assert bus.reconnects == 1
        assert bus.connected
        assert await client_ids(redis_admin, bus.listener_name) != first_id
        numsub = dict(await redis_admin.pubsub_numsub(bus.channel("b1"), bus.channel("b2")))
        assert numsub == {bus.channel("b1").encode(): 1, bus.channel("b2").encode(): 1}
        await bus.publish("b2", 1, frame("b2", 1))
        await eventually(lambda: rec.seqs("b2") == [1])
        await bus.ping()


async def test_redis_listener_killed_mid_stream_hub_gets_every_seq_once(
    make_redis_bus: Callable[..., RedisBus], make_hub: MakeHub, redis_admin: Redis
) -> None:
    async with asyncio.timeout(STEP * 4):
        db = EventLog()
        bus = make_redis_bus(backoff_base=0.02)
        hub = await make_hub(bus, db.load_after)
        total = 400
        got: list[int] = []
        async with hub.watch("b1", queue_size=total) as feed:

            async def publish() -> None:
                for seq in range(1, total + 1):
                    await db.append(bus, "b1")
                    if seq in (60, 180, 300):
                        assert await kill_clients(redis_admin, bus.listener_name) == 1
                    if seq % 4 == 0:
                        await asyncio.sleep(0.001)

            async def consume() -> None:
                while len(got) < total:
                    seq, data = await feed.get()  # the raw feed: the hub alone must fill gaps
                    assert data == frame("b1", seq)
                    got.append(seq)

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(publish())
                tasks.create_task(consume())
        assert got == list(range(1, total + 1))
        assert bus.reconnects == 3
        assert hub.fills >= 3  # one per reconnect at least, plus any seq jump it saw


async def test_redis_events_published_during_the_outage_arrive_without_later_traffic(
    make_redis_bus: Callable[..., RedisBus], make_hub: MakeHub, redis_admin: Redis
) -> None:
    """The quiet tail: nothing is published after the outage, so no later seq reveals a gap;
    only the reconnect report can. One feed has live events, one has only replayed."""
    async with asyncio.timeout(STEP * 2):
        db = EventLog()
        bus = make_redis_bus(backoff_base=0.4)  # the outage lasts at least 0.2 s
        hub = await make_hub(bus, db.load_after)
        # Another process publishes (a bus delivers its own events to its own subscribers
        # without the wire, so only another's can be lost while the listener is away).
        publisher = make_redis_bus()
        await publisher.start()
        busy: list[int] = []
        quiet: list[int] = []

        async def read(battle_id: str, into: list[int]) -> None:
            async with hub.watch(battle_id) as feed, contextlib.aclosing(resume(feed, 0)) as events:
                async for seq, _ in events:
                    into.append(seq)

        async with asyncio.TaskGroup() as tasks:
            await db.append(publisher, "quiet", 2)  # before anyone watches: replayed, never live
            readers = [
                tasks.create_task(read("busy", busy)),
                tasks.create_task(read("quiet", quiet)),
            ]
            await eventually(lambda: hub.local_count("busy") == hub.local_count("quiet") == 1)
            await db.append(publisher, "busy", 3)
            await eventually(lambda: busy == [1, 2, 3] and quiet == [1, 2])
            assert await kill_clients(redis_admin, bus.listener_name) == 1
            await eventually(lambda: not bus.connected, within=1)
            await db.append(publisher, "busy", 3)  # lost on the wire...
            await db.append(publisher, "quiet", 3)
            assert not bus.connected  # ...because the listener was away
            await eventually(lambda: busy == [1, 2, 3, 4, 5, 6] and quiet == [1, 2, 3, 4, 5])
            for reader in readers:
                reader.cancel()
        assert bus.reconnects == 1
        assert hub.fills == 2  # one per watched battle, from the reconnect report alone


async def test_redis_publish_retries_once_on_a_dead_connection(
    make_redis_bus: Callable[..., RedisBus], redis_admin: Redis
) -> None:
    async with asyncio.timeout(STEP):
        rec = Recorder()
        bus = make_redis_bus(rec.on_message)
        await bus.start()
        await bus.subscribe("b1")
        await bus.publish("b1", 1, frame("b1", 1))
        assert await kill_clients(redis_admin, bus.publisher_name) >= 1  # e.g. Redis restarted
        await bus.publish("b1", 2, frame("b1", 2))
        await eventually(lambda: rec.seqs("b1") == [1, 2])
        assert await bus.history("b1", 0) == [(1, frame("b1", 1)), (2, frame("b1", 2))]


async def test_redis_unreachable_gives_clear_errors(
    make_redis_bus: Callable[..., RedisBus],
) -> None:
    async with asyncio.timeout(STEP):
        before = asyncio.all_tasks()
        bus = make_redis_bus(
            url="redis://127.0.0.1:1/0",
            start_timeout=0.2,
            subscribe_timeout=0.3,
            socket_timeout=0.5,
        )
        await bus.start()  # starts anyway: the listener keeps trying in the background
        assert not bus.connected
        with pytest.raises(BusUnavailableError, match="failed twice"):
            await bus.publish("b1", 1, b"{}")
        with pytest.raises(BusUnavailableError):
            await bus.history("b1", 0)
        with pytest.raises(BusUnavailableError):
            await bus.ping()
        with pytest.raises(BusUnavailableError, match="did not confirm SUBSCRIBE"):
            await bus.subscribe("b1")
        assert bus.subscriptions == frozenset()
        await bus.stop()
        assert asyncio.all_tasks() == before


async def test_redis_subscribe_waits_for_the_listener(
    make_redis_bus: Callable[..., RedisBus], redis_admin: Redis
) -> None:
    """A subscribe made while the listener is away is sent on reconnect, then confirmed."""
    async with asyncio.timeout(STEP):
        rec = Recorder()
        bus = make_redis_bus(rec.on_message, backoff_base=0.3)
        await bus.start()
        await kill_clients(redis_admin, bus.listener_name)
        await eventually(lambda: not bus.connected, within=1)
        await bus.subscribe("b1")
        assert bus.connected
        await bus.publish("b1", 1, frame("b1", 1))
        await eventually(lambda: rec.seqs("b1") == [1])


async def test_redis_two_processes_share_events_and_history(
    make_redis_bus: Callable[..., RedisBus], make_hub: MakeHub
) -> None:
    """What a second server process sees: live events published by the first one, and its
    history for a spectator resuming there."""
    async with asyncio.timeout(STEP):
        db = EventLog()
        owner = make_redis_bus()  # the process running the battle
        await owner.start()
        await db.append(owner, "b1", 5)
        elsewhere = make_redis_bus()  # same prefix, its own connections
        hub = await make_hub(elsewhere, db.load_after)
        got: list[int] = []
        async with hub.watch("b1") as feed, asyncio.TaskGroup() as tasks:

            async def read() -> None:
                async with contextlib.aclosing(resume(feed, 2)) as events:
                    async for seq, data in events:
                        assert data == frame("b1", seq)
                        got.append(seq)
                        if seq == 10:
                            return

            tasks.create_task(read())
            await db.append(owner, "b1", 5)
        assert got == list(range(3, 11))
        assert db.loads == 0  # the replay came from the shared Redis history
