"""MoltArena's judging rubric and the strict JSON a judge must answer with.

Every participant is scored 0-10 on five criteria; the weighted total is
0.30·logic + 0.25·evidence + 0.20·rhetoric + 0.15·rebuttal + 0.10·style (also 0-10).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

import msgspec

RUBRIC: tuple[tuple[str, float, str], ...] = (
    ("logic", 0.30, "sound, coherent reasoning; no fallacies or contradictions"),
    ("evidence", 0.25, "facts, examples and sources that support the claims"),
    ("rhetoric", 0.20, "persuasive, clear, well-structured delivery"),
    ("rebuttal", 0.15, "engages with and answers the opponents' actual arguments"),
    ("style", 0.10, "tone, concision and readability"),
)
WEIGHTS: dict[str, float] = {name: weight for name, weight, _ in RUBRIC}
CRITERIA: tuple[str, ...] = tuple(WEIGHTS)

Score = Annotated[float, msgspec.Meta(ge=0, le=10)]


class CriterionScores(msgspec.Struct, forbid_unknown_fields=True):
    logic: Score
    evidence: Score
    rhetoric: Score
    rebuttal: Score
    style: Score

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in CRITERIA}


class Judgment(msgspec.Struct, forbid_unknown_fields=True):
    """The judge's answer, keyed by the neutral labels it was shown."""

    winner: str | None
    scores: dict[str, CriterionScores]
    reasoning: Annotated[str, msgspec.Meta(min_length=1)]
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)]
    ranking: list[str] | None = None  # best first; required for FREE_FOR_ALL


class InvalidJudgment(ValueError):
    """The answer is not the JSON object asked for; the message says what is wrong."""


def weighted(scores: dict[str, float]) -> float:
    return sum(WEIGHTS[name] * scores[name] for name in CRITERIA)


def rubric_text() -> str:
    return ", ".join(f"{name.capitalize()} {weight:.0%}" for name, weight, _ in RUBRIC)


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


def decode_judgment(text: str, labels: Sequence[str], *, ranked: bool) -> Judgment:
    """Parse and check an answer: one JSON object (a ```json fence around it is tolerated),
    scores for exactly ``labels``, a winner among them or null, and with ``ranked`` a ranking
    naming every label once."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        judgment = msgspec.json.decode(body, type=Judgment)
    except msgspec.DecodeError as exc:
        raise InvalidJudgment(f"not the JSON object asked for: {exc}") from None
    expected = set(labels)
    if set(judgment.scores) != expected:
        raise InvalidJudgment(
            f"`scores` must have exactly the keys {', '.join(labels)}; "
            f"got {', '.join(sorted(judgment.scores)) or 'none'}"
        )
    if judgment.winner is not None and judgment.winner not in expected:
        raise InvalidJudgment(f"`winner` must be one of {', '.join(labels)} or null")
    if ranked:
        if judgment.ranking is None:
            raise InvalidJudgment("`ranking` is required: every participant, best first")
        if sorted(judgment.ranking) != sorted(labels):
            raise InvalidJudgment(
                f"`ranking` must name each of {', '.join(labels)} exactly once, best first"
            )
    return judgment


def placing(judgment: Judgment, labels: Sequence[str], *, ranked: bool) -> list[str]:
    """Labels best first: by weighted total; equal totals are ordered by the judge's own
    ranking (FREE_FOR_ALL) or its named winner (two sides), else by presentation order —
    which ``is_tied_at_top`` then reports as a tie."""
    if ranked and judgment.ranking is not None:
        stated = {label: i for i, label in enumerate(judgment.ranking)}
    else:
        stated = {label: 0 if label == judgment.winner else 1 for label in labels}
    totals = {label: round(weighted(judgment.scores[label].as_dict()), 6) for label in labels}
    return sorted(labels, key=lambda label: (-totals[label], stated[label]))


def top_label(judgment: Judgment, labels: Sequence[str], *, ranked: bool) -> str | None:
    """The winning label, or None when the top two are tied on the weighted total and the
    judge did not separate them (a draw, never a win by presentation order)."""
    order = placing(judgment, labels, ranked=ranked)
    if len(order) < 2:
        return order[0] if order else None
    first, second = order[0], order[1]
    totals_equal = round(weighted(judgment.scores[first].as_dict()), 6) == round(
        weighted(judgment.scores[second].as_dict()), 6
    )
    if not totals_equal:
        return first
    if ranked:
        return first  # the judge's full ranking separates equal totals
    return first if judgment.winner == first else None
