"""The Anthropic Messages API: POST {base}/v1/messages with x-api-key and anthropic-version."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from arena_rt.ai.base import Completion, Message
from arena_rt.ai.errors import BadResponse
from arena_rt.ai.retry import RetryPolicy
from arena_rt.ai.transport import ChatTransport, Reply
from arena_rt.config import DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_ANTHROPIC_MODEL, Secret
from arena_rt.metrics import Metrics

ANTHROPIC_VERSION = "2023-06-01"


class _Block(msgspec.Struct):
    type: str
    text: str = ""


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _MessageResponse(msgspec.Struct):
    content: list[_Block]
    model: str = ""
    usage: _Usage = msgspec.field(default_factory=_Usage)


def parse_message(body: bytes) -> Reply:
    try:
        message = msgspec.json.decode(body, type=_MessageResponse)
    except msgspec.DecodeError as exc:
        raise BadResponse(str(exc)) from None
    text = "".join(block.text for block in message.content if block.type == "text")
    return Reply(text, message.usage.input_tokens, message.usage.output_tokens, message.model)


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        api_key: Secret,
        *,
        model: str = DEFAULT_ANTHROPIC_MODEL,
        base_url: str = DEFAULT_ANTHROPIC_BASE_URL,
        policy: RetryPolicy | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_concurrency: int = 8,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.model = model
        self._key = api_key
        self._transport = ChatTransport(
            provider=self.name,
            base_url=base_url,
            policy=policy or RetryPolicy(),
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_concurrency=max_concurrency,
            metrics=metrics or Metrics(),
            secrets=(api_key,),
            rng=rng,
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(model={self.model!r}, base_url={self._transport.base_url!r})"

    async def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        role: str = "other",
    ) -> Completion:
        body = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "system": system,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        headers = {"x-api-key": self._key.reveal(), "anthropic-version": ANTHROPIC_VERSION}
        return await self._transport.post(
            "/v1/messages", body, headers, parse_message, role=role, model=self.model
        )

    async def aclose(self) -> None:
        await self._transport.aclose()
