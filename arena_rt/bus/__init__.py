"""The bus: how every server process learns about every battle event, and hands it to its own
spectators (ARCHITECTURE invariants 3-5).

``from_url(None)`` (the embedded default) is the in-process :class:`MemoryBus`;
``from_url("redis://…")`` is the :class:`RedisBus`. The :class:`Hub` sits on top of either one
and fans events out to this process's spectators; :func:`resume` is how a socket reads them.
"""

from __future__ import annotations

from typing import Any

from arena_rt.bus.base import (
    DEFAULT_HISTORY_SIZE,
    Bus,
    BusError,
    BusNotStartedError,
    BusUnavailableError,
    FeedClosedError,
    FeedClosedReason,
    HubNotStartedError,
    MessageHandler,
    NotStartedError,
    ReconnectHandler,
)
from arena_rt.bus.hub import DEFAULT_QUEUE_SIZE, Feed, Hub, LoadAfter, resume
from arena_rt.bus.memory import MemoryBus
from arena_rt.bus.redis import RedisBus

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "Bus",
    "BusError",
    "BusNotStartedError",
    "BusUnavailableError",
    "Feed",
    "FeedClosedError",
    "FeedClosedReason",
    "Hub",
    "HubNotStartedError",
    "LoadAfter",
    "MemoryBus",
    "MessageHandler",
    "NotStartedError",
    "ReconnectHandler",
    "RedisBus",
    "from_url",
    "resume",
]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def from_url(
    url: str | None,
    on_message: MessageHandler | None = None,
    *,
    on_reconnect: ReconnectHandler | None = None,
    **options: Any,
) -> Bus:
    """The bus named by ``url``: ``None``, ``""`` or ``memory://`` → :class:`MemoryBus`;
    ``redis://``, ``rediss://`` or ``unix://`` → :class:`RedisBus`. ``options`` go to the
    constructor (``history_size``, ``prefix``, …). Leave ``on_message`` out when a
    :class:`Hub` will own the bus: it binds its own callbacks."""
    if not url or url.startswith("memory://"):
        return MemoryBus(on_message, on_reconnect=on_reconnect, **options)
    if url.startswith(_REDIS_SCHEMES):
        return RedisBus(url, on_message, on_reconnect=on_reconnect, **options)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(f"unsupported bus URL scheme {scheme!r} (use memory:// or redis://)")
