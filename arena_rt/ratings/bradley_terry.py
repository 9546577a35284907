"""Batch Bradley-Terry ratings with bootstrap confidence intervals: the ranked leaderboard.

Model: agent i has strength p_i > 0 and beats j with probability p_i / (p_i + p_j). The fit
is the maximum-likelihood estimate by the MM algorithm (Zermelo's iteration; Hunter 2004):

    p_i <- W_i / sum_j N_ij / (p_i + p_j)

where N_ij is the (weighted) number of games between i and j and W_i i's (weighted) wins, a
draw counting as half a win for each side. Games come from ``outcomes.games`` (FREE_FOR_ALL
pairs weighted 1/(n-1), TEAM pairs 1/team size), so one big battle weighs as much as one duel.

``prior`` adds that many virtual games, drawn, between each agent and a fixed average player
(p = 1). It keeps estimates finite for agents that never lost or never won, and shrinks
thinly-played agents toward the middle; ``prior=0`` is the plain MLE (it needs every agent to
have won and lost, and a connected comparison graph).

Ratings are on the Elo scale: R_i = 1200 + (400 / ln 10) · (ln p_i - mean_j ln p_j), so the
mean is 1200 (or the ``anchor`` agent sits at 1200) and a 400-point gap means 10:1 odds,
as in Elo. Intervals: the battles are resampled with replacement (seeded ``random.Random``,
200 rounds by default), each resample is fitted again, and the 2.5th and 97.5th percentiles
of each agent's rating form its 95% interval. Rank = 1 + the number of agents whose lower
bound is above this agent's upper bound, so agents whose intervals overlap share a rank, the
way public model arenas rank.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from arena_rt.ratings.outcomes import Game

CENTER = 1200.0
ELO_PER_NAT = 400.0 / math.log(10.0)
DEFAULT_PRIOR = 1.0
DEFAULT_ROUNDS = 200
TOLERANCE = 1e-9  # largest change of ln p_i in the last iteration (~1e-6 Elo points)
MAX_ITERATIONS = 100_000

Battle = Sequence[Game]  # the bootstrap unit: all pairwise games of one battle


@dataclass(frozen=True, slots=True)
class RatedAgent:
    agent_id: str
    rating: float
    lower: float  # bootstrap interval bounds
    upper: float
    rank: int
    battles: int


class _Tally:
    """Wins and pair counts of a set of battles."""

    def __init__(self, battles: Sequence[Battle]) -> None:
        self.wins: dict[str, float] = defaultdict(float)
        pairs: dict[tuple[str, str], float] = defaultdict(float)
        for battle in battles:
            for game in battle:
                if game.a == game.b:
                    raise ValueError(f"{game.a} cannot play itself")
                self.wins[game.a] += game.weight * game.score_a
                self.wins[game.b] += game.weight * (1.0 - game.score_a)
                key = (game.a, game.b) if game.a < game.b else (game.b, game.a)
                pairs[key] += game.weight
        self.opponents: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for (a, b), n in pairs.items():
            self.opponents[a].append((b, n))
            self.opponents[b].append((a, n))
        self.agents = sorted(self.opponents)

    def games_of(self, agent: str) -> float:
        return sum(n for _, n in self.opponents[agent])


def strengths(battles: Sequence[Battle], *, prior: float = DEFAULT_PRIOR) -> dict[str, float]:
    """The fitted p_i (scale fixed by the virtual player, or geometric mean 1 when prior=0)."""
    if prior < 0:
        raise ValueError("prior must be >= 0")
    tally = _Tally(battles)
    if prior == 0:
        for agent in tally.agents:
            won = tally.wins[agent]
            if won <= 0 or won >= tally.games_of(agent):
                raise ValueError(
                    f"{agent} has only wins or only losses: the plain MLE is infinite; "
                    "use prior > 0"
                )
    p = dict.fromkeys(tally.agents, 1.0)
    for _ in range(MAX_ITERATIONS):
        new: dict[str, float] = {}
        for i in tally.agents:
            pi = p[i]
            denominator = sum(n / (pi + p[j]) for j, n in tally.opponents[i])
            denominator += prior / (pi + 1.0)
            new[i] = (tally.wins[i] + prior / 2) / denominator
        change = max((abs(math.log(new[i] / p[i])) for i in p), default=0.0)
        shift = _prior_shift(new) if prior > 0 else -_mean_log(new)
        p = {i: v * math.exp(shift) for i, v in new.items()}
        if max(change, abs(shift)) < TOLERANCE:
            return p
    raise ValueError("the Bradley-Terry fit did not converge (is the comparison graph connected?)")


def _mean_log(p: dict[str, float]) -> float:
    return sum(math.log(v) for v in p.values()) / len(p) if p else 0.0


def _prior_shift(p: dict[str, float]) -> float:
    """The common factor e^t that maximizes the likelihood along the all-agents direction.

    Pairwise games don't change when every p_i is multiplied by the same factor; only the
    virtual games do, and they are maximal when sum_i e^t p_i / (e^t p_i + 1) = n / 2. Plain
    MM crawls along that direction when the prior is weak; solving it exactly (Newton on t)
    after every MM step makes the fit converge in a few hundred steps instead of thousands.
    """
    logs = [math.log(v) for v in p.values()]
    t = 0.0
    for _ in range(60):
        q = [1.0 / (1.0 + math.exp(-(x + t))) for x in logs]
        slope = sum(v * (1.0 - v) for v in q)
        step = (len(q) / 2 - sum(q)) / slope
        t += step
        if abs(step) < 1e-14:
            break
    return t


def to_elo_scale(p: dict[str, float], *, anchor: str | None = None) -> dict[str, float]:
    if not p:
        return {}
    if anchor is not None:
        if anchor not in p:
            raise ValueError(f"the anchor {anchor!r} has no games")
        zero = math.log(p[anchor])
    else:
        zero = sum(math.log(v) for v in p.values()) / len(p)
    return {i: CENTER + ELO_PER_NAT * (math.log(v) - zero) for i, v in p.items()}


def fit(
    battles: Sequence[Battle], *, prior: float = DEFAULT_PRIOR, anchor: str | None = None
) -> dict[str, float]:
    """Elo-scale Bradley-Terry ratings of every agent that played."""
    return to_elo_scale(strengths(battles, prior=prior), anchor=anchor)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 1]."""
    if not sorted_values:
        raise ValueError("no values")
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def shared_ranks(intervals: dict[str, tuple[float, float]]) -> dict[str, int]:
    """1 + the number of agents whose lower bound is above this agent's upper bound."""
    return {
        agent: 1 + sum(1 for low, _ in intervals.values() if low > upper)
        for agent, (_, upper) in intervals.items()
    }


def leaderboard(
    battles: Sequence[Battle],
    *,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    prior: float = DEFAULT_PRIOR,
    anchor: str | None = None,
    confidence: float = 0.95,
) -> list[RatedAgent]:
    """Ratings with bootstrap intervals and shared ranks, best first."""
    if prior <= 0:
        raise ValueError("the bootstrap needs prior > 0 (resamples may leave an agent unbeaten)")
    if rounds < 1 or not 0 < confidence < 1:
        raise ValueError("rounds must be >= 1 and confidence in (0, 1)")
    ratings = fit(battles, prior=prior, anchor=anchor)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {agent: [] for agent in ratings}
    for _ in range(rounds):
        resample = [battles[rng.randrange(len(battles))] for _ in battles]
        # An anchor missing from a resample cannot anchor it: fall back to the mean there.
        present = {g.a for b in resample for g in b} | {g.b for b in resample for g in b}
        round_anchor = anchor if anchor in present else None
        for agent, value in fit(resample, prior=prior, anchor=round_anchor).items():
            samples[agent].append(value)
    tail = (1 - confidence) / 2
    intervals: dict[str, tuple[float, float]] = {}
    for agent, values in samples.items():
        values.sort()
        if values:
            intervals[agent] = (percentile(values, tail), percentile(values, 1 - tail))
        else:
            intervals[agent] = (ratings[agent], ratings[agent])
    ranks = shared_ranks(intervals)
    played: dict[str, int] = defaultdict(int)
    for battle in battles:
        for agent in {g.a for g in battle} | {g.b for g in battle}:
            played[agent] += 1
    rows = [
        RatedAgent(agent, ratings[agent], *intervals[agent], ranks[agent], played[agent])
        for agent in ratings
    ]
    return sorted(rows, key=lambda r: (r.rank, -r.rating, r.agent_id))
