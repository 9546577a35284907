"""The LLM providers behind the judge and the commentator, in one place.

``ChatProvider`` is the interface (``complete(system, messages, *, max_tokens, temperature)``
→ ``Completion``); ``AnthropicProvider`` speaks the Messages API and ``OpenAICompatProvider``
any chat-completions endpoint. Both share ``ChatTransport``: httpx with connect/read timeouts,
retries with full-jitter back-off (Retry-After respected) inside an overall deadline, a
concurrency cap, keys never in logs or errors, and metrics per call.
"""

from __future__ import annotations

from arena_rt.ai.anthropic import ANTHROPIC_VERSION, AnthropicProvider
from arena_rt.ai.base import ChatProvider, Completion, Message
from arena_rt.ai.errors import BadResponse, ProviderError, ProviderGaveUp, ProviderRejected
from arena_rt.ai.openai_compat import OpenAICompatProvider
from arena_rt.ai.retry import RetryPolicy

__all__ = [
    "ANTHROPIC_VERSION",
    "AnthropicProvider",
    "BadResponse",
    "ChatProvider",
    "Completion",
    "Message",
    "OpenAICompatProvider",
    "ProviderError",
    "ProviderGaveUp",
    "ProviderRejected",
    "RetryPolicy",
]
