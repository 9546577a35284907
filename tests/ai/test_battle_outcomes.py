"""Each provider through whole battles, whatever its judge does: a good verdict, malformed JSON,
a timeout, 429 then success, 500s until the deadline. The battle always completes with a
stored, readable reasoning; only a valid verdict decides it, otherwise the vote tally does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from judge_fakes import by_marker
from llm_server import ANTHROPIC_KEY, Call, FakeLLM, answer, api_error
from starlette.responses import Response

from arena_rt.config import load_settings
from tests.clients import Bot, agent_path, connect, spectator_path
from tests.helpers_http import auth, create_battle, register
from tests.support import run_server

FAST = {"startDelayMs": 100, "turnDurationMs": 5000, "voteDurationMs": 300, "maxTurns": 2}
Judge = Callable[[Call, list[str]], Awaitable[Response]]


def env_for(provider: str, llm: FakeLLM, tmp_path: Path) -> dict[str, str]:
    common = {
        "ARENA_DATA_DIR": str(tmp_path),
        "ARENA_REGISTRATIONS_PER_MINUTE": "100000",
        "ARENA_AI_DEADLINE_S": "1.5",
    }
    if provider == "anthropic":
        return {
            **common,
            "ARENA_AI_PROVIDER": "anthropic",
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "ARENA_ANTHROPIC_BASE_URL": llm.anthropic_base,
            "ARENA_ANTHROPIC_MODEL": "claude-test",
        }
    return {
        **common,
        "ARENA_AI_PROVIDER": "openai",
        "ARENA_OPENAI_BASE_URL": llm.openai_base,
        "ARENA_OPENAI_MODEL": "local-test",
    }


async def good(call: Call, agents: list[str]) -> Response:
    # Consistent whichever side is shown first: the first agent's turns score higher.
    marks = {agents[0]: (9.0, 9, 8, 8, 7), agents[1]: (5.0, 5, 6, 5, 6)}
    return answer(call, by_marker(marks)(call))


async def malformed(call: Call, agents: list[str]) -> Response:
    return answer(call, "I think the first speaker won, roughly.")


async def too_slow(call: Call, agents: list[str]) -> Response:
    await asyncio.sleep(5)
    return await good(call, agents)


def rate_limited_once() -> Judge:
    seen: set[str] = set()

    async def judge(call: Call, agents: list[str]) -> Response:
        if call.api not in seen:
            seen.add(call.api)
            return api_error(call, 429, "slow down", {"retry-after": "0"})
        return await good(call, agents)

    return judge


async def down(call: Call, agents: list[str]) -> Response:
    return api_error(call, 500, "upstream down")


SCENARIOS: dict[str, tuple[Callable[[], Judge], bool]] = {
    # name: (judge factory, whether the judge's verdict decides)
    "good verdict": (lambda: good, True),
    "malformed JSON": (lambda: malformed, False),
    "timeout": (lambda: too_slow, False),
    "429 then success": (rate_limited_once, True),
    "500s until the deadline": (lambda: down, False),
}


async def play(
    env: dict[str, str], llm: FakeLLM, judge: Judge
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    async with (
        run_server(load_settings(env)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        agents = [await register(http) for _ in range(2)]
        ids = [a["id"] for a in agents]

        async def handler(call: Call) -> Response:
            if "judge of MoltArena" in call.system:
                return await judge(call, ids)
            return answer(call, "A sharp opening. The reply will need evidence.")

        llm.handler = handler
        room = (await create_battle(http, agents[0]["apiKey"], **FAST))["roomCode"]
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
            finally:
                for bot in bots:
                    await bot.stop()
        stored = (await http.get(f"/api/battles/{room}")).json()
        return result, stored, ids


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_the_battle_always_completes(
    llm: FakeLLM, tmp_path: Path, provider: str, scenario: str
) -> None:
    make_judge, judge_decides = SCENARIOS[scenario]
    result, stored, agents = await play(env_for(provider, llm, tmp_path), llm, make_judge())

    assert stored["status"] == "COMPLETED"
    assert stored["judgeReasoning"] == result["reasoning"] and len(result["reasoning"]) > 20
    if judge_decides:
        assert result["decidedBy"].startswith("ai-judge:")
        assert result["winnerId"] == agents[0]
        assert result["scores"] and result["ratings"][agents[0]]["after"] > 1200
    else:
        assert result["decidedBy"] == "tally"
        assert "tally" in result["reasoning"]
    judge_calls = [c for c in llm.calls if "judge of MoltArena" in c.system]
    assert judge_calls and all(c.api == provider for c in judge_calls)
