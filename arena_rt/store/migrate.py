"""Run the Alembic history in ``schema/`` against a database URL."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from arena_rt.errors import ConfigError


def schema_dir() -> Path:
    """Where the migrations live: ARENA_SCHEMA_DIR, the source tree, or ./schema."""
    candidates = [
        os.environ.get("ARENA_SCHEMA_DIR"),
        Path(__file__).resolve().parents[2] / "schema",
        Path.cwd() / "schema",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "env.py").exists():
            return Path(candidate)
    raise ConfigError("cannot find the migrations (schema/env.py); set ARENA_SCHEMA_DIR")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(schema_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database to ``revision`` over the engine's own connection."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def ensure_schema(engine: AsyncEngine, *, create: bool) -> None:
    """Embedded mode migrates itself; production refuses to run on an old schema."""
    if create:
        await upgrade(engine)
        return
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise ConfigError(
            f"database schema is at {current or 'nothing'}, this server needs {head}: "
            "run `arena-rt migrate` first"
        )
