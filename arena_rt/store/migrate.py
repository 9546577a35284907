"""Run the Alembic history in ``schema/`` against a database URL."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
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

    def run(connection: object) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)
