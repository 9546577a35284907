"""API keys (bcrypt, cost 12) and HMAC-SHA256 session tokens.

An API key reads ``ak_<keyId>_<secret>``: ``keyId`` is stored in clear and indexed, so checking a
key is one indexed lookup and one bcrypt check, run off the event loop. A key that verified is
remembered (by its SHA-256, never in clear) against the hash it matched, so an agent's repeated
calls skip bcrypt; rotating the key changes the stored hash, which voids the memory on every
process.

A session token reads ``st_<payload>.<signature>`` with payload ``sessionId.agentId.expiresAt``
signed by HMAC-SHA256 under the server secret; it is also recorded (Session row, and Redis in
production) so it can be revoked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import bcrypt

from arena_rt.errors import Unauthorized

BCRYPT_COST = 12
KEY_PREFIX = "ak_"
KEY_ID_LENGTH = 16
SESSION_PREFIX = "st_"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str  # shown to the agent once, never stored
    key_id: str
    hash: str


def issue_key_sync() -> IssuedKey:
    """Blocking (bcrypt): call through ``issue_key``."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    return IssuedKey(key=key, key_id=key_id, hash=hashed)


def parse_key_id(key: str) -> str | None:
    """The key's public id, or None when the string is not shaped like one of our keys."""
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + KEY_ID_LENGTH + 2:
        return None
    key_id = key[len(KEY_PREFIX) : len(KEY_PREFIX) + KEY_ID_LENGTH]
    if key[len(KEY_PREFIX) + KEY_ID_LENGTH] != "_" or not all(
        c in "0123456789abcdef" for c in key_id
    ):
        return None
    return key_id


class KeyVerifier:
    """bcrypt checks off the loop, bounded in concurrency, with a bounded cache of successes."""

    def __init__(self, *, cache_size: int = 10_000, ttl_s: float = 300.0, workers: int = 4) -> None:
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size
        self._ttl_s = ttl_s
        # A flood of wrong keys must not take every thread of the default executor.
        self._slots = asyncio.Semaphore(workers)
        self._checks: dict[tuple[bytes, str], asyncio.Task[bool]] = {}  # in flight

    async def issue(self) -> IssuedKey:
        async with self._slots:
            return await asyncio.to_thread(issue_key_sync)

    async def verify(self, key: str, stored_hash: str) -> bool:
        digest = hashlib.sha256(key.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            cached_hash, expires = cached
            if expires > time.monotonic() and hmac.compare_digest(cached_hash, stored_hash):
                self._cache.move_to_end(digest)
                return True
            del self._cache[digest]
        # Sockets of one agent connecting together (its battles, a reconnect wave) share one
        # bcrypt check instead of each paying ~300 ms of CPU for the same answer.
        flight = (digest, stored_hash)
        check = self._checks.get(flight)
        if check is None:
            check = asyncio.create_task(self._check(key, stored_hash, digest))
            self._checks[flight] = check
            check.add_done_callback(lambda _: self._checks.pop(flight, None))
        return await asyncio.shield(check)  # one waiter leaving must not cancel the others'

    async def _check(self, key: str, stored_hash: str, digest: bytes) -> bool:
        async with self._slots:
            ok = await asyncio.to_thread(bcrypt.checkpw, key.encode(), stored_hash.encode())
        if ok:
            self._cache[digest] = (stored_hash, time.monotonic() + self._ttl_s)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ok

    def __len__(self) -> int:
        return len(self._cache)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionClaims:
    session_id: str
    agent_id: str
    expires_at: int  # seconds since the epoch


class SessionSigner:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"arena_rt session v1:" + secret.encode()).digest()

    def sign(self, claims: SessionClaims) -> tuple[str, str]:
        """The token and its signature (hex, for the Session row)."""
        payload = f"{claims.session_id}.{claims.agent_id}.{claims.expires_at}".encode()
        signature = hmac.new(self._key, payload, hashlib.sha256).digest()
        return f"{SESSION_PREFIX}{_b64(payload)}.{_b64(signature)}", signature.hex()

    def verify(self, token: str, *, now: float | None = None) -> SessionClaims:
        """Claims of a well-signed, unexpired token; Unauthorized otherwise."""
        if not token.startswith(SESSION_PREFIX) or token.count(".") != 1:
            raise Unauthorized("malformed session token")
        payload_b64, signature_b64 = token[len(SESSION_PREFIX) :].split(".")
        try:
            payload, signature = _unb64(payload_b64), _unb64(signature_b64)
        except ValueError as exc:
            raise Unauthorized("malformed session token") from exc
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized("invalid session token")
        try:
            session_id, agent_id, expires = payload.decode().split(".")
            claims = SessionClaims(session_id, agent_id, int(expires))
        except ValueError as exc:
            raise Unauthorized("malformed session token") from exc
        if claims.expires_at <= (time.time() if now is None else now):
            raise Unauthorized("session token expired")
        return claims


def new_session_claims(agent_id: str, ttl_s: int) -> SessionClaims:
    return SessionClaims(secrets.token_urlsafe(18), agent_id, int(time.time()) + ttl_s)
