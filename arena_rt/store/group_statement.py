"""PostgreSQL: a group of steps' frequent rows written in one statement, one round trip.

A live battle's steps are nearly all the same few rows: its events, a turn, a commentary, a
vote, its status and current turn. Through a session they cost a pre-ping, BEGIN, a statement
per kind of row and COMMIT: seven round trips, and on a busy event loop each waits its turn
behind the deliveries, which made a group commit ~30 ms at 100 battles x 20 spectators. Here
they are one statement of data-modifying CTEs over arrays (``unnest``), sent on a connection
of the committer's own without a transaction block: a single statement is its own transaction,
so the group is still all-or-nothing. The statement is prepared once per connection (asyncpg
caches it) and the rows travel as arrays, whatever the group's size.

A data-modifying CTE does not see the rows another one of the same statement inserts, so a
commentary must not update a turn inserted in the same group: it never does, because a
battle's runner waits for its turn to be committed before it asks for the commentary.

Steps with rare rows (seats, results and ratings) go through the session path
(:func:`arena_rt.store.battle_writes.write_steps`), which needs reads and locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from arena_rt.store.battle_writes import GroupRows, StepWrite, collect_rows

CONNECT_TIMEOUT_S = 10

GROUP_SQL = """
WITH
events AS (
  INSERT INTO battle_events (battle_id, seq, type, payload, created_at)
  SELECT u.battle_id, u.seq, u.type, u.payload, $1
  FROM unnest($2::text[], $3::int[], $4::text[], $5::text[]) AS u(battle_id, seq, type, payload)
),
turns AS (
  INSERT INTO battle_turns
    (id, battle_id, agent_id, turn_number, content, duration_ms, audio_url, created_at)
  SELECT * FROM unnest(
    $6::text[], $7::text[], $8::text[], $9::int[], $10::text[], $11::int[], $12::text[],
    $13::timestamptz[]
  )
),
votes AS (
  INSERT INTO votes (id, battle_id, voter_id, target_agent_id, idempotency_key, created_at)
  SELECT u.id, u.battle_id, u.voter_id, u.target, u.key, $1
  FROM unnest($14::text[], $15::text[], $16::text[], $17::text[], $18::text[])
    AS u(id, battle_id, voter_id, target, key)
),
battles AS (
  UPDATE battles AS b SET
    status = COALESCE(u.status, b.status),
    started_at = COALESCE(u.started_at, b.started_at),
    completed_at = COALESCE(u.completed_at, b.completed_at),
    cancel_reason = COALESCE(u.cancel_reason, b.cancel_reason),
    current_turn = COALESCE(u.current_turn, b.current_turn),
    updated_at = $1
  FROM unnest(
    $19::text[], $20::text[], $21::timestamptz[], $22::timestamptz[], $23::text[], $24::int[]
  ) AS u(id, status, started_at, completed_at, cancel_reason, current_turn)
  WHERE b.id = u.id
),
commentary AS (
  UPDATE battle_turns AS t SET commentary = u.text
  FROM unnest($25::text[], $26::int[], $27::text[]) AS u(battle_id, turn_number, text)
  WHERE t.battle_id = u.battle_id AND t.turn_number = u.turn_number
)
SELECT 1
"""

_BATTLE_COLUMNS = ("status", "started_at", "completed_at", "cancel_reason", "current_turn")


def group_arguments(rows: GroupRows, now: Any) -> list[Any]:
    """The statement's arguments: one array per column, in the order of :data:`GROUP_SQL`."""
    events, turns, votes, comments = rows.events, rows.turns, rows.votes, rows.commentary
    changed = [(battle_id, values) for battle_id, values in rows.battles.items() if values]
    return [
        now,
        *_columns(events, ("battle_id", "seq", "type", "payload")),
        *_columns(
            turns,
            (
                "id",
                "battle_id",
                "agent_id",
                "turn_number",
                "content",
                "duration_ms",
                "audio_url",
                "created_at",
            ),
        ),
        *_columns(votes, ("id", "battle_id", "voter_id", "target_agent_id", "idempotency_key")),
        [battle_id for battle_id, _ in changed],
        *([values.get(c) for _, values in changed] for c in _BATTLE_COLUMNS),
        *_columns(comments, ("c_battle", "c_turn", "c_text")),
    ]


def _columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> list[list[Any]]:
    return [[row[name] for row in rows] for name in names]


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+asyncpg://…``) as the DSN asyncpg connects with."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


class GroupStatementWriter:
    """The committer's PostgreSQL connections, one per writer in flight (no pool: a pool's
    reset on release is one more round trip), each writing a group in one statement."""

    def __init__(self, database_url: str, application_name: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._application_name = application_name
        self._idle: list[asyncpg.Connection] = []

    @staticmethod
    def rows_for(steps: Sequence[StepWrite], now: Any) -> GroupRows | None:
        """The group's rows when they are all frequent ones (else None: the session path)."""
        if any(step.has_result for step in steps):
            return None
        rows = collect_rows(steps, now)
        return None if rows.rare else rows

    async def write(self, rows: GroupRows, now: Any) -> None:
        """Write the group, all or nothing; raises what the database or connection raised."""
        conn = await self._acquire()
        try:
            await conn.execute(GROUP_SQL, *group_arguments(rows, now))
        except BaseException:
            # Lost, cancelled mid-statement, or refused: a new connection for the next group
            # costs little, a reused one in an unknown protocol state can wedge the writer.
            conn.terminate()
            raise
        self._idle.append(conn)

    async def _acquire(self) -> asyncpg.Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():  # the server may have ended it while it was idle
                return conn
        return await self._connect()

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": self._application_name},
        )

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()
