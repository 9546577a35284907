"""A local LLM API for the tests: the Anthropic Messages API and an OpenAI-compatible
chat-completions endpoint, over real HTTP (Starlette under uvicorn, in the test's event loop).

It checks what the real APIs check (path, method, version and key headers, JSON body with
model/max_tokens/messages) and answers in their wire formats. Each test scripts the answers
with a handler: ``async (call) -> Response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ANTHROPIC_KEY = "sk-ant-test-TOPSECRET-0123456789"
OPENAI_KEY = "sk-openai-test-HUSH-9876543210"
_ids = itertools.count(1)


@dataclass
class Call:
    api: str  # "anthropic" or "openai"
    body: dict[str, Any]
    headers: dict[str, str]
    n: int  # 1-based, in arrival order

    @property
    def system(self) -> str:
        if self.api == "anthropic":
            return str(self.body.get("system", ""))
        return next((m["content"] for m in self.body["messages"] if m["role"] == "system"), "")

    @property
    def turns(self) -> list[dict[str, str]]:
        """The conversation without the system prompt."""
        return [m for m in self.body["messages"] if m["role"] != "system"]

    @property
    def prompt(self) -> str:
        """The first user message (the judge's or commentator's full prompt)."""
        return self.turns[0]["content"]


Handler = Callable[[Call], Awaitable[Response]]


def anthropic_message(
    text: str, *, input_tokens: int = 120, output_tokens: int = 40, model: str = "claude-test"
) -> JSONResponse:
    return JSONResponse(
        {
            "id": f"msg_{next(_ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


def openai_chat(
    text: str, *, input_tokens: int = 120, output_tokens: int = 40, model: str = "local-test"
) -> JSONResponse:
    return JSONResponse(
        {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
    )


def answer(call: Call, text: str, **usage: Any) -> JSONResponse:
    """A good completion in the format of the API that was called."""
    return (
        anthropic_message(text, **usage) if call.api == "anthropic" else openai_chat(text, **usage)
    )


def api_error(
    call: Call, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the API's own error format."""
    if call.api == "anthropic":
        kinds = {429: "rate_limit_error", 401: "authentication_error", 529: "overloaded_error"}
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": message},
        }
    else:
        body = {"error": {"message": message, "type": "server_error", "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class FakeLLM:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    handler: Handler | None = None
    in_flight: int = 0
    max_in_flight: int = 0

    def reset(self) -> None:
        self.calls.clear()
        self.handler = None
        self.in_flight = self.max_in_flight = 0

    @property
    def anthropic_base(self) -> str:
        return self.url

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    async def _serve(self, api: str, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": {"message": "body is not JSON"}}, status_code=400)
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = Call(api, body, headers, len(self.calls) + 1)
        problem = _check(call)
        if problem is not None:
            return problem
        self.calls.append(call)
        if self.handler is None:
            return api_error(call, 500, "the test set no handler")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self.handler(call)
        finally:
            self.in_flight -= 1

    def app(self) -> Starlette:
        async def messages(request: Request) -> Response:
            return await self._serve("anthropic", request)

        async def chat(request: Request) -> Response:
            return await self._serve("openai", request)

        return Starlette(
            routes=[
                Route("/v1/messages", messages, methods=["POST"]),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )


def _check(call: Call) -> Response | None:
    """What the real APIs refuse: a missing or wrong key/version, a body without the basics."""
    if call.headers.get("content-type") != "application/json":
        return api_error(call, 400, "content-type must be application/json")
    if call.api == "anthropic":
        if call.headers.get("anthropic-version") != "2023-06-01":
            return api_error(call, 400, "anthropic-version header is required")
        if call.headers.get("x-api-key") != ANTHROPIC_KEY:
            return api_error(call, 401, f"invalid x-api-key {call.headers.get('x-api-key')}")
        required = ("model", "max_tokens", "messages")
    else:
        auth = call.headers.get("authorization")
        if auth is not None and auth != f"Bearer {OPENAI_KEY}":
            return api_error(call, 401, f"Incorrect API key provided: {auth}")
        required = ("model", "messages")
    missing = [k for k in required if k not in call.body]
    if missing or not call.turns or call.turns[-1]["role"] != "user":
        return api_error(call, 400, f"bad request body (missing {missing})")
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_fake_llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM()
    port = free_port()
    config = uvicorn.Config(
        fake.app(),
        host="127.0.0.1",
        port=port,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the fake LLM server exited during start-up")
                await asyncio.sleep(0.01)
        fake.url = f"http://127.0.0.1:{port}"
        yield fake
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def provider_for(
    api: str,
    fake: FakeLLM,
    *,
    metrics: Any = None,
    deadline_s: float = 10.0,
    max_attempts: int = 6,
    base_delay_s: float = 0.01,
    read_timeout_s: float = 5.0,
    max_concurrency: int = 8,
    with_key: bool = True,
) -> Any:
    """A real provider pointed at the fake server (fast back-off for tests)."""
    import random

    from arena_rt.ai.providers import AnthropicProvider, OpenAICompatProvider, RetryPolicy
    from arena_rt.config import Secret

    policy = RetryPolicy(
        max_attempts=max_attempts, deadline_s=deadline_s, base_delay_s=base_delay_s
    )
    common: dict[str, Any] = {
        "policy": policy,
        "read_timeout_s": read_timeout_s,
        "connect_timeout_s": 2.0,
        "max_concurrency": max_concurrency,
        "metrics": metrics,
        "rng": random.Random(7),
    }
    if api == "anthropic":
        return AnthropicProvider(
            Secret(ANTHROPIC_KEY), model="claude-test", base_url=fake.anthropic_base, **common
        )
    return OpenAICompatProvider(
        fake.openai_base,
        "local-test",
        api_key=Secret(OPENAI_KEY) if with_key else None,
        **common,
    )
