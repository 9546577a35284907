"""The async engine and session factory for PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (below): the driver's implicit BEGIN is DEFERRED.
    dbapi_connection.isolation_level = None
    # SQLite ignores foreign keys (and so ON DELETE rules) unless asked, per connection.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _begin_immediate(conn: Any) -> None:
    # A DEFERRED transaction that reads and then writes cannot wait for the write lock: SQLite
    # answers "database is locked" at once. IMMEDIATE takes the lock up front and honours
    # busy_timeout, so concurrent writers queue instead of failing.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(
    url: str,
    *,
    pool_size: int = 20,
    max_overflow: int = 10,
    application_name: str | None = None,
) -> AsyncEngine:
    """An engine whose pool never hands out a dead connection (each checkout is pinged, so
    after a failover or a terminated backend the next attempt gets a fresh one).
    ``application_name`` shows in pg_stat_activity which node, and which pool, holds it."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        pool_pre_ping=True,
        connect_args=(
            {"server_settings": {"application_name": application_name}} if application_name else {}
        ),
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
