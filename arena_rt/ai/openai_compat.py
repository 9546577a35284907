"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server):
POST {base}/chat/completions, with ``Authorization: Bearer <key>`` when a key is set."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from arena_rt.ai.base import Completion, Message
from arena_rt.ai.errors import BadResponse
from arena_rt.ai.retry import RetryPolicy
from arena_rt.ai.transport import ChatTransport, Reply
from arena_rt.config import Secret
from arena_rt.metrics import Metrics


class _ChatMessage(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _ChatMessage


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ChatResponse(msgspec.Struct):
    choices: list[_Choice]
    model: str = ""
    usage: _Usage | None = None


def parse_chat(body: bytes) -> Reply:
    try:
        chat = msgspec.json.decode(body, type=_ChatResponse)
    except msgspec.DecodeError as exc:
        raise BadResponse(str(exc)) from None
    if not chat.choices:
        raise BadResponse("no choices in the answer")
    usage = chat.usage or _Usage()
    text = chat.choices[0].message.content or ""
    return Reply(text, usage.prompt_tokens, usage.completion_tokens, chat.model)


class OpenAICompatProvider:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: Secret | None = None,
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
            secrets=(api_key,) if api_key is not None else (),
            rng=rng,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(model={self.model!r}, base_url={self._transport.base_url!r})"

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
            "messages": [
                {"role": "system", "content": system},
                *({"role": m.role, "content": m.content} for m in messages),
            ],
        }
        headers = {"authorization": f"Bearer {self._key.reveal()}"} if self._key else {}
        return await self._transport.post(
            "/chat/completions", body, headers, parse_chat, role=role, model=self.model
        )

    async def aclose(self) -> None:
        await self._transport.aclose()
