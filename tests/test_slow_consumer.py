"""A spectator that stops reading is dropped with 4008; the battle and the other spectators
don't notice. Runs its own server process with a tiny per-spectator queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.clients import Client, Frame, connect, spectator_path, ws_url
from tests.live_helpers import (
    assert_alive,
    assert_gap_free,
    expect_ack,
    expect_refused,
    fetch_events,
    mark,
    of_type,
    table,
    wait_event,
)
from tests.support import spawn_server

QUEUE = 8  # ARENA_SPECTATOR_QUEUE for this server: frames buffered per spectator
SPECTATOR_CAP = 3  # ARENA_SPECTATORS_PER_BATTLE for this server (per process)
MAX_TURNS = 200  # the most a battle may have
TURNS_AFTER_DROP = 6
MIN_GAP_S = 1 / 15  # between one agent's turns: under the server's 20 messages/s a socket
# 8,000 characters (the cap) of 4-byte UTF-8: every turn event is ~32 KB on the wire, so the
# stuck socket's TCP buffers fill within a few turns.
HEAVY = "\U0001f4a5" * 8_000


@pytest.fixture(scope="module")
def small_queue_server(
    backend_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {
        **backend_env,
        "ARENA_SPECTATOR_QUEUE": str(QUEUE),
        "ARENA_SPECTATORS_PER_BATTLE": str(SPECTATOR_CAP),
    }
    if "DATABASE_URL" not in env:  # embedded: a SQLite file of its own (one process per file)
        env["ARENA_DATA_DIR"] = str(tmp_path_factory.mktemp("slow-embedded"))
    log_path = tmp_path_factory.mktemp("slow-server") / "server.log"
    with spawn_server(env, log_path) as url:
        yield url


@pytest.fixture
async def http(small_queue_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=small_queue_server, timeout=10) as client:
        yield client


async def stuck_spectator(base: str, path: str) -> ClientConnection:
    """A spectator whose socket has a tiny receive buffer and which never reads: the client
    library stops reading the transport after one queued frame, the kernel buffer fills."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await websockets.connect(
        ws_url(base, path), sock=sock, max_queue=1, max_size=None, open_timeout=10
    )


async def play_heavy(player: Client, number: int) -> None:
    """Play a turn of HEAVY content (sent as UTF-8: 32 KB, under the 64 KiB frame limit)."""
    ref = f"heavy{number}"
    frame = {"type": "turn", "turnNumber": number, "content": HEAVY, "ref": ref}
    start = mark(player)
    await player.conn.send(json.dumps(frame, ensure_ascii=False))
    ack = await player.wait_for(lambda f: f.get("ref") == ref, 5, start)
    assert ack["type"] == "ack", ack


async def metric(http: httpx.AsyncClient, name: str, labels: str = "") -> float:
    text = (await http.get("/metrics")).text
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def wait_dropped(http: httpx.AsyncClient, before: float, timeout: float) -> bool:
    """Whether the server counts one more slow consumer than ``before`` within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if await metric(http, "arena_slow_consumers_total") > before:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def test_a_spectator_that_stops_reading_is_dropped_with_4008_and_nobody_waits(
    small_queue_server: str, http: httpx.AsyncClient
) -> None:
    base = small_queue_server
    dropped_before = await metric(http, "arena_slow_consumers_total")
    settings = {
        "startDelayMs": 100,
        "turnDurationMs": 10_000,
        "voteDurationMs": 300,
        "maxTurns": MAX_TURNS,
    }
    async with table(base, http, join=0, **settings) as t:
        stuck = await stuck_spectator(base, spectator_path(t.room, 0))
        received: list[Frame] = []
        try:
            async with connect(base, spectator_path(t.room, 0)) as healthy:
                a = await t.seat(t.agents[0])
                b = await t.seat(t.agents[1])
                latencies = []
                last_sent = {a: 0.0, b: 0.0}
                dropped_at: int | None = None
                n = 0
                # Play until the server has given up on the stuck spectator (its TCP buffers
                # hold a few MB on loopback), then a few turns more.
                while dropped_at is None or n < dropped_at + TURNS_AFTER_DROP:
                    n += 1
                    assert n < MAX_TURNS, "the stuck spectator was never dropped"
                    player = a if n % 2 else b
                    await wait_event(player, "turn_started", turnNumber=n)
                    # Within the per-socket message limit (20/s, burst 40): acks come fast
                    # enough that an agent answering at once was refused `rate_limited`.
                    await asyncio.sleep(max(0.0, last_sent[player] + MIN_GAP_S - time.monotonic()))
                    sent = last_sent[player] = time.monotonic()
                    await play_heavy(player, n)
                    latencies.append(time.monotonic() - sent)
                    if (
                        dropped_at is None
                        and n % 10 == 0
                        and await wait_dropped(http, dropped_before, 0)
                    ):
                        dropped_at = n
                # Ends the battle: the other side wins by forfeit.
                await expect_ack(b if n % 2 else a, {"type": "leave", "ref": "bye"})
                await wait_event(healthy, "state", status="COMPLETED", timeout=20)

                # The battle went on at its normal pace, and the healthy spectator saw it all.
                assert max(latencies) < 1.0, max(latencies)
                logged = await fetch_events(http, t.room)
                assert healthy.frames == logged
                assert_gap_free(healthy.frames)
                assert len(of_type(logged, "turn")) == n
        finally:
            # Now it reads: what was buffered on the way, then the close.
            async with asyncio.timeout(20):
                try:
                    async for raw in stuck:
                        received.append(json.loads(raw))
                except websockets.ConnectionClosed:
                    pass
            await stuck.close()
        assert stuck.close_code == 4008, (stuck.close_code, stuck.close_reason)
        assert stuck.close_reason == "slow_consumer"
        assert 0 < len(received) < len(logged)
        assert received == logged[: len(received)]


async def test_spectators_over_the_cap_are_refused_and_a_freed_place_is_reused(
    small_queue_server: str, http: httpx.AsyncClient
) -> None:
    base = small_queue_server
    async with table(base, http, join=0) as t, contextlib.AsyncExitStack() as stack:
        watchers = []
        for _ in range(SPECTATOR_CAP):
            watcher = await stack.enter_async_context(connect(base, spectator_path(t.room)))
            await watcher.wait_type("snapshot")
            watchers.append(watcher)
        async with connect(base, spectator_path(t.room)) as extra:
            await expect_refused(extra, "battle_full", 4009)
        await watchers[0].close()
        await asyncio.sleep(0.2)  # the server notices the close
        async with connect(base, spectator_path(t.room)) as another:
            await another.wait_type("snapshot")
            await assert_alive(another)
