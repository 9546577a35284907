"""Why an LLM call failed. Messages name the provider and the cause; they never carry a key."""

from __future__ import annotations


class ProviderError(Exception):
    """An LLM call that produced no completion."""

    def __init__(self, provider: str, message: str, *, outcome: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.outcome = outcome  # the arena_ai_calls_total outcome label


class ProviderRejected(ProviderError):
    """The server refused the request (4xx other than 408/429): retrying would not help."""


class ProviderGaveUp(ProviderError):
    """Every attempt failed (429, 5xx, timeouts, connection errors, malformed bodies) until the
    attempts or the overall deadline ran out."""


class BadResponse(Exception):
    """A 2xx body that is not in the API's wire format (retried like a 5xx)."""
