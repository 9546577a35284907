"""The bundled synthetic corpus: battles generated deterministically from a seed.

Nothing is stored in the repository: ``synthetic_corpus(seed, size)`` builds the same event
logs every time, shaped like real ``/events`` logs (the server's event types and fields, in
the server's order). Modes cycle HEAD_TO_HEAD, TEAM 2v2, FREE_FOR_ALL 4, HEAD_TO_HEAD (so any three
consecutive battles cover all three modes).
Turn lengths are log-normal around 1,100 characters (250-4,000); think times are log-normal
around 6 s (1.5-25 s) inside a 30 s turn, as LLM agents take.
"""

from __future__ import annotations

import math
import random
from typing import Any

from arena_rt.replay.recording import Recording, from_events

TOPICS = (
    "Should cities ban cars from their centres?",
    "Is remote work better for teams than the office?",
    "Should voting be compulsory?",
    "Is nuclear power the fastest route to clean electricity?",
    "Should homework be abolished in primary schools?",
    "Are open-source models safer than closed ones?",
    "Should social networks verify the age of their users?",
    "Is a four-day working week good for the economy?",
    "Should museums return artefacts to their countries of origin?",
    "Is space exploration worth its cost?",
    "Should tipping be replaced by higher wages?",
    "Do standardized tests measure anything useful?",
    "Should public transport be free at the point of use?",
    "Is a hot dog a sandwich?",
    "Should cash be phased out?",
    "Are electric scooters good for cities?",
)

_SUBJECTS = (
    "the evidence from a decade of pilots",
    "every serious cost-benefit study",
    "the people who live with the consequences",
    "the budget office's own projections",
    "the last three municipal experiments",
    "independent auditors",
    "the historical record",
    "anyone who has looked at the data",
    "the experience of smaller countries",
    "a plain reading of the incentives",
)
_VERBS = (
    "showed",
    "suggested",
    "made clear",
    "confirmed",
    "pointed out",
    "reminded us",
    "demonstrated",
)
_CLAIMS = (
    "that the benefits arrive sooner than the critics admit",
    "that the costs fall hardest on those least able to pay",
    "that a gradual rollout avoids most of the disruption",
    "that public opinion follows results, not the other way round",
    "that the alternative has been tried and quietly abandoned",
    "that measurement, not ideology, should settle the question",
    "that second-order effects dominate the first-order ones",
    "that the strongest objection rests on a misread statistic",
    "that trust is built by transparency about the trade-offs",
    "that the status quo is itself a choice with victims",
)
_CONNECTIVES = (
    "Moreover,",
    "Crucially,",
    "My opponent ignores that",
    "Consider also that",
    "In fairness,",
    "Yet",
    "Put simply,",
    "The rebuttal fails because",
    "Look closer and",
    "Finally,",
)


def _sentence(rng: random.Random) -> str:
    body = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_CLAIMS)}"
    if rng.random() < 0.6:
        return f"{rng.choice(_CONNECTIVES)} {body}."
    return body[0].upper() + body[1:] + "."


def _lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    return min(max(rng.lognormvariate(math.log(median), sigma), low), high)


def turn_text(rng: random.Random, topic: str, turn: int, chars: int) -> str:
    """An argument of about ``chars`` characters, in paragraphs."""
    parts = [f"On '{topic}', turn {turn}:"]
    length = len(parts[0])
    while length < chars:
        paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
        parts.append(paragraph)
        length += len(paragraph) + 2
    # Cut at a word and end without blanks: stored exactly as sent (the server trims text).
    text = "\n\n".join(parts)
    if len(text) > chars:
        text = text[:chars].rsplit(" ", 1)[0]
    return text.rstrip(" \n,;:")


def _battle(
    rng: random.Random, index: int, base_at: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    mode = ("HEAD_TO_HEAD", "TEAM", "FREE_FOR_ALL", "HEAD_TO_HEAD")[index % 4]
    seats = 2 if mode == "HEAD_TO_HEAD" else 4
    max_turns = rng.choice((6, 8, 10)) if seats == 2 else rng.choice((8, 12))
    turn_duration = 30_000
    topic = TOPICS[rng.randrange(len(TOPICS))]
    agents = [f"syn{index:04d}agent{p}" for p in range(1, seats + 1)]
    teams = ["A", "B"] * (seats // 2) if mode == "TEAM" else [None] * seats
    at = base_at
    seq = 0
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        nonlocal seq
        seq += 1
        events.append({"type": kind, **fields, "seq": seq, "at": at})

    for position, (agent, team) in enumerate(zip(agents, teams, strict=True), start=1):
        at += rng.randint(200, 3_000)
        emit("participant_joined", agentId=agent, position=position, teamId=team)
    emit("state", status="STARTING", previous="LOBBY", reason=None)
    at += 10_000
    emit("state", status="IN_PROGRESS", previous="STARTING", reason=None)
    order = list(range(seats))
    if mode == "TEAM":  # A1, B1, A2, B2: positions alternate teams already
        order = [i for pair in zip(order[0::2], order[1::2], strict=True) for i in pair]
    for turn in range(1, max_turns + 1):
        agent = agents[order[(turn - 1) % seats]]
        emit("turn_started", turnNumber=turn, agentId=agent, deadlineAt=at + turn_duration)
        think = int(_lognormal(rng, 6_000, 0.6, 1_500, 25_000))
        chars = int(_lognormal(rng, 1_100, 0.6, 280, 4_000))
        at += think
        content = turn_text(rng, topic, turn, chars)
        emit(
            "turn",
            turnNumber=turn,
            agentId=agent,
            content=content,
            durationMs=think,
            audioUrl=None,
        )
        if turn > 1:
            at += rng.randint(5, 40)
        words = len(content.split())
        emit(
            "commentary",
            turnNumber=turn,
            text=f"Turn {turn}: {agent} makes a {words}-word case. (synthetic commentary)",
        )
    emit("state", status="VOTING", previous="IN_PROGRESS", reason=None)
    emit("voting_started", deadlineAt=at + 30_000)
    at += 30_000
    emit("state", status="JUDGING", previous="VOTING", reason=None)
    at += rng.randint(5, 50)
    tally = {a: 0 for a in agents}
    winner = rng.choice(agents)
    emit(
        "result",
        winnerId=None if mode == "TEAM" else winner,
        reasoning="Synthetic result.",
        tally=tally,
        winningTeamId="A" if mode == "TEAM" else None,
        ratings=None,
        decidedBy="heuristic-judge",
    )
    emit("state", status="COMPLETED", previous="JUDGING", reason=None)
    resource = {
        "roomCode": f"SYN{index:05d}",
        "topic": topic,
        "mode": mode,
        "maxParticipants": seats,
        "turnDurationMs": turn_duration,
        "maxTurns": max_turns,
    }
    return resource, events


def synthetic_corpus(seed: int = 1, size: int = 48) -> list[Recording]:
    """``size`` synthetic battle recordings; the same seed always gives the same battles."""
    rng = random.Random(seed)
    base_at = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    recordings = []
    for index in range(size):
        resource, events = _battle(rng, index, base_at + index * 60_000)
        recordings.append(from_events(str(resource["roomCode"]), events, resource))
    return recordings
