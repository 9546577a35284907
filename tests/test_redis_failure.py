"""Redis drops mid-battle (CLIENT KILL): no event is lost for spectators, live or resuming."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from tests.clients import Bot, agent_path, connect, spectator_path
from tests.conftest import REDIS_URL, postgres_env
from tests.helpers_http import auth, create_battle, register
from tests.support import spawn_server, unique


async def kill_connections(node: str) -> int:
    """Kill this node's bus connections (listener and publisher) by their client names."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        killed = 0
        for info in await client.client_list():
            if str(info.get("name", "")).startswith(f"arena-{node}:"):
                killed += int(await client.client_kill_filter(_id=info["id"]))
        return killed
    finally:
        await client.aclose()


async def test_client_kill_mid_battle_loses_nothing(migrated_pg: str, tmp_path: Path) -> None:
    node = unique("kill")
    env = {**postgres_env(migrated_pg), "ARENA_NODE_ID": node}
    with spawn_server(env, tmp_path / "server.log") as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            agents = [await register(http) for _ in range(2)]
            battle = await create_battle(
                http,
                agents[0]["apiKey"],
                maxTurns=10,
                startDelayMs=100,
                turnDurationMs=3000,
                voteDurationMs=300,
                enableCommentator=True,
            )
            room = battle["roomCode"]
            async with connect(base, spectator_path(room)) as live:
                await live.wait_type("snapshot")
                bots: list[Bot] = []
                sockets: list[Any] = []
                try:
                    for agent in agents:
                        ctx = connect(base, agent_path(room), headers=auth(agent["apiKey"]))
                        client = await ctx.__aenter__()
                        sockets.append(ctx)
                        await client.wait_type("welcome")
                        bots.append(Bot(client, agent["id"]))
                    killed = 0
                    for turn in (2, 5, 8):
                        await live.wait_type("turn", turnNumber=turn, timeout=20)
                        killed += await kill_connections(node)
                    assert killed >= 3, "the node's Redis connections were not found by name"
                    await live.wait_type("result", timeout=30)
                    await live.wait_type("state", status="COMPLETED", timeout=10)
                finally:
                    for bot in bots:
                        await bot.stop()
                    for ctx in sockets:
                        await ctx.__aexit__(None, None, None)

            logged = (await http.get(f"/api/battles/{room}/events")).json()["events"]
            assert live.events() == logged  # the live spectator missed nothing, in order
            k = len(logged) // 3
            async with connect(base, spectator_path(room, since=k)) as late:
                last = logged[-1]["seq"]
                await late.wait_for(lambda f: f.get("seq") == last, timeout=10)
                assert late.events() == logged[k:]


_HANDSHAKE = frozenset({"hello", "client|setname", "client|setinfo", "select", "NULL"})


async def test_redis_connections_killed_under_requests_fail_none_of_them(
    migrated_pg: str, tmp_path: Path
) -> None:
    """Redis closes the node's pooled connections again and again while battles are being
    created (each takes a lease through the pool): every request still succeeds, and every
    battle has its runner's lease."""
    node = unique("stale")
    env = {**postgres_env(migrated_pg), "ARENA_NODE_ID": node}
    with spawn_server(env, tmp_path / "server.log") as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            agent = await register(http)
            await create_battle(http, agent["apiKey"])  # the pool has connections now
            client = aioredis.Redis.from_url(REDIS_URL)
            killed = 0
            stop = asyncio.Event()

            async def keep_killing() -> None:
                # Stops on `stop`, not on cancellation: redis-py may swallow a CancelledError
                # that lands mid-command, and the loop then went on forever (a CI hang).
                nonlocal killed
                while not stop.is_set():
                    for info in await client.client_list():
                        # Established pooled connections, not one mid-handshake (redis-py
                        # raises a RuntimeError, not a ConnectionError, for those).
                        established = info.get("cmd") not in _HANDSHAKE
                        if info.get("name") == f"arena-{node}:pool" and established:
                            killed += int(await client.client_kill_filter(_id=info["id"]))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.3)

            killer = asyncio.create_task(keep_killing())
            created: list[dict[str, Any]] = []
            try:
                # Waves of concurrent creations until the killer has hit the pool a few times.
                for _ in range(20):
                    created += await asyncio.gather(
                        *(create_battle(http, agent["apiKey"]) for _ in range(20))
                    )  # each asserts its 201
                    if killed >= 3:
                        break
            finally:
                stop.set()
                await asyncio.wait_for(killer, 10)
            try:
                assert killed >= 3, "the node's pooled connections were not found by name"
                for battle in created:
                    lease = await client.get(f"arena:owner:{battle['id']}")
                    assert lease is not None and lease.decode().startswith(f"{node} ")
            finally:
                await client.aclose()
