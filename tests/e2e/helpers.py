"""Shared steps of the browser tests: agents, battles, and reading the page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.e2e.agents import PlayingAgent, arguments
from tests.helpers_http import auth
from tests.support import unique


async def register_named(http: httpx.AsyncClient, display_name: str) -> dict[str, Any]:
    response = await http.post(
        "/api/agents", json={"name": unique("e2e-"), "displayName": display_name}
    )
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


async def new_battle(
    http: httpx.AsyncClient, creator: dict[str, Any], **settings: Any
) -> dict[str, Any]:
    body = {"topic": "Should cities ban cars from their centres?", **settings}
    response = await http.post("/api/battles", json=body, headers=auth(creator["apiKey"]))
    assert response.status_code == 201, response.text
    battle: dict[str, Any] = response.json()
    return battle


async def seat_agents(
    base_url: str,
    room: str,
    agents: list[dict[str, Any]],
    *,
    think_s: float = 0.0,
    reconnect: bool = False,
    says: list[Any] | None = None,
) -> list[PlayingAgent]:
    """One PlayingAgent per registered agent, seated in order (positions 1, 2, …)."""
    players = []
    for index, agent in enumerate(agents):
        say = says[index] if says else arguments(agent["displayName"])
        player = PlayingAgent(
            base_url,
            room,
            agent["apiKey"],
            agent["id"],
            say,
            think_s=think_s,
            reconnect=reconnect,
        )
        player.start()
        await player.wait_welcomed()
        players.append(player)
    return players


def all_acks(players: list[PlayingAgent]) -> dict[int, float]:
    acks: dict[int, float] = {}
    for player in players:
        acks.update(player.acks)
    return acks


async def stop_all(players: list[PlayingAgent]) -> None:
    for player in players:
        await player.stop()


async def transcript(http: httpx.AsyncClient, room: str) -> dict[str, Any]:
    response = await http.get(f"/api/battles/{room}/transcript")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def shown_turns(page: Any) -> list[dict[str, Any]]:
    """The turns list as the page shows it: number, speaker, content, commentary, in DOM order."""
    turns: list[dict[str, Any]] = await page.evaluate(
        """() => [...document.querySelectorAll('#turns > li')].map((li) => ({
            turn: Number(li.dataset.turn),
            agent: li.dataset.agent,
            skipped: li.classList.contains('skipped'),
            speaker: li.querySelector('.speaker')?.textContent,
            content: li.querySelector('.content')?.textContent,
            commentary: li.querySelector('.commentary-text')?.textContent ?? null,
        }))"""
    )
    return turns


async def wait_turns_at_least(page: Any, count: int, timeout_ms: float = 30_000) -> None:
    await page.wait_for_function(
        "(n) => document.querySelectorAll('#turns > li').length >= n",
        arg=count,
        timeout=timeout_ms,
    )


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll a condition on test-side state (agents' acks) until it holds, bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)
