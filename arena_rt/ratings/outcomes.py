"""A battle's result as pairwise games between opponents: what both rating models consume.

Every agent gets a *place* (0 = best; equal places are a tie):

- HEAD_TO_HEAD: the winner 0, the other 1; a draw puts both at 0.
- TEAM: the winning team's members 0, the others 1; a draw puts everyone at 0. Only members of
  opposing teams play each other (team-mates never do).
- FREE_FOR_ALL: the judge's ranking (best first) gives the places; agents missing from it
  (e.g. forfeited) share the place after the last ranked one. Without a ranking, the winner is
  0 and everyone else shares 1 (the pairs among them count as draws); with no winner either,
  the battle is a draw for all.

Each pair of opponents is one game scored 1 / 0.5 / 0, with weight ``1 / opponents``, where
``opponents`` is how many opponents each agent faces (1 in HEAD_TO_HEAD, n-1 in FREE_FOR_ALL,
the other team's size in TEAM), so one battle moves an agent by at most one game's worth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from arena_rt.protocol import Mode

SeatSpec = tuple[str, str | None]  # (agent_id, team_id)


@dataclass(frozen=True, slots=True)
class Game:
    a: str
    b: str
    score_a: float  # 1 a won, 0.5 draw, 0 b won
    weight: float = 1.0


def places(
    mode: Mode,
    seats: Sequence[SeatSpec],
    winner_id: str | None,
    winning_team_id: str | None,
    ranking: Sequence[str] | None,
) -> dict[str, int]:
    agents = [agent for agent, _ in seats]
    if len(set(agents)) != len(agents):
        raise ValueError("an agent appears twice in the seats")
    if len(agents) < 2:
        raise ValueError("a rated battle needs at least two agents")
    if mode is Mode.HEAD_TO_HEAD:
        if len(agents) != 2:
            raise ValueError("HEAD_TO_HEAD needs exactly two agents")
        return _winner_places(agents, winner_id)
    if mode is Mode.TEAM:
        teams = {team for _, team in seats}
        if len(teams) != 2 or None in teams:
            raise ValueError("TEAM needs every agent in one of exactly two teams")
        if winning_team_id is not None and winning_team_id not in teams:
            raise ValueError(f"unknown winning team {winning_team_id!r}")
        return {
            agent: 0 if winning_team_id is None or team == winning_team_id else 1
            for agent, team in seats
        }
    if ranking:
        if len(set(ranking)) != len(ranking) or not set(ranking) <= set(agents):
            raise ValueError("the ranking must name seated agents, each at most once")
        position = {agent: i for i, agent in enumerate(ranking)}
        return {agent: position.get(agent, len(ranking)) for agent in agents}
    return _winner_places(agents, winner_id)


def _winner_places(agents: list[str], winner_id: str | None) -> dict[str, int]:
    if winner_id is None:
        return dict.fromkeys(agents, 0)
    if winner_id not in agents:
        raise ValueError(f"the winner {winner_id!r} is not seated")
    return {agent: 0 if agent == winner_id else 1 for agent in agents}


def games(
    mode: Mode,
    seats: Sequence[SeatSpec],
    winner_id: str | None = None,
    winning_team_id: str | None = None,
    ranking: Sequence[str] | None = None,
) -> list[Game]:
    """The battle's pairwise games, in seat order."""
    place = places(mode, seats, winner_id, winning_team_id, ranking)
    team = dict(seats)
    pairs = [
        (a, b)
        for (a, _), (b, _) in combinations(seats, 2)
        if mode is not Mode.TEAM or team[a] != team[b]
    ]
    opponents = {agent: 0 for agent, _ in seats}
    for a, b in pairs:
        opponents[a] += 1
        opponents[b] += 1
    result: list[Game] = []
    for a, b in pairs:
        score = 1.0 if place[a] < place[b] else 0.0 if place[a] > place[b] else 0.5
        # Equal team sizes (and FFA) give every agent the same count; the max keeps the
        # weight symmetric for the pair in any case.
        result.append(Game(a, b, score, 1.0 / max(opponents[a], opponents[b])))
    return result
