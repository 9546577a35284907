"""Embedded mode is one process per SQLite file: an advisory lock held for the process's life.

Two processes on one SQLite file would both run its live battles (in embedded mode ownership is
local, there is no lease) and collide on every event's (battle, seq). ``fcntl.flock`` on
``<database file>.lock`` beside it, taken without blocking, is released by the kernel however
the process ends, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from arena_rt.errors import ConfigError


def sqlite_file(database_url: str) -> Path | None:
    """The SQLite database file of ``database_url``; None for another database or in-memory."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def lock_database(database_url: str) -> IO[bytes] | None:
    """Take this process's lock on the SQLite file (keep the returned file open while it runs);
    ConfigError when another process holds it. None when the database is not a SQLite file."""
    database = sqlite_file(database_url)
    if database is None:
        return None
    database.parent.mkdir(parents=True, exist_ok=True)
    lock_path = database.with_name(database.name + ".lock")
    handle = open(lock_path, "a+b")  # noqa: SIM115 - held open for the process lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"{database} is in use by another arena-rt process (lock {lock_path} is held); "
            "stop it, or give this one its own ARENA_DATA_DIR"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle
