"""``arena-rt ratings``: a Bradley-Terry fit over every completed battle, stored for the board.

Reads each completed battle's seats and its ``result`` event (winner, winning team, ranking),
fits globally and per mode with bootstrap intervals, and replaces ``leaderboard_entries``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.protocol import Mode, Result, Status, event_decoder
from arena_rt.ratings.bradley_terry import Battle as Games
from arena_rt.ratings.bradley_terry import RatedAgent, leaderboard
from arena_rt.ratings.outcomes import games
from arena_rt.store.models import Battle, BattleEvent, BattleParticipant, LeaderboardEntry

log = logging.getLogger("arena_rt.ratings")

ALL_MODES = "ALL"


async def load_games(db: async_sessionmaker[AsyncSession]) -> dict[str, list[Games]]:
    """Pairwise games of every completed battle, by mode and under ``ALL``."""
    async with db() as session:
        results = await session.execute(
            select(Battle.id, Battle.mode, BattleEvent.payload)
            .join(BattleEvent, BattleEvent.battle_id == Battle.id)
            .where(Battle.status == Status.COMPLETED.value, BattleEvent.type == "result")
        )
        rows = list(results)
        seats_rows = await session.execute(
            select(
                BattleParticipant.battle_id, BattleParticipant.agent_id, BattleParticipant.team_id
            )
            .join(Battle, Battle.id == BattleParticipant.battle_id)
            .where(Battle.status == Status.COMPLETED.value)
            .order_by(BattleParticipant.battle_id, BattleParticipant.position)
        )
        seats: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        for battle_id, agent_id, team_id in seats_rows:
            seats[battle_id].append((agent_id, team_id))
    by_mode: dict[str, list[Games]] = defaultdict(list)
    for battle_id, mode, payload in rows:
        result = event_decoder.decode(payload)
        if not isinstance(result, Result) or len(seats[battle_id]) < 2:
            continue
        played = games(
            Mode(mode), seats[battle_id], result.winner_id, result.winning_team_id, result.ranking
        )
        by_mode[mode].append(played)
        by_mode[ALL_MODES].append(played)
    return by_mode


async def store_fit(
    db: async_sessionmaker[AsyncSession], mode: str, rows: list[RatedAgent]
) -> None:
    async with db() as session, session.begin():
        await session.execute(delete(LeaderboardEntry).where(LeaderboardEntry.mode == mode))
        session.add_all(
            LeaderboardEntry(
                mode=mode,
                agent_id=row.agent_id,
                rating=round(row.rating, 2),
                lower=round(row.lower, 2),
                upper=round(row.upper, 2),
                rank=row.rank,
                battles=row.battles,
            )
            for row in rows
        )


async def refit(
    db: async_sessionmaker[AsyncSession], *, rounds: int = 200, seed: int = 0
) -> dict[str, list[RatedAgent]]:
    fits: dict[str, list[RatedAgent]] = {}
    for mode, battles in (await load_games(db)).items():
        started = time.perf_counter()
        fits[mode] = leaderboard(battles, rounds=rounds, seed=seed)
        await store_fit(db, mode, fits[mode])
        log.info(
            "fitted %s: %d battles, %d agents, %d bootstrap rounds in %.1fs",
            mode,
            len(battles),
            len(fits[mode]),
            rounds,
            time.perf_counter() - started,
        )
    return fits
