"""The AI judge: MoltArena's rubric, strict JSON, and a guard against position bias.

- Each presentation is one call (temperature 0). An answer that fails validation is retried
  once, with the error shown to the model; a second failure raises ``JudgeOutputError``, and
  the runner then lets the vote tally decide.
- The rubric decides: the weighted totals rank the participants (ties broken by the judge's own
  ranking or named winner; an unbroken tie at the top is a draw).
- Two-sided battles (HEAD_TO_HEAD, TEAM) are judged twice, concurrently, with the sides'
  presentation order (and so their labels) swapped. The verdict stands only when both orders
  name the same winner. When they disagree the result is a **draw** (not the vote tally): the
  judge's preference followed the presentation, not the arguments, and a draw never rewards a
  seat. The reasoning says so.
- FREE_FOR_ALL is judged once, with a full ranking; the winner is rank 1.
- The whole verdict has one deadline (30 s by default); past it, ``JudgeOutputError``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from arena_rt.ai.base import ChatProvider, Completion, Message
from arena_rt.ai.judge_prompt import SYSTEM_PROMPT, Presentation, presentations, render
from arena_rt.ai.rubric import (
    CRITERIA,
    InvalidJudgment,
    Judgment,
    decode_judgment,
    placing,
    rubric_text,
    top_label,
    weighted,
)
from arena_rt.battle.domain import RequestJudge
from arena_rt.battle.intelligence import RawJudgment, Usage, Verdict
from arena_rt.metrics import Metrics
from arena_rt.protocol import Mode

JUDGE_MAX_TOKENS = 1_500
JUDGE_DEADLINE_S = 30.0
_REASONING_CHARS = 2_000
_LABEL = re.compile(r"\b(?:Speaker|Side) [A-J]\b")


class JudgeOutputError(Exception):
    """No valid verdict: invalid answers twice, or the deadline passed."""


@dataclass(frozen=True, slots=True)
class _Run:
    presentation: Presentation
    judgment: Judgment
    text: str
    completions: tuple[Completion, ...]

    def winner(self, ranked: bool) -> str | None:
        label = top_label(self.judgment, self.presentation.labels, ranked=ranked)
        return None if label is None else self.presentation.key_of(label)

    def order(self, ranked: bool) -> list[str]:
        labels = placing(self.judgment, self.presentation.labels, ranked=ranked)
        return [self.presentation.key_of(label) for label in labels]

    def scores(self) -> dict[str, dict[str, float]]:
        return {
            self.presentation.key_of(label): s.as_dict()
            for label, s in self.judgment.scores.items()
        }

    def stated_winner(self) -> str | None:
        w = self.judgment.winner
        return None if w is None else self.presentation.key_of(w)


class LLMJudge:
    def __init__(
        self,
        provider: ChatProvider,
        *,
        deadline_s: float = JUDGE_DEADLINE_S,
        metrics: Metrics | None = None,
    ) -> None:
        self.provider = provider
        self.deadline_s = deadline_s
        self._metrics = metrics or Metrics()

    @property
    def name(self) -> str:
        return f"ai-judge:{self.provider.model}"

    async def aclose(self) -> None:
        await self.provider.aclose()

    async def judge(self, request: RequestJudge) -> Verdict:
        ranked = request.mode is Mode.FREE_FOR_ALL
        shown = presentations(request)
        tasks = [asyncio.create_task(self._run(request, p, ranked)) for p in shown]
        try:
            async with asyncio.timeout(self.deadline_s):
                runs = list(await asyncio.gather(*tasks))
        except TimeoutError:
            raise JudgeOutputError(
                f"the AI judge gave no valid verdict within {self.deadline_s:g}s"
            ) from None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self._verdict(request, runs, ranked)

    async def _run(self, request: RequestJudge, presentation: Presentation, ranked: bool) -> _Run:
        messages = [Message("user", render(request, presentation))]
        completions: list[Completion] = []
        for attempt in (1, 2):
            completion = await self.provider.complete(
                SYSTEM_PROMPT,
                messages,
                max_tokens=JUDGE_MAX_TOKENS,
                temperature=0.0,
                role="judge",
            )
            completions.append(completion)
            try:
                judgment = decode_judgment(completion.text, presentation.labels, ranked=ranked)
            except InvalidJudgment as exc:
                self._metrics.ai_invalid_outputs.labels("judge").inc()
                if attempt == 2:
                    raise JudgeOutputError(
                        f"the AI judge answered with invalid JSON twice; last: {exc}"
                    ) from exc
                messages = [
                    *messages,
                    Message("assistant", completion.text.strip() or "(empty answer)"),
                    Message(
                        "user",
                        f"That answer is not valid: {exc}. Answer again with only the JSON "
                        "object described above.",
                    ),
                ]
                continue
            return _Run(presentation, judgment, completion.text, tuple(completions))
        raise AssertionError("unreachable")  # pragma: no cover

    def _verdict(self, request: RequestJudge, runs: Sequence[_Run], ranked: bool) -> Verdict:
        names = _names(request)
        winners = [run.winner(ranked) for run in runs]
        agreed = all(w == winners[0] for w in winners)
        winner = winners[0] if agreed else None
        if not agreed:
            self._metrics.ai_judge_disagreements.inc()
        scores = _mean_scores([run.scores() for run in runs])
        ranking = tuple(runs[0].order(ranked)) if ranked else ()
        completions = [c for run in runs for c in run.completions]
        model = completions[-1].model if completions else self.provider.model
        usage = Usage(
            model=model,
            calls=len(completions),
            input_tokens=sum(c.input_tokens for c in completions),
            output_tokens=sum(c.output_tokens for c in completions),
            latency_s=max(sum(c.latency_s for c in run.completions) for run in runs),
        )
        reasoning = self._reasoning(request, runs, winners, winner, scores, names, model)
        team = request.mode is Mode.TEAM
        return Verdict(
            winner_id=None if team else winner,
            winning_team_id=winner if team else None,
            reasoning=reasoning,
            decided_by=self.name,
            scores=scores,
            ranking=ranking,
            confidence=sum(run.judgment.confidence for run in runs) / len(runs),
            raw=tuple(RawJudgment(run.presentation.label_map(), run.text) for run in runs),
            usage=usage,
        )

    def _reasoning(
        self,
        request: RequestJudge,
        runs: Sequence[_Run],
        winners: Sequence[str | None],
        winner: str | None,
        scores: dict[str, dict[str, float]],
        names: dict[str, str],
        model: str,
    ) -> str:
        def name(key: str | None) -> str:
            return "nobody (a tie)" if key is None else names[key]

        parts = [
            f"AI judge: the LLM {model} (via {self.provider.name}), scoring each participant "
            f"0-10 on MoltArena's rubric: {rubric_text()}."
        ]
        if len(runs) == 2:
            if winners[0] == winners[1]:
                outcome = f"{name(winner)} wins" if winner is not None else "a draw"
                parts.append(
                    "To cancel position bias it judged the debate twice, with the order of "
                    f"the sides swapped; both orders agree: {outcome}."
                )
            else:
                first, second = (run.presentation.contenders[0].key for run in runs)
                parts.append(
                    "To cancel position bias it judged the debate twice, with the order of "
                    f"the sides swapped, and the two orders disagreed: with {names[first]} "
                    f"shown first it chose {name(winners[0])}; with {names[second]} shown first "
                    f"it chose {name(winners[1])}. The verdict depended on the presentation "
                    "order, not the arguments, so the result is a draw (the vote tally does "
                    "not decide it)."
                )
        elif winner is not None:
            order = ", ".join(names[k] for k in runs[0].order(ranked=True))
            parts.append(f"Ranking, best first: {order}. {names[winner]} wins.")
        else:
            parts.append("The top weighted totals are tied: a draw.")
        totals = "; ".join(
            f"{names[key]} {s['weighted']:.2f} ("
            + ", ".join(f"{c} {s[c]:g}" for c in CRITERIA)
            + ")"
            for key, s in sorted(scores.items(), key=lambda kv: -kv[1]["weighted"])
        )
        mean = " (mean of both orders)" if len(runs) == 2 else ""
        parts.append(f"Weighted scores{mean}: {totals}.")
        for i, run in enumerate(runs, start=1):
            stated = run.stated_winner()
            if stated != run.winner(request.mode is Mode.FREE_FOR_ALL) and stated is not None:
                parts.append(
                    f"(Order {i}: the model named {names[stated]} overall, but its own rubric "
                    "scores rank differently; the rubric decides.)"
                )
            label = f"Judge's notes (order {i})" if len(runs) == 2 else "Judge's notes"
            notes = _relabel(run.judgment.reasoning, run.presentation, names)
            parts.append(f"{label}: {_clip(notes)}")
        return "\n".join(parts)


def _relabel(text: str, presentation: Presentation, names: dict[str, str]) -> str:
    """The judge's notes with its neutral labels replaced by who they stood for."""

    def swap(match: re.Match[str]) -> str:
        label = match.group(0)
        return names[presentation.key_of(label)] if label in presentation.labels else label

    return _LABEL.sub(swap, text)


def _names(request: RequestJudge) -> dict[str, str]:
    if request.mode is Mode.TEAM:
        return {s.team_id or "": f"team {s.team_id}" for s in request.seats}
    return {s.agent_id: s.agent_id for s in request.seats}


def _mean_scores(per_run: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    keys = per_run[0].keys()
    scores: dict[str, dict[str, float]] = {}
    for key in keys:
        mean = {c: round(sum(run[key][c] for run in per_run) / len(per_run), 3) for c in CRITERIA}
        mean["weighted"] = round(weighted(mean), 3)
        scores[key] = mean
    return scores


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASONING_CHARS else text[:_REASONING_CHARS] + " […]"
