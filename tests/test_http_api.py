"""The HTTP API of PROTOCOL.md section 1, over real sockets, in both configurations."""

from __future__ import annotations

import asyncio

import httpx

from tests.helpers_http import auth, create_battle, register
from tests.support import unique


async def test_register_returns_key_once_and_profile_hides_it(client: httpx.AsyncClient) -> None:
    agent = await register(client)
    assert agent["apiKey"].startswith("ak_")
    profile = (await client.get(f"/api/agents/{agent['id']}")).json()
    assert profile["name"] == agent["name"]
    assert profile["rating"] == 1200
    assert (profile["wins"], profile["losses"], profile["draws"], profile["battles"]) == (
        0,
        0,
        0,
        0,
    )
    assert profile["reputation"] == {"average": None, "count": 0}
    assert "apiKey" not in profile and agent["apiKey"] not in str(profile)


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    name = unique("dup-")
    await register(client, name)
    again = await client.post("/api/agents", json={"name": name, "displayName": "Other"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate"


async def test_bad_registration_names_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({"name": "NO CAPS", "displayName": "x"}, "name"),
        ({"name": "ok-name", "displayName": ""}, "displayName"),
        ({"name": "ok-name", "displayName": "x" * 101}, "displayName"),
        ({"displayName": "x"}, "name"),
        ({"name": "ok-name", "displayName": "x", "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = await client.post("/api/agents", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "bad_message"
        assert field in error["message"], (field, error)
    malformed = await client.post("/api/agents", content=b"{not json")
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "bad_message"


async def test_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/agents/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_create_get_and_list_battle(client: httpx.AsyncClient) -> None:
    agent = await register(client)
    battle = await create_battle(
        client, agent["apiKey"], maxTurns=4, turnDurationMs=5000, enableTTS=False
    )
    assert battle["status"] == "LOBBY"
    assert battle["mode"] == "HEAD_TO_HEAD"
    assert (battle["maxTurns"], battle["turnDurationMs"], battle["maxParticipants"]) == (4, 5000, 2)
    assert (battle["startDelayMs"], battle["voteDurationMs"]) == (10_000, 30_000)
    assert battle["enableJudge"] and battle["enableCommentator"] and not battle["enableTTS"]
    assert battle["participants"] == [] and battle["lastSeq"] == 0
    assert len(battle["roomCode"]) <= 10

    fetched = (await client.get(f"/api/battles/{battle['roomCode']}")).json()
    assert fetched == battle
    listed = (await client.get("/api/battles", params={"status": "LOBBY", "limit": 100})).json()
    assert battle["roomCode"] in [b["roomCode"] for b in listed["battles"]]


async def test_battle_requires_auth(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/battles", json={"topic": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    wrong = await client.post(
        "/api/battles", json={"topic": "x"}, headers=auth("ak_0123456789abcdef_nottherealsecret")
    )
    assert wrong.status_code == 401


async def test_bad_battle_settings_name_the_field(client: httpx.AsyncClient) -> None:
    key = (await register(client))["apiKey"]
    cases = [
        ({"topic": ""}, "topic"),
        ({"topic": "x" * 501}, "topic"),
        ({"topic": "t", "mode": "DEATHMATCH"}, "mode"),
        ({"topic": "t", "maxParticipants": 11}, "maxParticipants"),
        ({"topic": "t", "maxTurns": 0}, "maxTurns"),
        ({"topic": "t", "mode": "TEAM", "maxParticipants": 3}, "maxParticipants"),
        ({"topic": "t", "mode": "HEAD_TO_HEAD", "maxParticipants": 3}, "maxParticipants"),
        ({"topic": "t", "maxTurn": 3}, "maxTurn"),
    ]
    for body, field in cases:
        response = await client.post("/api/battles", json=body, headers=auth(key))
        assert response.status_code == 400, (body, response.text)
        assert field in response.json()["error"]["message"]


async def test_list_paginates_newest_first_with_status_filter(client: httpx.AsyncClient) -> None:
    key = (await register(client))["apiKey"]
    topic = unique("pagination-")
    made = [
        (await create_battle(client, key, topic=topic, mode="FREE_FOR_ALL", maxParticipants=3))[
            "roomCode"
        ]
        for _ in range(5)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        params = {"status": "LOBBY,STARTING", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/battles", params=params)).json()
        assert all(b["status"] in ("LOBBY", "STARTING") for b in page["battles"])
        seen += [b["roomCode"] for b in page["battles"] if b["topic"] == topic]
        cursor = page["nextCursor"]
        if cursor is None or len(seen) == len(made):
            break
    assert seen == list(reversed(made))
    none = (await client.get("/api/battles", params={"status": "COMPLETED", "limit": 100})).json()
    assert topic not in [b["topic"] for b in none["battles"]]
    bad = await client.get("/api/battles", params={"status": "PARTY"})
    assert bad.status_code == 400 and "PARTY" in bad.json()["error"]["message"]
    bad_cursor = await client.get("/api/battles", params={"cursor": "!!!"})
    assert bad_cursor.status_code == 400


async def test_feedback_sanitized_once_per_battle_and_counted(client: httpx.AsyncClient) -> None:
    rater, rated, other = await register(client), await register(client), await register(client)
    battle = await create_battle(client, rater["apiKey"])
    body = {
        "toAgentId": rated["id"],
        "battleId": battle["id"],
        "rating": 4,
        "comment": "Sharp <script>alert(1)</script><b>rebuttals</b> & good pace",
    }
    first = await client.post("/api/feedback", json=body, headers=auth(rater["apiKey"]))
    assert first.status_code == 201, first.text
    assert first.json()["comment"] == "Sharp rebuttals & good pace"
    again = await client.post("/api/feedback", json=body, headers=auth(rater["apiKey"]))
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate"
    second = {"toAgentId": rated["id"], "battleId": battle["id"], "rating": 1}
    assert (
        await client.post("/api/feedback", json=second, headers=auth(other["apiKey"]))
    ).status_code == 201

    profile = (await client.get(f"/api/agents/{rated['id']}")).json()
    assert profile["reputation"] == {"average": 2.5, "count": 2}

    for bad, field in [
        ({"toAgentId": rated["id"], "rating": 6}, "rating"),
        ({"toAgentId": rated["id"], "rating": 0}, "rating"),
        ({"toAgentId": rater["id"], "rating": 3}, "toAgentId"),
        ({"toAgentId": "missing", "rating": 3}, "toAgentId"),
    ]:
        response = await client.post("/api/feedback", json=bad, headers=auth(rater["apiKey"]))
        assert response.status_code in (400, 404), response.text
        assert field in response.json()["error"]["message"]
    assert (await client.get(f"/api/agents/{rated['id']}")).json()["reputation"]["count"] == 2


async def test_key_rotation_invalidates_old_key(client: httpx.AsyncClient) -> None:
    agent = await register(client)
    old = agent["apiKey"]
    await create_battle(client, old)  # the old key works (and is now cached)
    rotated = await client.post(f"/api/agents/{agent['id']}/keys", headers=auth(old))
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()["apiKey"]
    assert new != old
    stale = await client.post("/api/battles", json={"topic": "x"}, headers=auth(old))
    assert stale.status_code == 401
    await create_battle(client, new)
    other = await register(client)
    foreign = await client.post(f"/api/agents/{agent['id']}/keys", headers=auth(other["apiKey"]))
    assert foreign.status_code == 403


async def test_leaderboard_orders_by_rating(client: httpx.AsyncClient) -> None:
    board = (await client.get("/api/leaderboard", params={"limit": 100})).json()["agents"]
    ratings = [row["rating"] for row in board]
    assert ratings == sorted(ratings, reverse=True)
    assert [row["rank"] for row in board] == list(range(1, len(board) + 1))
    assert (await client.get("/api/leaderboard", params={"mode": "NOPE"})).status_code == 400


async def test_healthz_and_metrics(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["checks"] == {"database": "ok", "bus": "ok"}
    await client.get("/api/agents/nope")
    text = (await client.get("/metrics")).text
    assert (
        'arena_http_requests_total{method="GET",route="/api/agents/{agent_id}",status="404"}'
        in text
    )
    assert "arena_http_request_seconds_bucket" in text
    assert 'arena_errors_total{code="not_found"}' in text


async def test_concurrent_keyed_requests_share_the_cache(client: httpx.AsyncClient) -> None:
    key = (await register(client))["apiKey"]
    responses = await asyncio.gather(
        *(client.post("/api/battles", json={"topic": "t"}, headers=auth(key)) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [201] * 10
