"""Battle recordings: the ``/events`` log of a battle, reduced to what a replay needs.

A recording is read from what PROTOCOL.md's ``GET /api/battles/{roomCode}/events`` returns:
one event per line (``Accept: application/x-ndjson``) or the JSON body ``{roomCode, events}``.
A first line holding the battle resource (``GET /api/battles/{roomCode}``, recognisable by
``roomCode`` and no ``seq``) is optional; it supplies the topic and settings, which the event
log alone does not carry (they are inferred otherwise). ``--save-recordings`` writes that
form: the resource line, then the events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MODES = ("HEAD_TO_HEAD", "TEAM", "FREE_FOR_ALL")


class RecordingError(ValueError):
    """A recording that cannot be replayed (malformed, or a battle the server would refuse)."""


@dataclass(frozen=True, slots=True)
class Seat:
    position: int
    team_id: str | None


@dataclass(frozen=True, slots=True)
class RecordedTurn:
    turn_number: int
    seat: int  # index into Recording.seats of the agent that spoke
    content: str
    think_ms: int  # turn_started → turn, as recorded


@dataclass(frozen=True, slots=True)
class Recording:
    """One battle as it was played: its seats in join order and its turns by number.

    Turns the recording skipped (timeout, disconnect, forfeit) have no entry in ``turns``: the
    replaying agent stays silent on them, as the original did.
    """

    name: str
    topic: str
    mode: str
    seats: tuple[Seat, ...]
    max_turns: int
    turn_duration_ms: int
    turns: Mapping[int, RecordedTurn]
    events: tuple[Mapping[str, Any], ...] = field(default=(), repr=False, compare=False)
    resource: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def max_participants(self) -> int:
        return len(self.seats)

    def content_chars(self) -> int:
        return sum(len(t.content) for t in self.turns.values())


def _is_resource(obj: Mapping[str, Any]) -> bool:
    return "roomCode" in obj and "seq" not in obj and "events" not in obj


def parse_lines(text: str) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    """Split JSONL text (or one JSON ``{roomCode, events}`` document) into resource and events."""
    stripped = text.strip()
    if not stripped:
        raise RecordingError("empty recording")
    resource: Mapping[str, Any] | None = None
    events: list[Mapping[str, Any]] = []
    if stripped.startswith("{") and "\n" not in stripped:
        whole = json.loads(stripped)
        if isinstance(whole, dict) and isinstance(whole.get("events"), list):
            return None, [e for e in whole["events"] if isinstance(e, dict)]
    for number, line in enumerate(stripped.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordingError(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise RecordingError(f"line {number}: not a JSON object")
        if isinstance(obj.get("events"), list) and "seq" not in obj:
            events.extend(e for e in obj["events"] if isinstance(e, dict))
        elif _is_resource(obj):
            if events:
                raise RecordingError(f"line {number}: battle resource after events")
            resource = obj
        elif "seq" in obj and "type" in obj:
            events.append(obj)
        else:
            raise RecordingError(f"line {number}: neither an event nor a battle resource")
    return resource, events


def from_events(
    name: str, events: Sequence[Mapping[str, Any]], resource: Mapping[str, Any] | None = None
) -> Recording:
    """Build a recording from an event log (and the battle resource when known)."""
    ordered = sorted(events, key=lambda e: int(e["seq"]))
    seqs = [int(e["seq"]) for e in ordered]
    if len(set(seqs)) != len(seqs):
        raise RecordingError(f"{name}: duplicate seq in the event log")
    joined: dict[str, Seat] = {}
    started: dict[int, Mapping[str, Any]] = {}
    played: dict[int, Mapping[str, Any]] = {}
    in_play = False
    max_turn = 0
    for event in ordered:
        kind = event.get("type")
        if kind == "participant_joined":
            joined[str(event["agentId"])] = Seat(int(event["position"]), event.get("teamId"))
        elif kind == "participant_left" and not in_play:
            joined.pop(str(event["agentId"]), None)
        elif kind == "turn_started":
            in_play = True
            started[int(event["turnNumber"])] = event
            max_turn = max(max_turn, int(event["turnNumber"]))
        elif kind == "turn":
            in_play = True
            played[int(event["turnNumber"])] = event
            max_turn = max(max_turn, int(event["turnNumber"]))
        elif kind == "turn_skipped":
            max_turn = max(max_turn, int(event["turnNumber"]))
    if not joined:
        raise RecordingError(f"{name}: no participant_joined events")
    if not played:
        raise RecordingError(f"{name}: no turn was played")
    agent_ids = sorted(joined, key=lambda a: joined[a].position)
    seats = tuple(joined[a] for a in agent_ids)
    seat_of = {agent: i for i, agent in enumerate(agent_ids)}

    res = dict(resource or {})
    has_teams = any(s.team_id is not None for s in seats)
    mode = str(res.get("mode") or ("TEAM" if has_teams else None) or "")
    if not mode:
        mode = "HEAD_TO_HEAD" if len(seats) == 2 else "FREE_FOR_ALL"
    if mode not in MODES:
        raise RecordingError(f"{name}: unknown mode {mode!r}")
    if mode == "HEAD_TO_HEAD" and len(seats) != 2:
        raise RecordingError(f"{name}: HEAD_TO_HEAD with {len(seats)} seats")
    if mode == "TEAM" and (len(seats) < 4 or len(seats) % 2):
        raise RecordingError(f"{name}: TEAM needs an even number of seats >= 4, has {len(seats)}")
    if not 2 <= len(seats) <= 10:
        raise RecordingError(f"{name}: {len(seats)} seats (2-10 allowed)")

    turn_duration = int(res.get("turnDurationMs") or 0)
    if not turn_duration and started:
        first = started[min(started)]
        turn_duration = int(first["deadlineAt"]) - int(first["at"])
    turn_duration = min(max(turn_duration or 30_000, 100), 600_000)

    turns: dict[int, RecordedTurn] = {}
    for number, event in sorted(played.items()):
        agent = str(event["agentId"])
        if agent not in seat_of:
            raise RecordingError(f"{name}: turn {number} by an agent that never joined")
        think = event.get("durationMs")
        if think is None and number in started:
            think = int(event["at"]) - int(started[number]["at"])
        turns[number] = RecordedTurn(
            turn_number=number,
            seat=seat_of[agent],
            content=str(event["content"]),
            think_ms=max(int(think or 0), 0),
        )
    max_turns = int(res.get("maxTurns") or max_turn)
    topic = str(res.get("topic") or f"Replay of {name}")[:500]
    return Recording(
        name=name,
        topic=topic,
        mode=mode,
        seats=seats,
        max_turns=min(max(max_turns, max_turn, 1), 200),
        turn_duration_ms=turn_duration,
        turns=turns,
        events=tuple(ordered),
        resource=resource,
    )


def load_file(path: Path) -> Recording:
    resource, events = parse_lines(path.read_text(encoding="utf-8"))
    name = str((resource or {}).get("roomCode") or path.stem)
    return from_events(name, events, resource)


def load_paths(paths: Iterable[Path]) -> list[Recording]:
    """Every ``*.jsonl`` / ``*.ndjson`` / ``*.json`` file named, or found in a named folder."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".ndjson", ".json"))
            )
        elif path.exists():
            files.append(path)
        else:
            raise RecordingError(f"{path}: no such file or folder")
    if not files:
        raise RecordingError("no recordings found")
    recordings = []
    for file in files:
        try:
            recordings.append(load_file(file))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RecordingError):
                raise RecordingError(f"{file}: {exc}") from None
            raise RecordingError(f"{file}: malformed event ({exc!r})") from None
    return recordings


def to_jsonl(recording: Recording) -> str:
    lines = []
    if recording.resource is not None:
        lines.append(json.dumps(recording.resource, separators=(",", ":")))
    lines.extend(json.dumps(dict(e), separators=(",", ":")) for e in recording.events)
    return "\n".join(lines) + "\n"


def save(recordings: Iterable[Recording], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for rec in recordings:
        path = folder / f"{rec.name}.jsonl"
        path.write_text(to_jsonl(rec), encoding="utf-8")
        written.append(path)
    return written


def fetch(
    base_url: str, rooms: Sequence[str] | None, limit: int = 20, timeout: float = 30.0
) -> list[Recording]:
    """Recordings of battles on a server: the named rooms, or its newest completed ones."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout) as http:
        codes = list(rooms or [])
        if not codes:
            cursor: str | None = None
            while len(codes) < limit:
                params: dict[str, str | int] = {
                    "status": "COMPLETED",
                    "limit": min(100, limit - len(codes)),
                }
                if cursor:
                    params["cursor"] = cursor
                page = http.get("/api/battles", params=params)
                page.raise_for_status()
                body = page.json()
                codes.extend(b["roomCode"] for b in body["battles"])
                cursor = body.get("nextCursor")
                if not cursor:
                    break
            if not codes:
                raise RecordingError(f"{base_url} has no completed battles to replay")
        recordings = []
        for code in codes:
            res = http.get(f"/api/battles/{code}")
            if res.status_code != 200:
                raise RecordingError(f"{code}: GET /api/battles/{code} answered {res.status_code}")
            log = http.get(
                f"/api/battles/{code}/events",
                params={"since": 0},
                headers={"Accept": "application/x-ndjson"},
            )
            if log.status_code != 200:
                raise RecordingError(f"{code}: /events answered {log.status_code}")
            _, events = parse_lines(log.text)
            recordings.append(from_events(code, events, res.json()))
        return recordings
