"""Judge and commentator from settings: the heuristic (offline default) or an LLM provider.

``ARENA_AI_PROVIDER`` = heuristic | anthropic | openai (resolved in ``config.load_ai_settings``:
with ``ANTHROPIC_API_KEY`` set and no provider named, anthropic). Both LLM roles share one
provider, so one connection pool and one concurrency cap. ``close_intelligence`` releases it.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from arena_rt.ai.anthropic import AnthropicProvider
from arena_rt.ai.base import ChatProvider
from arena_rt.ai.commentator import LLMCommentator
from arena_rt.ai.judge import LLMJudge
from arena_rt.ai.openai_compat import OpenAICompatProvider
from arena_rt.ai.retry import RetryPolicy
from arena_rt.battle.intelligence import (
    Commentator,
    HeuristicCommentator,
    HeuristicJudge,
    Judge,
)
from arena_rt.config import Settings
from arena_rt.errors import ConfigError
from arena_rt.metrics import Metrics

log = logging.getLogger("arena_rt.ai")
# The judge's own deadline ends a little before the runner's, so the runner sees the judge's
# clear error rather than its own cancellation.
JUDGE_DEADLINE_MARGIN_S = 0.5


@runtime_checkable
class _Closeable(Protocol):
    async def aclose(self) -> None: ...


def build_provider(settings: Settings, metrics: Metrics) -> ChatProvider | None:
    ai = settings.ai
    policy = RetryPolicy(max_attempts=ai.max_attempts, deadline_s=ai.call_deadline_s)
    if ai.provider == "heuristic":
        return None
    if ai.provider == "anthropic":
        if ai.anthropic_api_key is None:
            raise ConfigError("ARENA_AI_PROVIDER=anthropic needs ANTHROPIC_API_KEY")
        return AnthropicProvider(
            ai.anthropic_api_key,
            model=ai.anthropic_model,
            base_url=ai.anthropic_base_url,
            policy=policy,
            connect_timeout_s=ai.connect_timeout_s,
            read_timeout_s=ai.read_timeout_s,
            max_concurrency=ai.max_concurrency,
            metrics=metrics,
        )
    if ai.provider == "openai":
        if ai.openai_base_url is None or ai.openai_model is None:
            raise ConfigError("ARENA_AI_PROVIDER=openai needs ARENA_OPENAI_BASE_URL and _MODEL")
        return OpenAICompatProvider(
            ai.openai_base_url,
            ai.openai_model,
            api_key=ai.openai_api_key,
            policy=policy,
            connect_timeout_s=ai.connect_timeout_s,
            read_timeout_s=ai.read_timeout_s,
            max_concurrency=ai.max_concurrency,
            metrics=metrics,
        )
    raise ConfigError(f"unknown ARENA_AI_PROVIDER {ai.provider!r}")


def build_intelligence(
    settings: Settings, metrics: Metrics | None = None
) -> tuple[Judge, Commentator]:
    metrics = metrics or Metrics()
    provider = build_provider(settings, metrics)
    if provider is None:
        log.info("judge and commentator: built-in heuristics (no LLM)")
        return HeuristicJudge(), HeuristicCommentator()
    judge_deadline_s = max(
        1.0,
        min(
            settings.ai.call_deadline_s,
            settings.timings.judge_timeout_ms / 1000 - JUDGE_DEADLINE_MARGIN_S,
        ),
    )
    commentary_deadline_s = settings.timings.commentary_timeout_ms / 1000
    log.info("judge and commentator: %s model %s", provider.name, provider.model)
    return (
        LLMJudge(provider, deadline_s=judge_deadline_s, metrics=metrics),
        LLMCommentator(provider, deadline_s=commentary_deadline_s, metrics=metrics),
    )


async def close_intelligence(*parts: object) -> None:
    """Close whatever of the judge/commentator holds connections (each provider once)."""
    seen: set[int] = set()
    for part in parts:
        provider = getattr(part, "provider", part)
        if id(provider) in seen or not isinstance(provider, _Closeable):
            continue
        seen.add(id(provider))
        try:
            await provider.aclose()
        except Exception:
            log.exception("closing the AI provider failed")
