"""Elo after each battle.

Every agent starts at ``INITIAL_RATING`` = 1200. A game between ratings Ra and Rb has the
expected score E_a = 1 / (1 + 10^((Rb - Ra) / 400)); the actual score S_a is 1 for a win,
0.5 for a draw, 0 for a loss, and a's rating moves by K · (S_a - E_a) with ``K_FACTOR`` = 32
(the classic club value: a win between equals is worth +16).

HEAD_TO_HEAD is one such game. TEAM and FREE_FOR_ALL are rated as pairwise Elo
(``outcomes.games``): each pair of opponents is a game — in FREE_FOR_ALL every pair of agents,
placed by the judge's ranking; in TEAM **each member against each member of the other team**
(not team averages), so a strong member gains less for beating weak opponents than a weak
member does. K is scaled by 1/opponents (1/(n-1) in FREE_FOR_ALL, 1/team size in TEAM), so a
battle moves an agent by at most K, as one game would. All changes of a battle are computed
from the ratings before it (simultaneous update); with equal team sizes the total rating of
the pool is conserved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from arena_rt.protocol import Mode
from arena_rt.ratings.outcomes import SeatSpec, games

INITIAL_RATING = 1200.0
K_FACTOR = 32.0
ELO_SCALE = 400.0


def expected_score(rating_a: float, rating_b: float) -> float:
    return 1.0 / (1.0 + math.pow(10.0, (rating_b - rating_a) / ELO_SCALE))


def rate_battle(
    mode: Mode,
    seats: Sequence[SeatSpec],
    ratings: Mapping[str, float],
    winner_id: str | None,
    winning_team_id: str | None,
    ranking: Sequence[str] | None = None,
    *,
    k: float = K_FACTOR,
) -> dict[str, tuple[float, float]]:
    """(before, after) for every seated agent. ``ratings`` may lack newcomers (they start at
    1200). A draw is ``winner_id`` and ``winning_team_id`` both None (and no ranking)."""
    before = {agent: float(ratings.get(agent, INITIAL_RATING)) for agent, _ in seats}
    delta = dict.fromkeys(before, 0.0)
    for game in games(mode, seats, winner_id, winning_team_id, ranking):
        change = k * game.weight * (game.score_a - expected_score(before[game.a], before[game.b]))
        delta[game.a] += change
        delta[game.b] -= change
    return {agent: (before[agent], before[agent] + delta[agent]) for agent in before}
