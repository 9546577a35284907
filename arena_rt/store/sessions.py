"""Session records: the Session row in the database, cached in Redis in production.

The HMAC signature and expiry are checked first (no I/O); then the record is looked up so a
revoked session (key rotation) stops working on every process.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.auth import SessionClaims, SessionSigner, new_session_claims
from arena_rt.errors import Unauthorized
from arena_rt.store.models import Session

REDIS_PREFIX = "arena:session:"


class SessionStore:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        signer: SessionSigner,
        ttl_s: int,
        redis: Redis | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._signer = signer
        self._ttl_s = ttl_s
        self._redis = redis

    async def create(self, agent_id: str, data: dict[str, str] | None = None) -> tuple[str, int]:
        """A new session token for the agent and its expiry (ms since the epoch)."""
        claims = new_session_claims(agent_id, self._ttl_s)
        token, signature = self._signer.sign(claims)
        async with self._sessionmaker() as session:
            session.add(
                Session(
                    session_id=claims.session_id,
                    agent_id=agent_id,
                    data=json.dumps(data or {}),
                    # A digest: the row must not be enough to rebuild a working token.
                    signature=hashlib.sha256(bytes.fromhex(signature)).hexdigest(),
                    expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
                )
            )
            await session.commit()
        if self._redis is not None:
            await self._redis.set(REDIS_PREFIX + claims.session_id, agent_id, ex=self._ttl_s)
        return token, claims.expires_at * 1000

    async def verify(self, token: str) -> SessionClaims:
        claims = self._signer.verify(token)
        if self._redis is not None:
            cached = await self._redis.get(REDIS_PREFIX + claims.session_id)
            if cached is not None:
                owner = cached.decode() if isinstance(cached, bytes) else str(cached)
                if owner != claims.agent_id:
                    raise Unauthorized("invalid session token")
                return claims
        async with self._sessionmaker() as session:
            row = await session.scalar(
                select(Session).where(Session.session_id == claims.session_id)
            )
        if row is None or row.agent_id != claims.agent_id:
            raise Unauthorized("session revoked or unknown")
        # Not re-cached here: a verify racing a revocation would put the revoked session back.
        return claims

    async def revoke_agent(self, session: AsyncSession, agent_id: str) -> None:
        """Delete the agent's sessions inside the caller's transaction, and their cache."""
        ids = list(
            await session.scalars(select(Session.session_id).where(Session.agent_id == agent_id))
        )
        await session.execute(delete(Session).where(Session.agent_id == agent_id))
        if self._redis is not None and ids:
            await self._redis.delete(*(REDIS_PREFIX + sid for sid in ids))

    async def purge_expired(self) -> int:
        async with self._sessionmaker() as session:
            result = await session.execute(
                delete(Session).where(Session.expires_at < datetime.now(UTC))
            )
            await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)
