"""Retry timing: exponential back-off with full jitter, and the server's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRYABLE_STATUS = frozenset({408, 429})  # plus every 5xx


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    deadline_s: float = 30.0  # the whole call: attempts, waits and back-off
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Full jitter after failed attempt ``attempt`` (1-based):
        uniform(0, min(max_delay, base_delay * 2^(attempt-1)))."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_s(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """The server's requested wait: ``retry-after-ms`` (OpenAI), else ``retry-after`` in
    seconds or as an HTTP date. None when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
