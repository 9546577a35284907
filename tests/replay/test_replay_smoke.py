"""``arena-rt replay`` end to end: a real ``arena-rt serve`` process, real sockets, the CLI.

The smoke run is what CI gates on: 3 battles (one per mode) x 2 spectators from the synthetic
corpus, as fast as the server allows, under a generous latency budget.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from arena_rt.replay.corpus import synthetic_corpus
from arena_rt.replay.recording import fetch

BATTLES = 3
SPECTATORS = 2


def replay(base: str, out: Path, keys: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    command = [
        sys.executable, "-m", "arena_rt.cli", "replay",
        "--target", base,
        "--battles", str(BATTLES),
        "--spectators", str(SPECTATORS),
        "--asap",
        "--workers", "2",
        "--agents", "4",
        "--keys", str(keys),
        "--timeout-s", "45",
        "--out", str(out),
        "--quiet",
        *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    report_path = out / "report.json"
    assert report_path.exists(), done.stderr + done.stdout
    report: dict[str, Any] = json.loads(report_path.read_text())
    return done.returncode, report, done.stdout + done.stderr


@pytest.fixture
def keys(server_process: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One keys file per server, so later runs reuse the agents of the first."""
    digest = hashlib.sha256(server_process.encode()).hexdigest()[:10]
    return tmp_path_factory.getbasetemp() / f"replay-keys-{digest}.jsonl"


def test_smoke_run_replays_every_battle_to_every_spectator(
    server_process: str, tmp_path: Path, keys: Path
) -> None:
    code, report, output = replay(server_process, tmp_path, keys, "--budget-p99-ms", "5000")
    summary = report["summary"]
    assert code == 0, output
    assert report["ok"] is True
    assert summary["battles"]["completed"] == BATTLES
    assert summary["battles"]["completedByMode"] == {
        "HEAD_TO_HEAD": 1, "TEAM": 1, "FREE_FOR_ALL": 1
    }  # fmt: skip
    assert summary["errors"] == 0, summary["errorsByCode"]
    assert summary["closeCodes"] == {} and summary["slowDrops"] == 0
    # every event of every battle reached every spectator, exactly once
    assert summary["events"] == sum(b["lastSeq"] for b in report["battles"]) > 0
    assert summary["deliveries"] == summary["events"] * SPECTATORS
    assert summary["deliveriesExpected"] == summary["deliveries"]
    assert summary["lostDeliveries"] == 0
    corpus = synthetic_corpus(seed=1, size=48)[:BATTLES]
    turns = sum(len(r.turns) for r in corpus)
    assert summary["turns"] == {
        "expected": turns, "sent": turns, "acked": turns,
        "deliveredToSpectators": turns * SPECTATORS,
    }  # fmt: skip
    latency = report["latencyMs"]
    assert latency["turnAck"]["count"] == turns
    assert latency["turnDelivery"]["count"] == turns * SPECTATORS
    assert 0 < latency["turnDelivery"]["p50"] <= latency["turnDelivery"]["p99"] <= 5000
    assert latency["connectSpectator"]["count"] == BATTLES * SPECTATORS
    assert summary["connects"]["spectators"] == BATTLES * SPECTATORS
    assert summary["connects"]["agents"] == sum(r.max_participants for r in corpus)
    assert [w["worker"] for w in report["client"]["workers"]] == [0, 1]
    assert all(g["ok"] for g in report["gates"])
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "PASS" in html
    assert "<script" not in html and "http://" not in html.replace(server_process, "")

    # The server stored what the agents replayed: fetched back as recordings (the /events
    # ndjson loader on real logs), each battle's turns are the corpus turns, word for word.
    fetched = fetch(server_process, [b["room"] for b in report["battles"]])
    for rec, original in zip(fetched, corpus, strict=True):
        assert rec.mode == original.mode and len(rec.seats) == len(original.seats)
        assert {n: t.content for n, t in rec.turns.items()} == {
            n: t.content for n, t in original.turns.items()
        }


def test_an_impossible_budget_fails_the_run(
    server_process: str, tmp_path: Path, keys: Path
) -> None:
    code, report, output = replay(
        server_process, tmp_path, keys, "--budget-p99-ms", "0.001", "--budget-ack-p99-ms", "0.001"
    )
    assert code == 1, output
    assert report["ok"] is False
    assert report["summary"]["errors"] == 0  # it failed on the budget alone
    failed = {g["name"] for g in report["gates"] if not g["ok"]}
    assert failed == {"turn→spectator p99 ms", "turn→ack p99 ms"}
    assert "FAIL" in output


def test_an_unreachable_target_is_a_setup_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "arena_rt.cli", "replay", "--target", "http://127.0.0.1:9",
         "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not reachable" in done.stderr
