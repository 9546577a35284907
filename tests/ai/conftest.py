"""One fake LLM server per test session; each test gets it reset, with its own handler."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from llm_server import FakeLLM, serve_fake_llm


@pytest.fixture(scope="session")
async def llm_server() -> AsyncIterator[FakeLLM]:
    async with serve_fake_llm() as fake:
        yield fake


@pytest.fixture
def llm(llm_server: FakeLLM) -> FakeLLM:
    llm_server.reset()
    return llm_server
