"""The ``arena-rt`` command: serve, migrate, demo, replay."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys

from sqlalchemy import select

from arena_rt.config import Settings, load_settings
from arena_rt.errors import ConfigError
from arena_rt.logs import configure_logging
from arena_rt.store.datalock import lock_database

log = logging.getLogger("arena_rt")

GC_THRESHOLD_GEN0 = 20_000  # allocations between young collections (CPython's default: 700)


def tune_gc() -> None:
    """Collect young objects less often and never rescan what exists at start-up.

    A battle step allocates many short-lived objects; with the default threshold (700) the
    collector ran several hundred times a second under load and took ~10-15 % of the
    persistence benchmark's time (BENCHMARKS.md). Freezing moves the objects alive now
    (modules, classes, settings) out of every later full collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_GEN0, 20, 20)


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from arena_rt.web.app import create_app
    from arena_rt.web.connection import lean_sansio_protocol
    from arena_rt.web.drain import DrainingServer

    log.info("arena_rt serving on http://%s:%d (node %s)", host, port, settings.node_id)
    tune_gc()
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        # websockets-sansio, holding less per idle socket (see lean_sansio_protocol).
        ws=lean_sansio_protocol(),
        ws_max_size=settings.limits.max_frame_bytes,
        # Spectator sockets are many and idle; compression costs ~64 KiB per socket.
        ws_per_message_deflate=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.timings.shutdown_grace_s) + 1,
    )
    DrainingServer(config).run()


async def migrate(settings: Settings) -> None:
    from arena_rt.store.db import make_engine
    from arena_rt.store.migrate import current_revision, upgrade

    engine = make_engine(settings.database_url)
    try:
        before = await current_revision(engine)
        await upgrade(engine)
        after = await current_revision(engine)
    finally:
        await engine.dispose()
    log.info(
        "schema migrated from %s to %s (%s)",
        before or "empty",
        after,
        engine.url.render_as_string(),
    )


async def ratings(settings: Settings, rounds: int, seed: int) -> None:
    from arena_rt.ratings.batch import refit
    from arena_rt.ratings.report import format_leaderboard
    from arena_rt.store.db import make_engine, make_sessionmaker
    from arena_rt.store.migrate import ensure_schema
    from arena_rt.store.models import Agent

    engine = make_engine(settings.database_url)
    try:
        await ensure_schema(engine, create=settings.is_sqlite)
        db = make_sessionmaker(engine)
        fits = await refit(db, rounds=rounds, seed=seed)
        async with db() as session:
            names = {a.id: a.name for a in await session.scalars(select(Agent))}
    finally:
        await engine.dispose()
    if not fits:
        print("no completed battles yet")
    for mode, rows in sorted(fits.items()):
        print(f"\n== {mode}: Bradley-Terry, 95% bootstrap intervals ({rounds} rounds)")
        print(format_leaderboard(rows, names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena-rt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    sub.add_parser("migrate", help="bring DATABASE_URL to the newest schema")
    p_demo = sub.add_parser("demo", help="embedded server + two bots playing a short battle")
    p_demo.add_argument("--host", default="127.0.0.1")
    p_demo.add_argument("--port", type=int, default=8000)
    p_ratings = sub.add_parser(
        "ratings", help="Bradley-Terry fit with bootstrap intervals over completed battles"
    )
    p_ratings.add_argument("--rounds", type=int, default=200, help="bootstrap rounds")
    p_ratings.add_argument("--seed", type=int, default=0)
    from arena_rt.replay.cli import add_arguments as add_replay_arguments

    add_replay_arguments(
        sub.add_parser("replay", help="replay recorded battles against a server (load test)")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "replay":  # a client of any deployment: no server settings needed
        from arena_rt.replay.cli import main as replay_main

        logging.basicConfig(level=logging.WARNING)
        return replay_main(args)
    try:
        settings = load_settings(environment_for(args.command))
    except ConfigError as exc:
        print(f"arena-rt: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        # Held until the process exits (the kernel drops it then, however we end).
        data_lock = lock_database(settings.database_url) if args.command in LOCKING else None
        if args.command == "demo" and settings.is_sqlite:
            print(f"  Demo data: {settings.data_dir}", flush=True)
        if args.command == "serve":
            serve(settings, args.host, args.port)
        elif args.command == "migrate":
            asyncio.run(migrate(settings))
        elif args.command == "demo":
            from arena_rt.demo import run_demo

            asyncio.run(run_demo(settings, args.host, args.port))
        elif args.command == "ratings":
            asyncio.run(ratings(settings, args.rounds, args.seed))
    except ConfigError as exc:
        print(f"arena-rt: {exc}", file=sys.stderr)
        return 2
    if data_lock is not None:
        data_lock.close()
    return 0


# Commands that run battles on the database: one process per SQLite file (store/datalock.py).
LOCKING = frozenset({"serve", "demo"})
DEMO_DATA_DIR = "arena_rt_demo"


def environment_for(command: str) -> dict[str, str]:
    """The environment settings are read from. ``demo`` keeps its data apart by default
    (./arena_rt_demo/), so a demo and a server started in one directory never share a file."""
    env = dict(os.environ)
    if command == "demo" and not env.get("ARENA_DATA_DIR") and not env.get("DATABASE_URL"):
        env["ARENA_DATA_DIR"] = DEMO_DATA_DIR
    return env


if __name__ == "__main__":
    sys.exit(main())
