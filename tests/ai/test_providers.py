"""Both providers against a local server speaking each API's wire format, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from llm_server import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    Call,
    FakeLLM,
    answer,
    api_error,
    free_port,
    provider_for,
)
from starlette.responses import Response

from arena_rt.ai.providers import (
    AnthropicProvider,
    Message,
    ProviderGaveUp,
    ProviderRejected,
    RetryPolicy,
)
from arena_rt.ai.retry import retry_after_s
from arena_rt.config import Secret
from arena_rt.metrics import Metrics

APIS = ["anthropic", "openai"]
HELLO = [Message("user", "Say hello.")]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def complete(provider: object, **kw: object) -> object:
    return await provider.complete(  # type: ignore[attr-defined]
        "You are terse.", HELLO, max_tokens=50, temperature=0.0, **kw
    )


@pytest.mark.parametrize("api", APIS)
async def test_good_answer_carries_text_usage_latency_and_model(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        return answer(call, "Hello there.", input_tokens=17, output_tokens=3)

    llm.handler = handler
    metrics = Metrics()
    async with contextlib.aclosing(provider_for(api, llm, metrics=metrics)) as provider:
        result = await complete(provider, role="judge")
    assert result.text == "Hello there."  # type: ignore[attr-defined]
    assert (result.input_tokens, result.output_tokens) == (17, 3)  # type: ignore[attr-defined]
    assert 0 < result.latency_s < 5  # type: ignore[attr-defined]
    assert result.model in ("claude-test", "local-test")  # type: ignore[attr-defined]

    [call] = llm.calls
    assert call.system == "You are terse."
    assert call.turns == [{"role": "user", "content": "Say hello."}]
    assert call.body["max_tokens"] == 50 and call.body["temperature"] == 0.0
    if api == "anthropic":
        assert call.headers["x-api-key"] == ANTHROPIC_KEY
        assert call.headers["anthropic-version"] == "2023-06-01"
        assert call.body["model"] == "claude-test"
    else:
        assert call.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert call.body["messages"][0] == {"role": "system", "content": "You are terse."}

    assert sample(metrics, "arena_ai_calls_total", provider=api, role="judge", outcome="ok") == 1
    assert sample(metrics, "arena_ai_tokens_total", provider=api, direction="input") == 17
    assert sample(metrics, "arena_ai_tokens_total", provider=api, direction="output") == 3
    assert sample(metrics, "arena_ai_latency_seconds_count", provider=api) == 1


async def test_openai_compatible_without_a_key_sends_no_authorization(llm: FakeLLM) -> None:
    async def handler(call: Call) -> Response:
        return answer(call, "ok")

    llm.handler = handler
    async with contextlib.aclosing(provider_for("openai", llm, with_key=False)) as provider:
        await complete(provider)
    assert "authorization" not in llm.calls[0].headers


@pytest.mark.parametrize("api", APIS)
async def test_malformed_body_is_retried_then_the_good_answer_is_used(
    llm: FakeLLM, api: str
) -> None:
    async def handler(call: Call) -> Response:
        if call.n == 1:
            return Response(b'{"content": [{"type": "text", "te', media_type="application/json")
        return answer(call, "second time lucky")

    llm.handler = handler
    metrics = Metrics()
    async with contextlib.aclosing(provider_for(api, llm, metrics=metrics)) as provider:
        result = await complete(provider)
    assert result.text == "second time lucky"  # type: ignore[attr-defined]
    assert len(llm.calls) == 2
    assert sample(metrics, "arena_ai_retries_total", provider=api, reason="bad_response") == 1


@pytest.mark.parametrize("api", APIS)
async def test_a_read_timeout_is_retried(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        if call.n == 1:
            await asyncio.sleep(1.0)
        return answer(call, "made it")

    llm.handler = handler
    metrics = Metrics()
    provider = provider_for(api, llm, metrics=metrics, read_timeout_s=0.2)
    async with contextlib.aclosing(provider):
        started = time.monotonic()
        result = await complete(provider)
    assert result.text == "made it"  # type: ignore[attr-defined]
    assert time.monotonic() - started < 0.9  # did not wait for the slow answer
    assert sample(metrics, "arena_ai_retries_total", provider=api, reason="timeout") == 1


@pytest.mark.parametrize("api", APIS)
async def test_timeouts_until_the_deadline_raise_a_clear_error(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        await asyncio.sleep(1.5)
        return answer(call, "too late")

    llm.handler = handler
    metrics = Metrics()
    provider = provider_for(api, llm, metrics=metrics, deadline_s=0.6, read_timeout_s=0.25)
    async with contextlib.aclosing(provider):
        started = time.monotonic()
        with pytest.raises(ProviderGaveUp) as caught:
            await complete(provider, role="commentator")
    assert time.monotonic() - started < 1.2
    message = str(caught.value)
    assert message.startswith(f"{api}: gave up after")
    assert "deadline 0.6s" in message and "no answer" in message
    assert caught.value.outcome == "timeout"
    assert (
        sample(metrics, "arena_ai_calls_total", provider=api, role="commentator", outcome="timeout")
        == 1
    )


@pytest.mark.parametrize("api", APIS)
async def test_429_waits_for_retry_after_then_succeeds(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        if call.n == 1:
            return api_error(call, 429, "slow down", headers={"retry-after": "1"})
        return answer(call, "thanks for waiting")

    llm.handler = handler
    metrics = Metrics()
    async with contextlib.aclosing(provider_for(api, llm, metrics=metrics)) as provider:
        started = time.monotonic()
        result = await complete(provider)
        waited = time.monotonic() - started
    assert result.text == "thanks for waiting"  # type: ignore[attr-defined]
    assert 0.95 <= waited < 3.0  # Retry-After: 1, not the 10 ms back-off
    assert len(llm.calls) == 2
    assert sample(metrics, "arena_ai_retries_total", provider=api, reason="rate_limited") == 1


@pytest.mark.parametrize("api", APIS)
async def test_retry_after_beyond_the_deadline_gives_up_at_once(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        return api_error(call, 429, "come back in a minute", headers={"retry-after": "60"})

    llm.handler = handler
    async with contextlib.aclosing(provider_for(api, llm, deadline_s=5)) as provider:
        started = time.monotonic()
        with pytest.raises(ProviderGaveUp, match="would pass the deadline") as caught:
            await complete(provider)
    assert time.monotonic() - started < 1.0
    assert "HTTP 429: come back in a minute" in str(caught.value)
    assert caught.value.outcome == "rate_limited"


@pytest.mark.parametrize("api", APIS)
async def test_500s_until_the_deadline_raise_a_clear_error(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        return api_error(call, 500 if call.n % 2 else 529, "internal trouble")

    llm.handler = handler
    metrics = Metrics()
    provider = provider_for(api, llm, metrics=metrics, deadline_s=0.8, max_attempts=1000)
    async with contextlib.aclosing(provider):
        started = time.monotonic()
        with pytest.raises(ProviderGaveUp) as caught:
            await complete(provider)
    elapsed = time.monotonic() - started
    assert elapsed < 1.3
    assert len(llm.calls) >= 3  # retried with back-off, not a tight loop nor a single try
    message = str(caught.value)
    attempts = int(re.search(r"gave up after (\d+) attempt\(s\)", message).group(1))  # type: ignore[union-attr]
    assert attempts - len(llm.calls) in (0, 1)  # the last one may be cut short by the deadline
    assert "deadline 0.8s" in message and "HTTP 5" in message and "internal trouble" in message
    assert caught.value.outcome == "server_error"
    retries = sample(metrics, "arena_ai_retries_total", provider=api, reason="server_error")
    assert retries == attempts - 1


@pytest.mark.parametrize("api", APIS)
async def test_attempts_are_capped(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        return api_error(call, 503, "unavailable")

    llm.handler = handler
    async with contextlib.aclosing(provider_for(api, llm, max_attempts=3)) as provider:
        with pytest.raises(ProviderGaveUp, match=r"gave up after 3 attempt\(s\)"):
            await complete(provider)
    assert len(llm.calls) == 3


async def test_connection_errors_are_retried_until_the_deadline(llm: FakeLLM) -> None:
    provider = AnthropicProvider(
        Secret(ANTHROPIC_KEY),
        base_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        policy=RetryPolicy(max_attempts=100, deadline_s=0.5, base_delay_s=0.02),
    )
    async with contextlib.aclosing(provider):
        with pytest.raises(ProviderGaveUp, match="ConnectError") as caught:
            await complete(provider)
    assert caught.value.outcome == "connection_error"


@pytest.mark.parametrize("api", APIS)
async def test_a_refused_request_is_not_retried(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        return api_error(call, 400, "max_tokens: must be at most 4096")

    llm.handler = handler
    metrics = Metrics()
    async with contextlib.aclosing(provider_for(api, llm, metrics=metrics)) as provider:
        with pytest.raises(ProviderRejected, match="HTTP 400: max_tokens: must be at most 4096"):
            await complete(provider, role="judge")
    assert len(llm.calls) == 1
    assert sample(metrics, "arena_ai_calls_total", provider=api, role="judge", outcome="rejected")


@pytest.mark.parametrize("api", APIS)
async def test_the_key_never_reaches_logs_reprs_or_errors(
    llm: FakeLLM, api: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = ANTHROPIC_KEY if api == "anthropic" else OPENAI_KEY

    async def handler(call: Call) -> Response:
        # A hostile or careless server echoes the key back in its errors.
        return api_error(call, 500, f"upstream failed for key {key}")

    llm.handler = handler
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    provider = provider_for(api, llm, deadline_s=0.4, max_attempts=3)
    async with contextlib.aclosing(provider):
        with pytest.raises(ProviderGaveUp) as caught:
            await complete(provider)
    error = caught.value
    assert "upstream failed for key [redacted]" in str(error)
    texts = [str(error), repr(error), repr(provider), caplog.text]
    texts += [str(e) for e in (error.__cause__, error.__context__) if e is not None]
    assert caplog.records, "expected retry warnings to be logged"
    for text in texts:
        assert key not in text
        assert key[8:24] not in text  # not even part of it


async def test_a_wrong_key_is_refused_and_its_echo_redacted(llm: FakeLLM) -> None:
    provider = AnthropicProvider(
        Secret("sk-ant-wrong-key-ABCDEF123456"),
        base_url=llm.anthropic_base,
        policy=RetryPolicy(deadline_s=2),
    )
    async with contextlib.aclosing(provider):
        with pytest.raises(ProviderRejected) as caught:
            await complete(provider)
    assert "HTTP 401: invalid x-api-key [redacted]" in str(caught.value)
    assert "ABCDEF123456" not in str(caught.value)


@pytest.mark.parametrize("api", APIS)
async def test_concurrency_is_capped(llm: FakeLLM, api: str) -> None:
    async def handler(call: Call) -> Response:
        await asyncio.sleep(0.1)
        return answer(call, "done")

    llm.handler = handler
    async with contextlib.aclosing(provider_for(api, llm, max_concurrency=2)) as provider:
        results = await asyncio.gather(*(complete(provider) for _ in range(6)))
    assert len(results) == 6
    assert llm.max_in_flight == 2


def test_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s(httpx.Headers({"retry-after": "3"}), now) == 3.0
    assert retry_after_s(httpx.Headers({"retry-after-ms": "250"}), now) == 0.25
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_s(httpx.Headers({"retry-after": date}), now) == pytest.approx(7.0)
    assert retry_after_s(httpx.Headers({"retry-after": "soon"}), now) is None
    assert retry_after_s(httpx.Headers({}), now) is None


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    import random

    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(1)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [policy.backoff_s(attempt, rng) for _ in range(500)]
        assert 0 <= min(delays) < cap * 0.05 and cap * 0.95 < max(delays) <= cap
