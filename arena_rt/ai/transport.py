"""One JSON POST to an LLM API, done carefully: timeouts, retries, a concurrency cap, metrics.

Retried: 408, 429 and 5xx answers, timeouts, connection errors and 2xx bodies that are not in
the API's format. The wait before a retry is the server's Retry-After when it sends one, else
exponential back-off with full jitter. Everything (waiting for a slot, attempts, waits) fits in
the policy's overall deadline: a wait that would pass it ends the call at once. Keys travel
only in the request headers; every text that reaches a log or an exception is redacted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from arena_rt.ai.base import Completion
from arena_rt.ai.errors import BadResponse, ProviderGaveUp, ProviderRejected
from arena_rt.ai.retry import RetryPolicy, is_retryable_status, retry_after_s
from arena_rt.config import Secret
from arena_rt.metrics import Metrics

log = logging.getLogger("arena_rt.ai")
REDACTED = "[redacted]"
_DETAIL_CHARS = 300


@dataclass(frozen=True, slots=True)
class Reply:
    """What a provider's parser takes out of a 2xx body."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str


Parser = Callable[[bytes], Reply]


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt: the metrics outcome, what happened, the server's requested wait."""

    outcome: str
    message: str
    wait_s: float | None = None
    final: bool = False  # the overall deadline passed: no further attempt


class _ErrorDetail(msgspec.Struct):
    message: str = ""
    type: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | str | None = None


class ChatTransport:
    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        policy: RetryPolicy,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_concurrency: int,
        metrics: Metrics,
        secrets: Sequence[Secret] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self._metrics = metrics
        self._secrets = tuple(secrets)
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(
                connect=connect_timeout_s,
                read=read_timeout_s,
                write=read_timeout_s,
                pool=connect_timeout_s,
            ),
            limits=httpx.Limits(max_connections=max_concurrency),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"ChatTransport(provider={self.provider!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            value = secret.reveal()
            if value:
                text = text.replace(value, REDACTED)
        return text

    async def post(
        self,
        path: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        parse: Parser,
        *,
        role: str,
        model: str,
    ) -> Completion:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.policy.deadline_s
        payload = msgspec.json.encode(body)
        send_headers = {**headers, "content-type": "application/json"}
        attempt = 0
        failure = _Failure("timeout", "the deadline passed before the first attempt", final=True)
        while attempt < self.policy.max_attempts and loop.time() < deadline:
            attempt += 1
            try:
                result = await self._attempt(path, payload, send_headers, parse, deadline)
            except ProviderRejected:
                self._count(role, "rejected")
                raise
            if isinstance(result, Reply):
                return self._succeeded(result, role, model, loop.time() - started)
            if result.final and attempt > 1:
                # The deadline cut an attempt short: the earlier failure is the real story.
                failure = _Failure(failure.outcome, f"{failure.message}; then {result.message}")
                break
            failure = result
            if failure.final or attempt >= self.policy.max_attempts:
                break
            delay = failure.wait_s
            if delay is None:
                delay = self.policy.backoff_s(attempt, self._rng)
            if loop.time() + delay >= deadline:
                failure = _Failure(
                    failure.outcome,
                    f"{failure.message}; waiting {delay:.2f}s to retry would pass the deadline",
                )
                break
            self._metrics.ai_retries.labels(self.provider, failure.outcome).inc()
            log.warning(
                "ai %s attempt %d failed (%s); retrying in %.2fs",
                self.provider,
                attempt,
                self.redact(failure.message),
                delay,
            )
            await asyncio.sleep(delay)
        self._count(role, failure.outcome)
        elapsed = loop.time() - started
        raise ProviderGaveUp(
            self.provider,
            self.redact(
                f"gave up after {attempt} attempt(s) in {elapsed:.1f}s "
                f"(deadline {self.policy.deadline_s:g}s, at most {self.policy.max_attempts} "
                f"attempts); last error: {failure.message}"
            ),
            outcome=failure.outcome,
        )

    async def _attempt(
        self,
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        parse: Parser,
        deadline: float,
    ) -> Reply | _Failure:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(remaining), self._slots:
                response = await self._client.post(path, content=payload, headers=headers)
        except TimeoutError:
            deadline_s = self.policy.deadline_s
            return _Failure("timeout", f"no answer before the {deadline_s:g}s deadline", final=True)
        except httpx.TimeoutException as exc:
            return _Failure("timeout", f"{type(exc).__name__} (no answer in time)")
        except httpx.TransportError as exc:
            return _Failure("connection_error", f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            try:
                return parse(response.content)
            except BadResponse as exc:
                return _Failure("bad_response", f"HTTP {status} with a malformed body: {exc}")
        if is_retryable_status(status):
            outcome = "rate_limited" if status == 429 else "server_error"
            detail = f"HTTP {status}{self._detail(response)}"
            return _Failure(outcome, detail, wait_s=retry_after_s(response.headers))
        raise ProviderRejected(
            self.provider,
            self.redact(f"HTTP {status}{self._detail(response)} (not retried)"),
            outcome="rejected",
        )

    def _succeeded(self, reply: Reply, role: str, model: str, latency_s: float) -> Completion:
        self._count(role, "ok")
        self._metrics.ai_tokens.labels(self.provider, "input").inc(reply.input_tokens)
        self._metrics.ai_tokens.labels(self.provider, "output").inc(reply.output_tokens)
        self._metrics.ai_latency.labels(self.provider).observe(latency_s)
        return Completion(
            text=reply.text,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            latency_s=latency_s,
            model=reply.model or model,
        )

    def _count(self, role: str, outcome: str) -> None:
        self._metrics.ai_calls.labels(self.provider, role, outcome).inc()

    def _detail(self, response: httpx.Response) -> str:
        """The server's error message, short and redacted (`` : <message>``), or nothing."""
        try:
            body = msgspec.json.decode(response.content, type=_ErrorBody)
        except msgspec.DecodeError:
            text = response.text.strip()
        else:
            error = body.error
            text = (error.message or error.type) if isinstance(error, _ErrorDetail) else error or ""
        text = " ".join(text.split())[:_DETAIL_CHARS]
        return f": {self.redact(text)}" if text else ""
