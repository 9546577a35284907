"""Two deployments on one Redis (staging beside production, concurrent CI runs): their nodes
neither hear each other nor count each other. Real Redis, real relays."""

from __future__ import annotations

import asyncio

from arena_rt.cluster.messages import Owned
from arena_rt.cluster.relay import Relay, relay_key
from tests.conftest import REDIS_URL
from tests.support import unique


async def test_relays_with_different_secrets_share_redis_without_hearing_each_other() -> None:
    ours = relay_key("our secret " + unique())
    theirs = relay_key("their secret " + unique())
    a, b = Relay(REDIS_URL, unique("a"), ours), Relay(REDIS_URL, unique("b"), ours)
    stranger = Relay(REDIS_URL, unique("s"), theirs)
    heard: dict[str, list[Owned]] = {"b": [], "stranger": []}
    b_heard = asyncio.Event()

    def b_owned(message: Owned) -> None:
        heard["b"].append(message)
        b_heard.set()

    b.on_owned = b_owned
    stranger.on_owned = heard["stranger"].append
    for relay in (a, b, stranger):
        await relay.start()
    try:
        assert await a.count_nodes() == 2  # a and b; not the other deployment's node
        assert await stranger.count_nodes() == 1
        await a.announce_owned("battle-1", 7)
        async with asyncio.timeout(5):
            await b_heard.wait()
        await asyncio.sleep(0.2)  # time for a stray copy to reach the stranger
        assert [(m.battle_id, m.token) for m in heard["b"]] == [("battle-1", 7)]
        assert heard["stranger"] == []
        assert stranger.refused == 0  # nothing even reached it to refuse
    finally:
        for relay in (a, b, stranger):
            await relay.stop()
