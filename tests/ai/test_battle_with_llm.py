"""Whole battles on the embedded server with the LLM provider chosen by settings, against the
fake LLM server: the judge and commentator are really wired in, and a battle always completes
with a stored, readable reasoning — whatever the LLM does."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from judge_fakes import prefers_shown_first
from llm_server import Call, FakeLLM, answer, api_error
from starlette.responses import Response

from arena_rt.config import load_settings
from tests.clients import Bot, agent_path, connect, spectator_path
from tests.helpers_http import auth, create_battle, register
from tests.support import run_server

FAST = {"startDelayMs": 100, "turnDurationMs": 5000, "voteDurationMs": 300, "maxTurns": 4}


def env_for(llm: FakeLLM, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ARENA_DATA_DIR": str(tmp_path),
        "ARENA_REGISTRATIONS_PER_MINUTE": "100000",
        "ARENA_AI_PROVIDER": "openai",
        "ARENA_OPENAI_BASE_URL": llm.openai_base,
        "ARENA_OPENAI_MODEL": "local-test",
        **extra,
    }


async def play_battle(
    env: dict[str, str],
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], list[str]]:
    """Two bots play a HEAD_TO_HEAD battle; returns the result, the logged events, the stored
    battle and the agent ids (seat order)."""
    async with (
        run_server(load_settings(env)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        agents = [await register(http) for _ in range(2)]
        battle = await create_battle(http, agents[0]["apiKey"], **FAST)
        room = battle["roomCode"]
        async with contextlib.AsyncExitStack() as stack:
            spectator = await stack.enter_async_context(connect(base, spectator_path(room)))
            await spectator.wait_type("snapshot")
            bots = []
            for agent in agents:
                client = await stack.enter_async_context(
                    connect(base, agent_path(room), headers=auth(agent["apiKey"]))
                )
                await client.wait_type("welcome")
                bots.append(Bot(client, agent["id"]))
            try:
                result = await spectator.wait_type("result", timeout=60)
                await spectator.wait_type("state", status="COMPLETED", timeout=10)
            finally:
                for bot in bots:
                    await bot.stop()
        events = (await http.get(f"/api/battles/{room}/events")).json()["events"]
        stored = (await http.get(f"/api/battles/{room}")).json()
        return result, events, stored, [a["id"] for a in agents]


def dispatch(judge: Callable[[Call], Response], commentator: Callable[[Call], Response]) -> Any:
    async def handler(call: Call) -> Response:
        return judge(call) if "judge of MoltArena" in call.system else commentator(call)

    return handler


def commentary(call: Call) -> Response:
    return answer(call, "Speaker A presses on. The crowd leans in.")


async def test_a_position_biased_llm_judge_ends_in_a_draw(llm: FakeLLM, tmp_path: Path) -> None:
    llm.handler = dispatch(lambda call: answer(call, prefers_shown_first(call)), commentary)
    result, events, stored, agents = await play_battle(env_for(llm, tmp_path))

    assert result["winnerId"] is None and result["decidedBy"] == "ai-judge:local-test"
    assert result["reasoning"].startswith("AI judge: the LLM local-test")
    assert "the two orders disagreed" in result["reasoning"]
    assert stored["status"] == "COMPLETED" and stored["judgeReasoning"] == result["reasoning"]
    said = [e["text"] for e in events if e["type"] == "commentary"]
    assert len(said) == 4
    assert all(text.endswith("presses on. The crowd leans in.") for text in said)
    assert said[0].startswith(agents[0])  # the label is mapped back to the agent id
    judge_calls = [c for c in llm.calls if "judge of MoltArena" in c.system]
    assert len(judge_calls) == 2


async def test_a_failing_llm_leaves_the_decision_to_the_tally(llm: FakeLLM, tmp_path: Path) -> None:
    llm.handler = dispatch(
        lambda call: api_error(call, 500, "down"), lambda call: api_error(call, 500, "down")
    )
    env = env_for(llm, tmp_path, ARENA_AI_DEADLINE_S="0.5")
    result, events, stored, _ = await play_battle(env)
    assert result["decidedBy"] == "tally"
    assert stored["status"] == "COMPLETED" and stored["judgeReasoning"]
    assert stored["judgeReasoning"] == result["reasoning"]
    assert not [e for e in events if e["type"] == "commentary"]  # skipped, never blocking
