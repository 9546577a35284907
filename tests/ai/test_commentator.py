"""The AI commentator over real HTTP: short, aware of earlier turns, failures raise."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from llm_server import Call, FakeLLM, answer, api_error, provider_for
from starlette.responses import Response

from arena_rt.ai.commentator import CommentaryError, LLMCommentator, tidy
from arena_rt.ai.errors import ProviderGaveUp
from arena_rt.battle.domain import BattleConfig, RequestCommentary, TranscriptTurn
from arena_rt.metrics import Metrics

CONFIG = BattleConfig("b1", "ROOM2345", "Is a hot dog a sandwich?")
EARLIER = (
    TranscriptTurn(1, "agent-x", "A sandwich is bread around a filling.", None),
    TranscriptTurn(2, "agent-y", None, "timeout"),
    TranscriptTurn(3, "agent-x", "Silence concedes the point.", None),
)
NOW = RequestCommentary(4, "agent-y", "The bun is one piece: a taco, not a sandwich.", EARLIER)


@contextlib.asynccontextmanager
async def commentator_for(llm: FakeLLM, **kw: object) -> AsyncIterator[LLMCommentator]:
    metrics = Metrics()
    commentator = LLMCommentator(
        provider_for("anthropic", llm, metrics=metrics, **kw), metrics=metrics
    )
    try:
        yield commentator
    finally:
        await commentator.aclose()


async def test_commentary_is_short_and_aware_of_earlier_turns(llm: FakeLLM) -> None:
    async def handler(call: Call) -> Response:
        return answer(
            call,
            '"Speaker B finally answers Speaker A with a taco twist. The single-hinge bun is a '
            "real counter to the bread-around-filling definition! Speaker A must now defend "
            'the bun. A fourth sentence that should be cut."',
        )

    llm.handler = handler
    async with commentator_for(llm) as commentator:
        text = await commentator.comment(CONFIG, NOW)
    assert text == (
        "agent-y finally answers agent-x with a taco twist. The single-hinge bun is a real "
        "counter to the bread-around-filling definition! agent-x must now defend the bun."
    )
    [call] = llm.calls
    assert call.body["max_tokens"] <= 200
    prompt = call.prompt
    assert "Is a hot dog a sandwich?" in prompt
    assert "A sandwich is bread around a filling." in prompt
    assert "turn 2, Speaker B: skipped (timeout)" in prompt
    assert "turn 4, Speaker B" in prompt and "a taco, not a sandwich" in prompt
    assert "agent-x" not in prompt and "agent-y" not in prompt
    assert "two or three sentences" in call.system


async def test_the_opening_turn_has_no_history(llm: FakeLLM) -> None:
    async def handler(call: Call) -> Response:
        return answer(call, "Speaker A opens with a definition.")

    llm.handler = handler
    async with commentator_for(llm) as commentator:
        text = await commentator.comment(CONFIG, RequestCommentary(1, "agent-x", "Bread!", ()))
    assert text == "agent-x opens with a definition."
    assert "opening turn" in llm.calls[0].prompt


async def test_an_empty_answer_raises(llm: FakeLLM) -> None:
    async def handler(call: Call) -> Response:
        return answer(call, "  **  ")

    llm.handler = handler
    async with commentator_for(llm) as commentator:
        with pytest.raises(CommentaryError, match="no text"):
            await commentator.comment(CONFIG, NOW)


async def test_a_failing_provider_raises(llm: FakeLLM) -> None:
    async def handler(call: Call) -> Response:
        return api_error(call, 500, "boom")

    llm.handler = handler
    async with commentator_for(llm, deadline_s=0.3, max_attempts=50) as commentator:
        with pytest.raises(ProviderGaveUp, match="HTTP 500: boom"):
            await commentator.comment(CONFIG, NOW)


def test_tidy() -> None:
    assert (
        tidy("  **Bold** claim.\n\nSecond one? Third! Fourth.  ")
        == "Bold claim. Second one? Third!"
    )
    assert len(tidy("word " * 500)) <= 700
