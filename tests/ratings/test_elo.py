"""Elo against hand-computed values. E_a = 1 / (1 + 10^((Rb - Ra) / 400)), K = 32,
K scaled by 1/opponents in TEAM and FREE_FOR_ALL."""

from __future__ import annotations

import pytest

from arena_rt.protocol import Mode
from arena_rt.ratings.elo import INITIAL_RATING, K_FACTOR, expected_score, rate_battle
from arena_rt.ratings.outcomes import Game, games

# 10^(100/400) = 1.778279410, 10^(200/400) = 3.162277660
E_100 = 1 / (1 + 10 ** (-100 / 400))  # 0.6400650 (the stronger by 100)
E_200 = 1 / (1 + 10 ** (-200 / 400))  # 0.7597469 (the stronger by 200)


def approx(values: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    return {
        k: (pytest.approx(b, abs=1e-6), pytest.approx(a, abs=1e-6)) for k, (b, a) in values.items()
    }  # type: ignore[misc]


def test_constants_and_expected_score() -> None:
    assert (INITIAL_RATING, K_FACTOR) == (1200.0, 32.0)
    assert expected_score(1200, 1200) == 0.5
    assert expected_score(1400, 1200) == pytest.approx(0.759746926)
    assert expected_score(1200, 1400) == pytest.approx(0.240253074)


def test_head_to_head_win_between_equals() -> None:
    # E = 0.5; winner +32·(1 - 0.5) = +16, loser -16.
    result = rate_battle(Mode.HEAD_TO_HEAD, [("a", None), ("b", None)], {}, "a", None)
    assert result == {"a": (1200.0, 1216.0), "b": (1200.0, 1184.0)}


def test_head_to_head_draw_moves_the_favourite_down() -> None:
    # E_a = 1 / (1 + 10^(-200/400)) = 0.759746926; a: 32·(0.5 - 0.759746926) = -8.311901632.
    result = rate_battle(
        Mode.HEAD_TO_HEAD, [("a", None), ("b", None)], {"a": 1400, "b": 1200}, None, None
    )
    assert result == approx({"a": (1400, 1391.688098368), "b": (1200, 1208.311901632)})


def test_head_to_head_upset() -> None:
    # b (1200) beats a (1400): b gains 32·(1 - 0.240253074) = 24.311901632.
    result = rate_battle(
        Mode.HEAD_TO_HEAD, [("a", None), ("b", None)], {"a": 1400, "b": 1200}, "b", None
    )
    assert result == approx({"a": (1400, 1375.688098368), "b": (1200, 1224.311901632)})


def test_free_for_all_pairwise_with_k_over_n_minus_1() -> None:
    # Three players: K' = 32 / (3 - 1) = 16. Ranking B, C, A with A=1300, B=1200, C=1100.
    #   B beats C: 16·(1 - E_100)       = +5.758960    B beats A: 16·(1 - (1 - E_100)) = +10.241040
    #   C loses to B: 16·(0 - (1-E_100)) = -5.758960   C beats A: 16·(1 - (1 - E_200)) = +12.155951
    #   A loses to B: 16·(0 - E_100)     = -10.241040  A loses to C: 16·(0 - E_200)    = -12.155951
    b = 16 * (1 - E_100) + 16 * E_100  # = 16
    c = -16 * (1 - E_100) + 16 * E_200  # = +6.396991
    a = -16 * E_100 - 16 * E_200  # = -22.396991
    assert (b, c, a) == pytest.approx((16.0, 6.396991, -22.396991), abs=1e-6)
    result = rate_battle(
        Mode.FREE_FOR_ALL,
        [("a", None), ("b", None), ("c", None)],
        {"a": 1300, "b": 1200, "c": 1100},
        "b",
        None,
        ["b", "c", "a"],
    )
    assert result == approx({"a": (1300, 1300 + a), "b": (1200, 1200 + b), "c": (1100, 1100 + c)})
    assert sum(after - before for before, after in result.values()) == pytest.approx(0)


def test_free_for_all_between_equals() -> None:
    # K' = 16; C beats A and B (+8 each); A beats B (+8) and loses to C (-8); B loses twice.
    result = rate_battle(
        Mode.FREE_FOR_ALL, [("a", None), ("b", None), ("c", None)], {}, "c", None, ["c", "a", "b"]
    )
    assert result == {"a": (1200, 1200), "b": (1200, 1184), "c": (1200, 1216)}


def test_free_for_all_without_a_ranking_puts_the_rest_level() -> None:
    # Winner A beats B and C (+8 each); B and C draw with each other (0).
    result = rate_battle(Mode.FREE_FOR_ALL, [("a", None), ("b", None), ("c", None)], {}, "a", None)
    assert result == {"a": (1200, 1216), "b": (1200, 1192), "c": (1200, 1192)}


def test_free_for_all_unranked_agents_share_last_place() -> None:
    # d forfeited and is missing from the ranking: it loses to a, b, c (-32/3 · 0.5 each).
    result = rate_battle(
        Mode.FREE_FOR_ALL,
        [("a", None), ("b", None), ("c", None), ("d", None)],
        {},
        "a",
        None,
        ["a", "b", "c"],
    )
    k = 32 / 3
    assert result["d"][1] == pytest.approx(1200 - 3 * k * 0.5)
    assert result["a"][1] == pytest.approx(1200 + 3 * k * 0.5)
    assert result["b"][1] == pytest.approx(1200 + k * 0.5)  # loses to a, beats c and d


def test_team_each_member_against_each_opposing_member() -> None:
    # Red (r1 1200, r2 1300) beats blue (b1 1200, b2 1100); K' = 32 / 2 (team size) = 16.
    #   r1: vs b1 16·(1 - 0.5) = 8;  vs b2 16·(1 - E_100) = 5.758960  -> +13.758960
    #   r2: vs b1 16·(1 - E_100) = 5.758960;  vs b2 16·(1 - E_200) = 3.844049  -> +9.603009
    #   b1: -8 - 5.758960 = -13.758960;  b2: -5.758960 - 3.844049 = -9.603009
    r1 = 8 + 16 * (1 - E_100)
    r2 = 16 * (1 - E_100) + 16 * (1 - E_200)
    result = rate_battle(
        Mode.TEAM,
        [("r1", "red"), ("b1", "blue"), ("r2", "red"), ("b2", "blue")],
        {"r1": 1200, "r2": 1300, "b1": 1200, "b2": 1100},
        None,
        "red",
    )
    assert (r1, r2) == pytest.approx((13.758960, 9.603009), abs=1e-6)
    assert result == approx(
        {
            "r1": (1200, 1200 + r1),
            "r2": (1300, 1300 + r2),
            "b1": (1200, 1200 - r1),
            "b2": (1100, 1100 - r2),
        }
    )


def test_team_draw_and_teammates_never_play() -> None:
    seats = [("r1", "red"), ("b1", "blue"), ("r2", "red"), ("b2", "blue")]
    assert {(g.a, g.b) for g in games(Mode.TEAM, seats)} == {
        ("r1", "b1"),
        ("r1", "b2"),
        ("b1", "r2"),
        ("r2", "b2"),
    }
    result = rate_battle(Mode.TEAM, seats, {}, None, None)
    assert all(after == before == 1200 for before, after in result.values())


def test_game_weights() -> None:
    ffa = games(Mode.FREE_FOR_ALL, [(x, None) for x in "abcd"], ranking=["d", "c", "b", "a"])
    assert len(ffa) == 6 and {g.weight for g in ffa} == {1 / 3}
    assert Game("c", "d", 0.0, 1 / 3) in ffa  # d ranked above c
    [duel] = games(Mode.HEAD_TO_HEAD, [("x", None), ("y", None)], "y")
    assert duel == Game("x", "y", 0.0, 1.0)


@pytest.mark.parametrize(
    ("mode", "seats", "winner", "team", "ranking", "message"),
    [
        (
            Mode.HEAD_TO_HEAD,
            [("a", None), ("b", None), ("c", None)],
            "a",
            None,
            None,
            "exactly two",
        ),
        (Mode.HEAD_TO_HEAD, [("a", None), ("b", None)], "z", None, None, "not seated"),
        (Mode.HEAD_TO_HEAD, [("a", None), ("a", None)], "a", None, None, "twice"),
        (Mode.TEAM, [("a", "x"), ("b", "y"), ("c", "z")], None, "x", None, "exactly two teams"),
        (Mode.TEAM, [("a", "x"), ("b", "y")], None, "q", None, "unknown winning team"),
        (Mode.FREE_FOR_ALL, [("a", None), ("b", None)], None, None, ["a", "q"], "seated agents"),
    ],
)
def test_inconsistent_results_are_refused(
    mode: Mode,
    seats: list[tuple[str, str | None]],
    winner: str | None,
    team: str | None,
    ranking: list[str] | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        rate_battle(mode, seats, {}, winner, team, ranking)
