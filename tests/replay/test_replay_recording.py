"""Recordings: the synthetic corpus and the JSONL loader of /events logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arena_rt.replay.corpus import synthetic_corpus
from arena_rt.replay.recording import (
    RecordingError,
    from_events,
    load_file,
    load_paths,
    parse_lines,
    save,
)


def ev(seq: int, kind: str, at: int = 1_000, **fields: object) -> dict[str, object]:
    return {"type": kind, **fields, "seq": seq, "at": at}


def team_log() -> list[dict[str, object]]:
    """A TEAM battle as the server logs it, with a skipped turn."""
    joined = [
        ev(i, "participant_joined", agentId=f"a{i}", position=i, teamId="AB"[(i - 1) % 2])
        for i in range(1, 5)
    ]
    return [
        *joined,
        ev(5, "state", status="STARTING", previous="LOBBY", reason=None),
        ev(6, "state", status="IN_PROGRESS", previous="STARTING", reason=None),
        ev(7, "turn_started", 2_000, turnNumber=1, agentId="a1", deadlineAt=2_000 + 20_000),
        ev(
            8,
            "turn",
            2_700,
            turnNumber=1,
            agentId="a1",
            content="x" * 500,
            durationMs=700,
            audioUrl=None,
        ),
        ev(9, "turn_started", 2_700, turnNumber=2, agentId="a2", deadlineAt=22_700),
        ev(10, "turn_skipped", 22_700, turnNumber=2, agentId="a2", reason="timeout"),
        ev(11, "turn_started", 22_700, turnNumber=3, agentId="a3", deadlineAt=42_700),
        ev(12, "turn", 23_900, turnNumber=3, agentId="a3", content="third", audioUrl=None),
        ev(13, "turn_started", 23_900, turnNumber=4, agentId="a4", deadlineAt=43_900),
        ev(14, "turn", 24_000, turnNumber=4, agentId="a4", content="fourth", durationMs=100),
        ev(15, "state", status="VOTING", previous="IN_PROGRESS", reason=None),
        ev(16, "state", status="COMPLETED", previous="JUDGING", reason=None),
    ]


def write_jsonl(path: Path, objs: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_event_log_without_resource_infers_the_battle(tmp_path: Path) -> None:
    rec = load_file(write_jsonl(tmp_path / "ROOM1234.jsonl", team_log()))
    assert rec.name == "ROOM1234"
    assert rec.mode == "TEAM" and rec.max_participants == 4
    assert [s.team_id for s in rec.seats] == ["A", "B", "A", "B"]
    assert rec.max_turns == 4
    assert rec.turn_duration_ms == 20_000  # deadlineAt - at of the first turn_started
    assert sorted(rec.turns) == [1, 3, 4]  # turn 2 was skipped: the replay stays silent on it
    assert rec.turns[1].content == "x" * 500 and rec.turns[1].think_ms == 700
    assert rec.turns[3].think_ms == 1_200  # no durationMs: turn.at - turn_started.at
    assert rec.turns[4].seat == 3


def test_ndjson_with_a_resource_line_and_the_json_body_form(tmp_path: Path) -> None:
    resource = {
        "roomCode": "ABCDEFGH",
        "topic": "Tabs or spaces?",
        "mode": "TEAM",
        "turnDurationMs": 9_000,
        "maxTurns": 6,
    }
    rec = load_file(write_jsonl(tmp_path / "a.ndjson", [resource, *team_log()]))
    assert (rec.name, rec.topic, rec.turn_duration_ms, rec.max_turns) == (
        "ABCDEFGH",
        "Tabs or spaces?",
        9_000,
        6,
    )
    body = tmp_path / "b.json"
    body.write_text(json.dumps({"roomCode": "ABCDEFGH", "events": team_log()}))
    assert sorted(load_file(body).turns) == [1, 3, 4]


def test_modes_inferred_from_seats() -> None:
    def log(seats: int) -> list[dict[str, object]]:
        out = [
            ev(i, "participant_joined", agentId=f"a{i}", position=i, teamId=None)
            for i in range(1, seats + 1)
        ]
        out.append(ev(seats + 1, "turn", turnNumber=1, agentId="a1", content="hi", durationMs=5))
        return out

    assert from_events("h", log(2)).mode == "HEAD_TO_HEAD"
    assert from_events("f", log(4)).mode == "FREE_FOR_ALL"


def test_bad_recordings_are_refused_with_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"state","seq":1,"at":1}\nnot json\n')
    with pytest.raises(RecordingError, match="line 2"):
        load_file(bad)
    with pytest.raises(RecordingError, match="no participant_joined"):
        from_events("x", [ev(1, "state", status="LOBBY")])
    lonely = [
        ev(1, "participant_joined", agentId="a", position=1, teamId="A"),
        ev(2, "participant_joined", agentId="b", position=2, teamId="B"),
        ev(3, "turn", turnNumber=1, agentId="a", content="c", durationMs=1),
    ]
    with pytest.raises(RecordingError, match="TEAM needs"):
        from_events("x", lonely)
    with pytest.raises(RecordingError, match="duplicate seq"):
        from_events("x", [*team_log(), team_log()[0]])
    with pytest.raises(RecordingError, match="no such file"):
        load_paths([tmp_path / "missing"])
    with pytest.raises(RecordingError):
        parse_lines("  \n")


def test_synthetic_corpus_is_deterministic_realistic_and_round_trips(tmp_path: Path) -> None:
    corpus = synthetic_corpus(seed=3, size=12)
    again = synthetic_corpus(seed=3, size=12)
    assert [r.turns for r in corpus] == [r.turns for r in again]
    assert synthetic_corpus(seed=4, size=12)[0].turns != corpus[0].turns
    assert [r.mode for r in corpus[:4]] == ["HEAD_TO_HEAD", "TEAM", "FREE_FOR_ALL", "HEAD_TO_HEAD"]
    assert {r.max_participants for r in corpus if r.mode != "HEAD_TO_HEAD"} == {4}
    lengths = [len(t.content) for r in corpus for t in r.turns.values()]
    assert min(lengths) >= 250 and max(lengths) <= 4_000
    assert 600 <= sorted(lengths)[len(lengths) // 2] <= 2_000  # a few hundred to a few thousand
    thinks = [t.think_ms for r in corpus for t in r.turns.values()]
    assert min(thinks) >= 1_500 and max(thinks) <= 25_000
    for rec in corpus:
        assert sorted(rec.turns) == list(range(1, rec.max_turns + 1))

    saved = save(corpus, tmp_path / "recs")
    assert len(saved) == 12
    loaded = load_paths([tmp_path / "recs"])
    by_name = {r.name: r for r in loaded}
    for rec in corpus:
        back = by_name[rec.name]
        assert (back.mode, back.seats, back.max_turns, back.topic) == (
            rec.mode,
            rec.seats,
            rec.max_turns,
            rec.topic,
        )
        assert back.turns == rec.turns
