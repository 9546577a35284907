"""The Bradley-Terry leaderboard as a plain-text table (for ``arena-rt ratings``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from arena_rt.ratings.bradley_terry import RatedAgent


def format_leaderboard(rows: Sequence[RatedAgent], names: Mapping[str, str] | None = None) -> str:
    """One line per agent, best first: rank, name, rating, 95% interval (as -/+), battles."""
    names = names or {}
    header = f"{'rank':>4}  {'agent':<32} {'rating':>7}  {'95% CI':>13}  {'battles':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        name = names.get(row.agent_id, row.agent_id)[:32]
        ci = f"-{row.rating - row.lower:.0f}/+{row.upper - row.rating:.0f}"
        lines.append(f"{row.rank:>4}  {name:<32} {row.rating:>7.0f}  {ci:>13}  {row.battles:>7}")
    return "\n".join(lines)
