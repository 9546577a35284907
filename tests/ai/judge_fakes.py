"""Scripted judges for the fake LLM server: they read the prompt the way a model would (the
labelled blocks) and answer with the judge's JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from llm_server import Call, answer
from starlette.responses import Response

Scores = tuple[float, float, float, float, float]  # logic, evidence, rhetoric, rebuttal, style
_BLOCK = re.compile(r"^=== ((?:Speaker|Side) [A-J]) ===\n(.*?)^=== end of \1 ===", re.M | re.S)


def blocks(prompt: str) -> list[tuple[str, str]]:
    """(label, block text) in the order shown."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(prompt)]


def judgment(
    scores: Mapping[str, Scores],
    winner: str | None,
    *,
    reasoning: str = "Both made their case.",
    confidence: float = 0.8,
    ranking: list[str] | None = None,
    **extra: Any,
) -> str:
    body: dict[str, Any] = {
        "winner": winner,
        "scores": {
            label: dict(zip(("logic", "evidence", "rhetoric", "rebuttal", "style"), s, strict=True))
            for label, s in scores.items()
        },
        "reasoning": reasoning,
        "confidence": confidence,
        **extra,
    }
    if ranking is not None:
        body["ranking"] = ranking
    return json.dumps(body)


def by_marker(
    marks: Mapping[str, Scores], *, winner_mark: str | None = None, ranked: bool = False
) -> Callable[[Call], str]:
    """A consistent judge: each block is scored by the marker its turns contain, wherever it
    is shown. ``winner_mark`` is who it names overall (default: the best total)."""

    def judge(call: Call) -> str:
        shown = blocks(call.prompt)
        scores = {label: next(marks[m] for m in marks if m in text) for label, text in shown}
        label_of = {m: label for label, text in shown for m in marks if m in text}
        order = sorted(scores, key=lambda label: -sum(scores[label]))
        winner = label_of[winner_mark] if winner_mark else order[0]
        return judgment(
            scores,
            winner,
            reasoning=f"{order[0]} argued best; {order[-1]} least.",
            ranking=order if ranked else None,
        )

    return judge


def prefers_shown_first(call: Call) -> str:
    """A position-biased judge: whoever is shown first wins, whatever they said."""
    shown = [label for label, _ in blocks(call.prompt)]
    scores = {
        label: (8.0, 8, 8, 8, 8) if i == 0 else (5.0, 5, 5, 5, 5) for i, label in enumerate(shown)
    }
    return judgment(scores, shown[0], reasoning=f"{shown[0]} was clearly stronger.")


def prefers_shown_last(call: Call) -> str:
    shown = [label for label, _ in blocks(call.prompt)]
    scores = {
        label: (7.0, 7, 7, 7, 7) if label == shown[-1] else (6.0, 6, 6, 6, 6) for label in shown
    }
    return judgment(scores, shown[-1], reasoning=f"{shown[-1]} had the last word.")


def replying(judge: Callable[[Call], str]) -> Callable[[Call], Any]:
    """A handler answering every call with ``judge(call)`` in the called API's format."""

    async def handler(call: Call) -> Response:
        return answer(call, judge(call))

    return handler
