"""Full battles over real sockets against a real server process, in both configurations."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.clients import Bot, agent_path, connect, spectator_path
from tests.helpers_http import auth, create_battle, register

FAST = {"startDelayMs": 200, "turnDurationMs": 3000, "voteDurationMs": 600}


def assert_gap_free(events: list[dict[str, Any]], first: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), seqs


async def fetch_events(http: httpx.AsyncClient, room: str, since: int = 0) -> list[dict[str, Any]]:
    response = await http.get(f"/api/battles/{room}/events", params={"since": since})
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def until_watched_by(http: httpx.AsyncClient, room: str, count: int) -> None:
    """The battle resource counts its spectators (over every node; Redis-backed in production)."""
    async with asyncio.timeout(10):
        while (await http.get(f"/api/battles/{room}")).json()["spectatorCount"] != count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("mode", "seats", "extra"),
    [
        ("HEAD_TO_HEAD", 2, {}),
        ("TEAM", 4, {}),
        ("FREE_FOR_ALL", 4, {}),
    ],
)
async def test_full_battle_reaches_completed(
    server_process: str, mode: str, seats: int, extra: dict[str, Any]
) -> None:
    base = server_process
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        agents = [await register(http) for _ in range(seats)]
        battle = await create_battle(
            http,
            agents[0]["apiKey"],
            mode=mode,
            maxParticipants=seats,
            maxTurns=seats * 2,
            **FAST,
            **extra,
        )
        room = battle["roomCode"]
        async with connect(base, spectator_path(room)) as spectator:
            snapshot = await spectator.wait_type("snapshot")
            assert snapshot["lastSeq"] == 0 and snapshot["turns"] == []
            await until_watched_by(http, room, 1)
            bots = []
            clients = []
            try:
                for agent in agents:
                    ctx = connect(base, agent_path(room), headers=auth(agent["apiKey"]))
                    client = await ctx.__aenter__()
                    clients.append(ctx)
                    welcome = await client.wait_type("welcome")
                    assert welcome["you"]["agentId"] == agent["id"]
                    assert welcome["sessionToken"].startswith("st_")
                    bots.append(Bot(client, agent["id"]))
                result = await spectator.wait_type("result", timeout=60)
                await spectator.wait_type("state", status="COMPLETED", timeout=10)
            finally:
                for bot in bots:
                    await bot.stop()
                for ctx in clients:
                    await ctx.__aexit__(None, None, None)

        assert "Heuristic judge" in result["reasoning"]  # the built-in judge says what it is
        live = spectator.events()
        assert_gap_free(live)
        logged = await fetch_events(http, room)
        assert live == logged
        turns = [e for e in logged if e["type"] == "turn"]
        assert [t["turnNumber"] for t in turns] == list(range(1, seats * 2 + 1))
        commentary = [e for e in logged if e["type"] == "commentary"]
        assert {c["turnNumber"] for c in commentary} == {t["turnNumber"] for t in turns}

        final = (await http.get(f"/api/battles/{room}")).json()
        assert final["status"] == "COMPLETED"
        assert final["judgeReasoning"] == result["reasoning"]
        assert final["lastSeq"] == logged[-1]["seq"]
        transcript = (await http.get(f"/api/battles/{room}/transcript")).json()
        assert [t["turnNumber"] for t in transcript["turns"]] == list(range(1, seats * 2 + 1))
        assert all(t["commentary"] for t in transcript["turns"])
        records = [(await http.get(f"/api/agents/{a['id']}")).json() for a in agents]
        assert all(r["wins"] + r["losses"] + r["draws"] == 1 for r in records)
        # Ratings moved in the same transaction as the result, and the result says how.
        ratings = result["ratings"]
        assert set(ratings) == {a["id"] for a in agents}
        for record in records:
            change = ratings[record["id"]]
            assert record["rating"] == pytest.approx(change["after"], abs=0.01)
            [recent] = record["recentBattles"]
            assert recent["roomCode"] == room and recent["ratingAfter"] == pytest.approx(
                change["after"], abs=0.01
            )
            if recent["outcome"] == "win":
                assert change["after"] > change["before"]
            elif recent["outcome"] == "loss":
                assert change["after"] < change["before"]
        if result["winnerId"] is None and result.get("winningTeamId") is None:
            assert all(r["draws"] == 1 for r in records)
