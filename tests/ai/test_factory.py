"""Settings choose the judge and commentator; keys stay secret; clients are closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_rt.ai.anthropic import AnthropicProvider
from arena_rt.ai.commentator import LLMCommentator
from arena_rt.ai.factory import build_intelligence, close_intelligence
from arena_rt.ai.judge import LLMJudge
from arena_rt.ai.openai_compat import OpenAICompatProvider
from arena_rt.battle.intelligence import HeuristicCommentator, HeuristicJudge
from arena_rt.config import Settings, load_settings
from arena_rt.errors import ConfigError

KEY = "sk-ant-factory-SECRET-424242"


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"ARENA_DATA_DIR": str(tmp_path), **env})


async def test_heuristic_is_the_default(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.ai.provider == "heuristic"
    judge, commentator = build_intelligence(s)
    assert isinstance(judge, HeuristicJudge) and isinstance(commentator, HeuristicCommentator)
    await close_intelligence(judge, commentator)  # nothing to close, no error


async def test_an_anthropic_key_alone_selects_anthropic(tmp_path: Path) -> None:
    s = settings(tmp_path, ANTHROPIC_API_KEY=KEY, ARENA_JUDGE_TIMEOUT_MS="20000")
    assert s.ai.provider == "anthropic"
    assert KEY not in repr(s) and KEY not in str(s.ai)
    judge, commentator = build_intelligence(s)
    assert isinstance(judge, LLMJudge) and isinstance(commentator, LLMCommentator)
    assert isinstance(judge.provider, AnthropicProvider)
    assert judge.provider is commentator.provider  # one client, one concurrency cap
    assert judge.provider.model == "claude-opus-4-6"
    assert judge.deadline_s == pytest.approx(19.5)  # ends just before the runner's timeout
    assert KEY not in repr(judge.provider)
    await close_intelligence(judge, commentator)
    assert judge.provider._transport._client.is_closed  # type: ignore[attr-defined]


async def test_openai_compatible_settings(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        ARENA_OPENAI_BASE_URL="http://127.0.0.1:11434/v1/",
        ARENA_OPENAI_MODEL="llama3.1:8b",
        ARENA_AI_MAX_CONCURRENCY="3",
        ARENA_AI_DEADLINE_S="12.5",
    )
    assert s.ai.provider == "openai" and s.ai.openai_base_url == "http://127.0.0.1:11434/v1"
    judge, commentator = build_intelligence(s)
    assert isinstance(judge, LLMJudge) and isinstance(judge.provider, OpenAICompatProvider)
    assert judge.provider.model == "llama3.1:8b"
    assert judge.provider._transport.policy.deadline_s == 12.5  # type: ignore[attr-defined]
    await close_intelligence(judge, commentator)


async def test_the_named_provider_wins_over_a_key(tmp_path: Path) -> None:
    s = settings(tmp_path, ANTHROPIC_API_KEY=KEY, ARENA_AI_PROVIDER="heuristic")
    judge, _ = build_intelligence(s)
    assert isinstance(judge, HeuristicJudge)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ARENA_AI_PROVIDER": "gpt"}, "must be one of heuristic, anthropic, openai"),
        ({"ARENA_AI_PROVIDER": "anthropic"}, "needs ANTHROPIC_API_KEY"),
        ({"ARENA_AI_PROVIDER": "openai"}, "needs ARENA_OPENAI_BASE_URL"),
        ({"ARENA_OPENAI_BASE_URL": "http://x/v1"}, "ARENA_OPENAI_MODEL"),
        ({"ARENA_OPENAI_BASE_URL": "ftp://x"}, "http:// or https://"),
        ({"ANTHROPIC_API_KEY": KEY, "ARENA_AI_DEADLINE_S": "-1"}, "must be positive"),
    ],
)
def test_bad_ai_settings_are_refused(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        settings(tmp_path, **env)
    assert KEY not in str(caught.value)
