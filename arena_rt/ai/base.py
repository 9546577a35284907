"""The provider interface: one chat completion, with its token usage and latency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

ChatRole = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: ChatRole
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    latency_s: float  # the whole call: queueing for a slot, retries and back-off included
    model: str  # as the server reported it (the configured name when it reports none)


class ChatProvider(Protocol):
    @property
    def name(self) -> str:
        """The provider's metrics label: ``anthropic`` or ``openai``."""
        ...

    @property
    def model(self) -> str: ...

    async def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        role: str = "other",
    ) -> Completion:
        """One chat completion. ``role`` (judge, commentator) only labels the metrics.

        Raises ``ProviderError`` (never with a key in its text)."""
        ...

    async def aclose(self) -> None: ...
