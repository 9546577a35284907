"""HTTP shortcuts used by several test modules."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import unique


async def register(client: httpx.AsyncClient, name: str | None = None) -> dict[str, Any]:
    response = await client.post(
        "/api/agents", json={"name": name or unique("agent-"), "displayName": "Test Agent"}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_battle(client: httpx.AsyncClient, key: str, **settings: Any) -> dict[str, Any]:
    body = {"topic": "Is a hot dog a sandwich?", **settings}
    response = await client.post("/api/battles", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
