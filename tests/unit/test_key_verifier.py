"""KeyVerifier: concurrent checks of one key share a single bcrypt run; answers stay right."""

from __future__ import annotations

import asyncio

import bcrypt
import pytest

from arena_rt import auth
from arena_rt.auth import KeyVerifier


@pytest.fixture
def bcrypt_runs(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every real bcrypt check the verifier makes, recorded (the check itself still runs)."""
    runs: list[bytes] = []
    real = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        runs.append(password)
        return real(password, hashed)

    monkeypatch.setattr(auth.bcrypt, "checkpw", counted)
    return runs


async def test_one_agent_connecting_many_sockets_costs_one_check(bcrypt_runs: list[bytes]) -> None:
    key = "ak_0123456789abcdef_secret"
    stored = bcrypt.hashpw(key.encode(), bcrypt.gensalt(6)).decode()
    verifier = KeyVerifier()
    answers = await asyncio.gather(*(verifier.verify(key, stored) for _ in range(30)))
    assert answers == [True] * 30
    assert len(bcrypt_runs) == 1
    assert await verifier.verify(key, stored)  # cached now
    assert len(bcrypt_runs) == 1


async def test_a_wrong_key_is_refused_every_time_and_never_cached(
    bcrypt_runs: list[bytes],
) -> None:
    key = "ak_0123456789abcdef_secret"
    stored = bcrypt.hashpw(key.encode(), bcrypt.gensalt(6)).decode()
    verifier = KeyVerifier()
    wrong = key + "x"
    assert await asyncio.gather(*(verifier.verify(wrong, stored) for _ in range(5))) == [False] * 5
    assert not await verifier.verify(wrong, stored)
    assert len(bcrypt_runs) == 2  # the shared concurrent check, then a fresh one
    assert len(verifier) == 0
    assert await verifier.verify(key, stored)


async def test_a_waiter_going_away_does_not_cancel_the_others(bcrypt_runs: list[bytes]) -> None:
    key = "ak_0123456789abcdef_secret"
    stored = bcrypt.hashpw(key.encode(), bcrypt.gensalt(8)).decode()
    verifier = KeyVerifier()
    leaving = asyncio.create_task(verifier.verify(key, stored))
    staying = asyncio.create_task(verifier.verify(key, stored))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying
    assert len(bcrypt_runs) == 1
