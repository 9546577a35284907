"""Instants on the wire are integer milliseconds since the Unix epoch (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def to_ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def maybe_ms(instant: datetime | None) -> int | None:
    return None if instant is None else to_ms(instant)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
