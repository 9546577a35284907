"""Bradley-Terry against a hand-solved case and an independent fit; bootstrap and shared ranks."""

from __future__ import annotations

import math
import random

import pytest

from arena_rt.protocol import Mode
from arena_rt.ratings.bradley_terry import (
    ELO_PER_NAT,
    fit,
    leaderboard,
    percentile,
    shared_ranks,
    strengths,
)
from arena_rt.ratings.outcomes import Game, games
from arena_rt.ratings.report import format_leaderboard


def duels(a: str, b: str, a_wins: int, b_wins: int, draws: int = 0) -> list[list[Game]]:
    """One battle per game, as HEAD_TO_HEAD battles give them."""
    return [[Game(a, b, 1.0)]] * a_wins + [[Game(a, b, 0.0)]] * b_wins + [[Game(a, b, 0.5)]] * draws


# A beats B 2 of 3, B beats C 2 of 3, A beats C 4 of 5. With p = (4, 2, 1) the MLE equations
# W_i = sum_j N_ij p_i / (p_i + p_j) hold exactly:
#   A: W = 2 + 4 = 6 = 3·4/6 + 5·4/5 = 2 + 4
#   B: W = 1 + 2 = 3 = 3·2/6 + 3·2/3 = 1 + 2
#   C: W = 1 + 1 = 2 = 5·1/5 + 3·1/3 = 1 + 1
# On the Elo scale (400·log10 p), centred on a mean of 1200:
#   400·log10 4 = 240.8240, 400·log10 2 = 120.4120, 0; mean 120.4120
#   A = 1320.4120, B = 1200, C = 1079.5880
HAND = duels("A", "B", 2, 1) + duels("B", "C", 2, 1) + duels("A", "C", 4, 1)


def test_hand_solved_three_players() -> None:
    p = strengths(HAND, prior=0)
    assert p["A"] / p["C"] == pytest.approx(4.0, rel=1e-7)
    assert p["B"] / p["C"] == pytest.approx(2.0, rel=1e-7)
    ratings = fit(HAND, prior=0)
    assert ratings == {
        "A": pytest.approx(1200 + 400 * math.log10(2), abs=1e-4),
        "B": pytest.approx(1200, abs=1e-4),
        "C": pytest.approx(1200 - 400 * math.log10(2), abs=1e-4),
    }
    assert ratings["A"] == pytest.approx(1320.4120, abs=1e-4)


def test_anchor_agent_sits_at_1200() -> None:
    ratings = fit(HAND, prior=0, anchor="C")
    assert ratings["C"] == pytest.approx(1200, abs=1e-4)
    assert ratings["A"] == pytest.approx(1200 + 400 * math.log10(4), abs=1e-4)  # 1440.8240


def test_draws_count_as_half_wins() -> None:
    # A: 1 win + 1 draw = 1.5 wins of 2; B: 0.5. p_A / p_B = 1.5 / 0.5 = 3:
    # gap 400·log10 3 = 190.8485, centred: 1295.4243 and 1104.5757.
    ratings = fit(duels("A", "B", 1, 0, draws=1), prior=0)
    assert ratings["A"] == pytest.approx(1200 + 200 * math.log10(3), abs=1e-4)
    assert ratings["B"] == pytest.approx(1200 - 200 * math.log10(3), abs=1e-4)
    even = fit(duels("A", "B", 1, 1, draws=2), prior=0)
    assert even == {"A": pytest.approx(1200), "B": pytest.approx(1200)}


def independent_fit(battles: list[list[Game]], prior: float) -> dict[str, float]:
    """Plain gradient ascent on the log-likelihood in theta = ln p (with the same prior:
    ``prior`` drawn games against a fixed player at theta = 0), then the Elo scale."""
    agents = sorted({g.a for b in battles for g in b} | {g.b for b in battles for g in b})
    games_between: dict[tuple[str, str], float] = {}  # weighted games per pair
    won: dict[tuple[str, str], float] = {}  # weighted wins of the pair's first agent
    for battle in battles:
        for g in battle:
            games_between[g.a, g.b] = games_between.get((g.a, g.b), 0.0) + g.weight
            won[g.a, g.b] = won.get((g.a, g.b), 0.0) + g.weight * g.score_a
    theta = dict.fromkeys(agents, 0.0)
    for _ in range(20_000):
        grad = dict.fromkeys(agents, 0.0)
        for (a, b), n in games_between.items():
            excess = won[a, b] - n / (1 + math.exp(theta[b] - theta[a]))
            grad[a] += excess
            grad[b] -= excess
        for agent in agents:
            grad[agent] += prior * (0.5 - 1 / (1 + math.exp(-theta[agent])))
            theta[agent] += 0.02 * grad[agent]
        if prior == 0:
            mean = sum(theta.values()) / len(theta)
            theta = {a: t - mean for a, t in theta.items()}
    mean = sum(theta.values()) / len(theta)
    return {a: 1200 + ELO_PER_NAT * (t - mean) for a, t in theta.items()}


def random_battles(seed: int, count: int) -> list[list[Game]]:
    rng = random.Random(seed)
    skill = {"ann": 1.0, "bob": 0.4, "cyd": 0.0, "dee": -0.3, "eve": -1.1}
    agents = sorted(skill)
    battles: list[list[Game]] = []
    for i in range(count):
        if i % 5 == 0:  # a free-for-all now and then: ranked by noisy skill
            seats = [(a, None) for a in rng.sample(agents, 4)]
            ranking = sorted((a for a, _ in seats), key=lambda a: -(skill[a] + rng.gauss(0, 1)))
            battles.append(games(Mode.FREE_FOR_ALL, seats, ranking=ranking))
            continue
        a, b = rng.sample(agents, 2)
        p = 1 / (1 + math.exp(skill[b] - skill[a]))
        roll = rng.random()
        score = 0.5 if abs(roll - p) < 0.05 else 1.0 if roll < p else 0.0
        battles.append([Game(a, b, score)])
    return battles


@pytest.mark.parametrize("prior", [0.0, 1.0])
def test_matches_an_independent_fit(prior: float) -> None:
    battles = random_battles(seed=3, count=150)
    ours = fit(battles, prior=prior)
    reference = independent_fit(battles, prior)
    assert ours.keys() == reference.keys()
    for agent in ours:
        assert ours[agent] == pytest.approx(reference[agent], abs=0.01), agent
    assert sum(ours.values()) / len(ours) == pytest.approx(1200)


def test_the_plain_mle_refuses_an_unbeaten_agent() -> None:
    with pytest.raises(ValueError, match="only wins or only losses"):
        fit(duels("A", "B", 3, 0), prior=0)
    # With the prior it is finite, and the winner is ahead.
    ratings = fit(duels("A", "B", 3, 0))
    assert ratings["A"] > ratings["B"] and math.isfinite(ratings["A"])


def test_percentile_is_linear_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.25) == pytest.approx(1.75)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.975) == pytest.approx(3.925)
    assert percentile([5.0], 0.5) == 5.0


def test_overlapping_intervals_share_a_rank() -> None:
    intervals = {
        "a": (1300.0, 1400.0),
        "b": (1250.0, 1350.0),  # overlaps a: no one's lower bound is above 1350 -> rank 1
        "c": (1100.0, 1200.0),  # a and b are entirely above -> rank 3
        "d": (1000.0, 1120.0),  # a and b above; c overlaps -> rank 3
    }
    assert shared_ranks(intervals) == {"a": 1, "b": 1, "c": 3, "d": 3}


def test_leaderboard_intervals_and_ranks() -> None:
    # top dominates everyone; mid1 and mid2 are even with each other; low loses to all.
    battles = (
        duels("top", "mid1", 18, 2)
        + duels("top", "mid2", 18, 2)
        + duels("mid1", "mid2", 10, 10)
        + duels("mid1", "low", 18, 2)
        + duels("mid2", "low", 18, 2)
        + duels("top", "low", 20, 0)
    )
    rows = leaderboard(battles, rounds=100, seed=11)
    assert rows[0].agent_id == "top" and rows[-1].agent_id == "low"
    by_id = {r.agent_id: r for r in rows}
    assert by_id["top"].rank == 1
    assert by_id["mid1"].rank == by_id["mid2"].rank == 2  # overlapping intervals share a rank
    assert by_id["low"].rank == 4
    for r in rows:
        assert r.lower <= r.rating <= r.upper
    assert by_id["top"].battles == by_id["mid1"].battles == 60  # 20 + 20 + 20
    assert leaderboard(battles, rounds=100, seed=11) == rows  # seeded: reproducible
    table = format_leaderboard(rows, {"top": "Top Agent"})
    assert "Top Agent" in table and table.splitlines()[2].split()[0] == "1"


def test_fewer_battles_give_wider_intervals() -> None:
    few = leaderboard(duels("A", "B", 3, 2), rounds=200, seed=1)
    many = leaderboard(duels("A", "B", 30, 20), rounds=200, seed=1)

    def width(rows: list) -> float:  # type: ignore[type-arg]
        return next(r.upper - r.lower for r in rows if r.agent_id == "A")

    assert width(many) < width(few)
