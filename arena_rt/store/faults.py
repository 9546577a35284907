"""Which database errors are the database's weather, not the battle's fault.

A connection reset (a failover, a pooler restart, ``pg_terminate_backend``), an administrator
shutting the server down, a database not accepting connections yet, a transaction aborted to
break a deadlock or a serialization conflict, SQLite's writer lock: the same write succeeds
when tried again. Everything else (a constraint violated, a bad value) fails the same way
every time and is the step's own fault.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa

# SQLSTATE -> reason. Class 08 (connection exception) is matched by its prefix.
_SQLSTATES = {
    "40001": "serialization",
    "40P01": "deadlock",
    "57P01": "shutdown",  # admin_shutdown: pg_terminate_backend, a fast shutdown
    "57P02": "shutdown",  # crash_shutdown
    "57P03": "shutdown",  # cannot_connect_now: starting up, in recovery
    "53300": "connection",  # too_many_connections
}
# Reasons that mean the database cannot be reached (as opposed to a conflict between writers).
UNREACHABLE = frozenset({"connection", "shutdown", "pool"})


def transient_reason(error: BaseException) -> str | None:
    """Why trying again may succeed (a metric label), or None when it would fail again."""
    for exc in _chain(error):
        sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(sqlstate, str):
            if sqlstate in _SQLSTATES:
                return _SQLSTATES[sqlstate]
            if sqlstate.startswith("08"):
                return "connection"
        if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
            return "connection"
        if isinstance(exc, sa.TimeoutError):  # no pooled connection came free in time
            return "pool"
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return "locked"
        if isinstance(exc, OSError | TimeoutError | ConnectionError):
            return "connection"
        if type(exc).__name__ in _ASYNCPG_CONNECTION_ERRORS:
            return "connection"
        if type(exc).__name__ == "InterfaceError" and "connection is closed" in str(exc):
            return "connection"  # asyncpg: a statement on a connection the server ended
        if type(exc).__name__ == "InternalClientError" and "cannot switch to state" in str(exc):
            # asyncpg, on a connection whose backend was terminated while it sat idle: the
            # server's goodbye left the protocol mid-operation. Nothing was sent; the writer
            # drops the connection and the next attempt opens a new one.
            return "connection"
    return None


# asyncpg's errors for a connection that is gone, matched by name (asyncpg is an optional
# driver here: the embedded mode runs without it).
_ASYNCPG_CONNECTION_ERRORS = frozenset(
    {
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "PostgresConnectionError",
        "CannotConnectNowError",
    }
)


def _chain(error: BaseException) -> list[BaseException]:
    """The error, what SQLAlchemy wrapped (``orig``) and what caused each, once each."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or any(exc is s for s in seen) or len(seen) > 10:
            continue
        seen.append(exc)
        pending += [getattr(exc, "orig", None), exc.__cause__, exc.__context__]
    return seen
