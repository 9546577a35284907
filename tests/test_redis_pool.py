"""Creating a battle when Redis cannot be reached at all (a cut proxy): 503 ``unavailable``
and nothing left behind, so the client simply retries; 201 once Redis is back. (Killed pooled
connections are in test_redis_failure.py.) PostgreSQL + Redis only: embedded mode has no Redis.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx

from tests.conftest import REDIS_URL, postgres_env
from tests.helpers_http import auth, register
from tests.support import spawn_server, unique
from tests.tcp_proxy import proxy_to


async def test_with_redis_unreachable_creating_a_battle_is_503_and_leaves_no_row(
    migrated_pg: str, tmp_path: Path
) -> None:
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    with proxy_to(host, int(port)) as proxy:
        env = {**postgres_env(migrated_pg), "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}
        with spawn_server(env, tmp_path / "server.log") as base:
            async with httpx.AsyncClient(base_url=base, timeout=20) as http:
                agent = await register(http)
                topic = f"Orphans? {unique()}"
                body = {"topic": topic, "startDelayMs": 100}
                proxy.cut()
                refused = await http.post("/api/battles", json=body, headers=auth(agent["apiKey"]))
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "unavailable"
                assert await battles_with_topic(migrated_pg, topic) == 0

                proxy.restore()
                created = await http.post("/api/battles", json=body, headers=auth(agent["apiKey"]))
                assert created.status_code == 201, created.text
                assert await battles_with_topic(migrated_pg, topic) == 1


async def battles_with_topic(pg_url: str, topic: str) -> int:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM battles WHERE topic = $1", topic)
        return count
    finally:
        await conn.close()
