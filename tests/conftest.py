"""Fixtures: the two configurations every integration test runs against.

``postgres``: real PostgreSQL + real Redis (production mode). ``embedded``: a SQLite file and
the in-process bus. The Postgres database is created per run (by scripts/test.sh, which passes
ARENA_TEST_DATABASE_URL; or here when run directly) so parallel runs don't collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from arena_rt.config import Settings
from tests.support import (
    SPAWNED_LOGS,
    TEST_SECRET,
    run_server,
    settings_for,
    spawn_server,
    unique,
)

LOG_TAIL_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test's report ends with what the server processes it used logged meanwhile
    (a CI failure is then readable without the machine it ran on)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed or call.when == "teardown":
        return
    for path in SPAWNED_LOGS:
        if path.exists() and path.stat().st_mtime >= call.start:
            tail = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"server log {path.parent.name}/{path.name}", "\n".join(tail)))


def run_in_thread(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion on its own loop, even when called from inside a loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(make())).result()


PG_ADMIN = os.environ.get("ARENA_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ARENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _migrate(url: str) -> None:
    from arena_rt.store.db import make_engine
    from arena_rt.store.migrate import upgrade

    async def run() -> None:
        engine = make_engine(url)
        await upgrade(engine)
        await engine.dispose()

    run_in_thread(run)


@contextlib.contextmanager
def _database(name: str) -> Iterator[str]:
    """A database of its own for the block (dropped after, connections and all)."""
    run_in_thread(lambda: _admin(f'CREATE DATABASE "{name}"'))
    try:
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{name}"
    finally:
        run_in_thread(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    given = os.environ.get("ARENA_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with _database(f"arena_test_{os.getpid()}_{secrets.token_hex(3)}") as url:
        yield url


@pytest.fixture(scope="session")
def migrated_pg(pg_url: str) -> str:
    _migrate(pg_url)
    return pg_url


# Tests register many agents from one address; the limit itself has its own test.
COMMON_ENV = {"ARENA_REGISTRATIONS_PER_MINUTE": "100000"}


def postgres_env(pg_url: str) -> dict[str, str]:
    return {
        **COMMON_ENV,
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "ARENA_SECRET": TEST_SECRET,
    }


def embedded_env(data_dir: Path) -> dict[str, str]:
    return {**COMMON_ENV, "ARENA_DATA_DIR": str(data_dir)}


@pytest.fixture(scope="session", params=["postgres", "embedded"])
def backend_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    if request.param == "postgres":
        return postgres_env(request.getfixturevalue("migrated_pg"))
    return embedded_env(tmp_path_factory.mktemp("embedded"))


@pytest.fixture(scope="session")
def settings(backend_env: dict[str, str]) -> Settings:
    return settings_for(backend_env)


@pytest.fixture(scope="session")
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with run_server(settings) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        yield http


@pytest.fixture(scope="session")
def server_process(
    backend_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``arena-rt serve`` as its own OS process, in the current configuration."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with spawn_server(backend_env, log_path) as url:
        yield url


@pytest.fixture
def own_database() -> Iterator[str]:
    """A migrated database of this test's own: for servers it kills, stops or cuts off, whose
    battles the other tests' servers (sharing the session's database) must not adopt."""
    with _database(unique("arena_faults_")) as url:
        _migrate(url)
        yield url
