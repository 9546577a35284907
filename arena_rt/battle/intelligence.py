"""The judge and commentator interface, and the built-in heuristic ones (offline default).

The heuristics are deterministic and say what they measure: they weigh votes, skipped turns
and how much each speaker engaged with the previous speaker's words. They are not an LLM and
their reasoning says so. LLM-backed providers implement the same two protocols.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from arena_rt.battle.domain import BattleConfig, RequestCommentary, RequestJudge, TranscriptTurn
from arena_rt.protocol import Mode

HEURISTIC_JUDGE = "heuristic-judge"
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]{3,}")
# Weights of the heuristic score (documented in the reasoning it returns).
VOTE_WEIGHT = 3.0
SKIP_PENALTY = 2.0
ENGAGEMENT_WEIGHT = 4.0


@dataclass(frozen=True, slots=True)
class Usage:
    """What an AI verdict cost, summed over every call made for it."""

    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RawJudgment:
    """One judge answer exactly as the model wrote it, with the neutral labels it was shown:
    ``labels`` maps each label (in presentation order) to the agent id, or the team id in TEAM."""

    labels: dict[str, str]
    text: str


@dataclass(frozen=True, slots=True)
class Verdict:
    winner_id: str | None
    reasoning: str
    winning_team_id: str | None = None
    decided_by: str = HEURISTIC_JUDGE
    # AI judges fill these; the heuristic leaves them empty.
    # scores: participant (agent id; team id in TEAM) -> criterion -> 0..10, plus "weighted".
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    ranking: tuple[str, ...] = ()  # best first (agent ids; FREE_FOR_ALL), empty when not ranked
    confidence: float | None = None  # 0..1 as the judge reported it
    raw: tuple[RawJudgment, ...] = ()
    usage: Usage | None = None


class Judge(Protocol):
    async def judge(self, request: RequestJudge) -> Verdict: ...


class Commentator(Protocol):
    async def comment(self, config: BattleConfig, request: RequestCommentary) -> str: ...


def _words(text: str | None) -> set[str]:
    return {w.lower() for w in _WORD.findall(text or "")}


def engagement(turn: TranscriptTurn, previous: TranscriptTurn | None) -> float:
    """Share of the previous speaker's content words this turn takes up (0..1)."""
    if previous is None or turn.content is None or previous.content is None:
        return 0.0
    theirs = _words(previous.content)
    if not theirs:
        return 0.0
    return len(theirs & _words(turn.content)) / len(theirs)


class HeuristicJudge:
    async def judge(self, request: RequestJudge) -> Verdict:
        scores = {seat.agent_id: 0.0 for seat in request.seats}
        notes: dict[str, list[str]] = {agent: [] for agent in scores}
        votes = {
            a: request.agent_tally.get(a, 0) + request.audience_tally.get(a, 0) for a in scores
        }
        for agent, count in votes.items():
            scores[agent] += VOTE_WEIGHT * count
            notes[agent].append(f"{count} vote(s)")
        previous: TranscriptTurn | None = None
        skipped = dict.fromkeys(scores, 0)
        engaged = dict.fromkeys(scores, 0.0)
        for turn in request.turns:
            if turn.content is None:
                skipped[turn.agent_id] = skipped.get(turn.agent_id, 0) + 1
                continue
            if previous is not None and previous.agent_id != turn.agent_id:
                engaged[turn.agent_id] = engaged.get(turn.agent_id, 0.0) + engagement(
                    turn, previous
                )
            previous = turn
        for agent in scores:
            scores[agent] += ENGAGEMENT_WEIGHT * engaged[agent] - SKIP_PENALTY * skipped[agent]
            notes[agent].append(f"{skipped[agent]} skipped turn(s)")
            notes[agent].append(f"engagement {engaged[agent]:.2f}")

        sides = _sides(request, scores)
        ranked = sorted(sides.items(), key=lambda kv: kv[1], reverse=True)
        summary = "; ".join(
            f"{agent}: score {scores[agent]:.2f} ({', '.join(notes[agent])})" for agent in scores
        )
        method = (
            f"Heuristic judge (not an LLM): score = {VOTE_WEIGHT:g} x votes + "
            f"{ENGAGEMENT_WEIGHT:g} x engagement with the previous speaker's words - "
            f"{SKIP_PENALTY:g} x skipped turns."
        )
        if len(ranked) < 2 or abs(ranked[0][1] - ranked[1][1]) < 1e-9:
            return Verdict(None, f"{method} The top scores are tied: a draw. {summary}")
        top = ranked[0][0]
        if request.mode is Mode.TEAM:
            return Verdict(
                None, f"{method} Team {top} scores highest. {summary}", winning_team_id=top
            )
        return Verdict(top, f"{method} {top} scores highest. {summary}")


def _sides(request: RequestJudge, scores: dict[str, float]) -> dict[str, float]:
    if request.mode is not Mode.TEAM:
        return scores
    teams: dict[str, float] = {}
    for seat in request.seats:
        teams[seat.team_id or ""] = teams.get(seat.team_id or "", 0.0) + scores[seat.agent_id]
    return teams


class HeuristicCommentator:
    """Two sentences on the turn just played: its length, and how it answered the last one."""

    async def comment(self, config: BattleConfig, request: RequestCommentary) -> str:
        words = len(request.content.split())
        previous = next((t for t in reversed(request.previous) if t.content is not None), None)
        current = TranscriptTurn(request.turn_number, request.agent_id, request.content, None)
        share = engagement(current, previous)
        opening = f"Turn {request.turn_number}: {request.agent_id} makes a {words}-word case."
        if previous is None:
            follow = "First words on the floor; the opponent has something to answer now."
        elif share >= 0.3:
            follow = f"It takes on the previous argument directly ({share:.0%} of its key words)."
        elif share > 0:
            follow = (
                f"It touches the previous argument only lightly ({share:.0%} of its key words)."
            )
        else:
            follow = "It ignores the previous argument and changes the ground."
        return f"{opening} {follow}"
