"""``arena-rt demo``: the embedded server plus two bot agents playing a short battle.

The bots are ordinary clients of the public contract (HTTP to register and create, one
WebSocket each to play), so the demo also shows how an agent is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from typing import Any

import httpx
import uvicorn
import websockets

from arena_rt.config import Settings
from arena_rt.web.app import create_app

log = logging.getLogger("arena_rt.demo")

TOPIC = "Should cities ban cars from their centres?"
DEMO_BATTLE = {
    "topic": TOPIC,
    "maxTurns": 6,
    "startDelayMs": 3_000,
    "turnDurationMs": 8_000,
    "voteDurationMs": 5_000,
}
STANCES = {
    "pro": [
        "Car-free centres cut air pollution, and cleaner air means fewer asthma admissions.",
        "Streets given back to people bring more foot traffic, and shops earn more from walkers.",
        "Buses and trams move far more people per lane than private cars ever can.",
        "Every city that tried it, from Oslo to Pontevedra, kept the change after the trial.",
    ],
    "con": [
        "A ban punishes people who cannot walk far or carry goods: access matters more than air.",
        "Deliveries and trades need vehicles; a ban pushes costs onto small businesses.",
        "Public transport in most cities is not ready to absorb every car trip overnight.",
        "Pricing and clean-vehicle rules cut pollution without closing streets to everyone.",
    ],
}


def compose(stance: str, turn: int, opponent_last: str | None, rng: random.Random) -> str:
    """A short argument that answers the opponent's last point (so the judge sees engagement)."""
    claim = STANCES[stance][(turn // 2) % len(STANCES[stance])]
    if opponent_last:
        words = [w.strip(".,:;") for w in opponent_last.split() if len(w) > 5]
        picked = rng.sample(words, k=min(2, len(words))) if words else []
        rebuttal = (
            f"My opponent leans on {' and '.join(picked)}, but that misses the point. "
            if picked
            else ""
        )
        return rebuttal + claim
    return claim


async def play(base_url: str, room: str, key: str, agent_id: str, stance: str) -> None:
    rng = random.Random(agent_id)
    url = base_url.replace("http://", "ws://", 1) + f"/ws/battles/{room}/agent"
    opponent_last: str | None = None
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        async for raw in ws:
            frame: dict[str, Any] = json.loads(raw)
            kind = frame.get("type")
            if kind == "turn" and frame["agentId"] != agent_id:
                opponent_last = frame["content"]
            elif kind == "turn_started" and frame["agentId"] == agent_id:
                await asyncio.sleep(rng.uniform(1.0, 2.5))  # "thinking", so people can follow
                content = compose(stance, frame["turnNumber"], opponent_last, rng)
                await ws.send(
                    json.dumps(
                        {"type": "turn", "turnNumber": frame["turnNumber"], "content": content}
                    )
                )
            elif kind == "result":
                return


async def run_demo(settings: Settings, host: str, port: int) -> None:
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, ws="websockets-sansio", log_config=None
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                return
            await asyncio.sleep(0.05)
        base = f"http://{host}:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            suffix = random.randrange(10_000)
            bots = []
            for stance in ("pro", "con"):
                response = await http.post(
                    "/api/agents",
                    json={
                        "name": f"demo-{stance}-{suffix}",
                        "displayName": f"Demo {stance.title()}",
                    },
                )
                response.raise_for_status()
                bots.append((stance, response.json()))
            created = await http.post(
                "/api/battles",
                json=DEMO_BATTLE,
                headers={"Authorization": f"Bearer {bots[0][1]['apiKey']}"},
            )
            created.raise_for_status()
            room = created.json()["roomCode"]
        print(f"\n  Watch the battle: {base}/battles/{room}", flush=True)
        print(f"  Event log:        {base}/api/battles/{room}/events\n", flush=True)
        async with asyncio.TaskGroup() as group:
            for stance, agent in bots:
                group.create_task(play(base, room, agent["apiKey"], agent["id"], stance))
        print(
            f"  Battle {room} is over: {base}/api/battles/{room}/transcript  (Ctrl-C to stop)",
            flush=True,
        )
        await serving
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
