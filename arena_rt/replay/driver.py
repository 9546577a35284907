"""The parent process of ``arena-rt replay``: plan, set up, run the workers, aggregate, judge.

1. Agents: keys from ``--keys`` (if given), the rest registered with ``POST /api/agents``
   (appended to the keys file for the next run).
2. Battles: created with ``POST /api/battles`` on the node that will own them, with the
   recording's mode, seats, topic and turn count, and short start/vote phases.
3. Workers (``--workers`` processes): every spectator connects first (and gets its snapshot),
   then the parent says *go* and the agents seat themselves and replay their turns.
4. While they run: a progress line on stderr, target /proc sampling; at the end the JSON and
   HTML reports and the gates (errors, drops, latency budgets) that set the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import queue as queue_mod
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from arena_rt.replay.histogram import Histogram
from arena_rt.replay.procstat import ProcessSampler
from arena_rt.replay.recording import Recording
from arena_rt.replay.worker import (
    HISTOGRAMS,
    Agent,
    BattleJob,
    Interval,
    Script,
    SpectatorJob,
    WorkerPlan,
    cpu_seconds,
    worker_main,
)

EXIT_OK = 0
EXIT_FAILED = 1  # errors, drops or a budget exceeded
EXIT_SETUP = 2  # bad input, target unreachable, agents/battles could not be set up

MS = 1000.0  # histograms hold microseconds; reports show milliseconds


class SetupError(RuntimeError):
    """The run could not start (the message says why and what to do)."""


@dataclass(frozen=True)
class Budgets:
    delivery_p50_ms: float | None = None
    delivery_p99_ms: float | None = None
    delivery_max_ms: float | None = None
    ack_p99_ms: float | None = None
    max_drops: int = 0


@dataclass
class ReplayConfig:
    targets: list[str]
    recordings: list[Recording]
    source: str
    battles: int = 10
    spectators: int = 5
    speed: float | None = None  # None: --asap
    workers: int = 2
    agents: int | None = None
    keys_file: Path | None = None
    start_delay_ms: int = 200
    vote_duration_ms: int = 500
    turn_duration_ms: int | None = None
    judge: bool = True
    commentator: bool = True
    ramp_s: float = 0.0
    timeout_s: float = 600.0
    target_pids: list[int] = field(default_factory=list)
    interval_s: float = 1.0
    connect_concurrency: int = 128
    session_tokens: bool = True
    progress: bool = True
    budgets: Budgets = field(default_factory=Budgets)
    out_dir: Path = Path("replay-report")
    command: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- set-up


def _error_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(response.json()["error"]["code"])
    return "unknown"


def load_keys(path: Path) -> list[dict[str, str]]:
    """Agents saved by an earlier run: one ``{"id", "name", "apiKey"}`` object per line."""
    if not path.exists():
        return []
    keys = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            keys.append(
                {"id": str(obj["id"]), "name": str(obj["name"]), "apiKey": str(obj["apiKey"])}
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SetupError(f"{path}:{number}: not an agent key line ({exc!r})") from None
    return keys


async def register_agents(
    http: httpx.AsyncClient, count: int, keys_file: Path | None, deadline: float, say: TextIO
) -> list[dict[str, str]]:
    run_id = secrets.token_hex(3)
    made: list[dict[str, str]] = []
    told = False
    sem = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        nonlocal told
        body = {"name": f"replay-{run_id}-{i:05d}", "displayName": f"Replay agent {i}"}
        async with sem:
            while True:
                response = await http.post("/api/agents", json=body)
                if response.status_code == 201:
                    data = response.json()
                    made.append({"id": data["id"], "name": data["name"], "apiKey": data["apiKey"]})
                    return
                if response.status_code == 429 and time.monotonic() < deadline:
                    if not told:
                        told = True
                        print(
                            "\narena-rt replay: the target rate-limits agent registrations "
                            "(429); waiting. Raise ARENA_REGISTRATIONS_PER_MINUTE on a "
                            "load-test target, or reuse agents with --keys FILE.",
                            file=say,
                        )
                    await asyncio.sleep(6.5)
                    continue
                raise SetupError(
                    f"POST /api/agents answered {response.status_code} {_error_code(response)}: "
                    f"{response.text[:200]}"
                )

    try:
        async with asyncio.TaskGroup() as group:
            for i in range(count):
                group.create_task(one(i))
    except* SetupError as group_error:
        raise group_error.exceptions[0] from None
    finally:
        if keys_file is not None and made:
            with keys_file.open("a", encoding="utf-8") as out:
                for agent in made:
                    out.write(json.dumps(agent) + "\n")
    return made


def turn_duration_for(rec: Recording, cfg: ReplayConfig) -> int:
    if cfg.turn_duration_ms is not None:
        value = cfg.turn_duration_ms
    elif cfg.speed is None:
        value = rec.turn_duration_ms
    else:
        longest = max((t.think_ms for t in rec.turns.values()), default=0)
        value = max(
            math.ceil(rec.turn_duration_ms / cfg.speed), math.ceil(longest / cfg.speed) + 2_000
        )
    return min(max(value, 100), 600_000)


@dataclass
class PlannedBattle:
    index: int
    recording: int
    node: str
    agents: tuple[Agent, ...]
    slot_base: int
    body: dict[str, Any]
    creator_key: str
    room: str = ""


def plan_battles(cfg: ReplayConfig, pool: list[dict[str, str]]) -> tuple[list[PlannedBattle], int]:
    planned = []
    slot = 0
    cursor = 0
    for b in range(cfg.battles):
        r = b % len(cfg.recordings)
        rec = cfg.recordings[r]
        seats = rec.max_participants
        agents = tuple(
            Agent(pool[(cursor + i) % len(pool)]["id"], pool[(cursor + i) % len(pool)]["apiKey"])
            for i in range(seats)
        )
        cursor += seats
        body = {
            "topic": rec.topic,
            "mode": rec.mode,
            "maxParticipants": seats,
            "maxTurns": rec.max_turns,
            "turnDurationMs": turn_duration_for(rec, cfg),
            "startDelayMs": cfg.start_delay_ms,
            "voteDurationMs": cfg.vote_duration_ms,
            "enableJudge": cfg.judge,
            "enableCommentator": cfg.commentator,
            "enableTTS": False,
        }
        # The creator need not play; rotating it over the pool has every agent's key checked
        # once (bcrypt) while the battles are created, before the measured phase.
        creator = pool[b % len(pool)]["apiKey"]
        node = cfg.targets[b % len(cfg.targets)]
        planned.append(PlannedBattle(b, r, node, agents, slot, body, creator))
        slot += rec.max_turns + 1
    return planned, slot


async def create_battles(
    clients: dict[str, httpx.AsyncClient], planned: list[PlannedBattle], created: Histogram
) -> None:
    sem = asyncio.Semaphore(16)

    async def one(p: PlannedBattle) -> None:
        async with sem:
            began = time.monotonic_ns()
            response = await clients[p.node].post(
                "/api/battles",
                json=p.body,
                headers={"Authorization": f"Bearer {p.creator_key}"},
            )
            created.record((time.monotonic_ns() - began) // 1000)
        if response.status_code != 201:
            hint = ""
            if response.status_code == 401:
                hint = " (are the --keys from another deployment?)"
            raise SetupError(
                f"POST /api/battles on {p.node} answered {response.status_code} "
                f"{_error_code(response)}{hint}: {response.text[:200]}"
            )
        p.room = response.json()["roomCode"]

    try:
        async with asyncio.TaskGroup() as group:
            for p in planned:
                group.create_task(one(p))
    except* SetupError as group_error:
        raise group_error.exceptions[0] from None


WATCHED_METRICS = (
    "arena_errors_total",
    "arena_slow_consumers_total",
    "arena_events_total",
    "arena_http_requests_total",
)


def parse_metrics(text: str) -> dict[str, float]:
    """The counters of WATCHED_METRICS from Prometheus text, by ``name{labels}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in WATCHED_METRICS:
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = out.get(key, 0.0) + float(value)
    return out


async def scrape(clients: dict[str, httpx.AsyncClient]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for node, http in clients.items():
        try:
            response = await http.get("/metrics")
            if response.status_code == 200:
                out[node] = parse_metrics(response.text)
        except httpx.HTTPError:
            continue
    return out


def metric_deltas(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for node, values in after.items():
        base = before.get(node, {})
        changed = {
            k: round(v - base.get(k, 0.0), 3)
            for k, v in sorted(values.items())
            if v - base.get(k, 0.0) and not k.startswith("arena_http_requests_total")
        }
        http = {
            k: round(v - base.get(k, 0.0), 3)
            for k, v in values.items()
            if k.startswith("arena_http_requests_total") and v - base.get(k, 0.0)
        }
        statuses: Counter[str] = Counter()
        for k, v in http.items():
            status = k.split('status="', 1)[1].split('"', 1)[0] if 'status="' in k else "?"
            statuses[status] += int(v)
        changed["http_requests_by_status"] = dict(statuses)  # type: ignore[assignment]
        out[node] = changed
    return out


async def setup(cfg: ReplayConfig, say: TextIO) -> tuple[list[PlannedBattle], int, dict[str, Any]]:
    info: dict[str, Any] = {"errors": Counter()}
    deadline = time.monotonic() + cfg.timeout_s
    limits = httpx.Limits(max_connections=32)
    clients = {
        node: httpx.AsyncClient(base_url=node, timeout=60, limits=limits) for node in cfg.targets
    }
    try:
        for node, http in clients.items():
            try:
                health = await http.get("/healthz")
            except httpx.HTTPError as exc:
                raise SetupError(f"{node} is not reachable: {exc!r}") from None
            if health.status_code != 200:
                raise SetupError(
                    f"{node}/healthz answered {health.status_code}: {health.text[:200]}"
                )
        seats_needed = max(r.max_participants for r in cfg.recordings)
        wanted = cfg.agents or min(
            sum(
                cfg.recordings[b % len(cfg.recordings)].max_participants for b in range(cfg.battles)
            ),
            40,
        )
        wanted = max(wanted, seats_needed)
        pool = load_keys(cfg.keys_file) if cfg.keys_file else []
        reused = min(len(pool), wanted)
        pool = pool[:wanted]
        began = time.monotonic()
        if len(pool) < wanted:
            if cfg.progress:
                print(f"registering {wanted - len(pool)} agents …", file=say, flush=True)
            pool += await register_agents(
                clients[cfg.targets[0]], wanted - len(pool), cfg.keys_file, deadline, say
            )
        info["agents"] = {
            "pool": len(pool),
            "reused": reused,
            "registered": len(pool) - reused,
            "registerSeconds": round(time.monotonic() - began, 3),
        }
        planned, slots = plan_battles(cfg, pool)
        created = Histogram()
        began = time.monotonic()
        await create_battles(clients, planned, created)
        info["create"] = {
            "battles": len(planned),
            "seconds": round(time.monotonic() - began, 3),
            "latencyMs": created.summary(MS),
        }
        info["metricsBefore"] = await scrape(clients)
        return planned, slots, info
    finally:
        for http in clients.values():
            await http.aclose()


async def finish_scrape(cfg: ReplayConfig) -> dict[str, dict[str, float]]:
    clients = {node: httpx.AsyncClient(base_url=node, timeout=10) for node in cfg.targets}
    try:
        return await scrape(clients)
    finally:
        for http in clients.values():
            await http.aclose()


# ---------------------------------------------------------------------------- workers


def script_of(rec: Recording) -> Script:
    return Script(
        teams=tuple(s.team_id for s in rec.seats),
        turns={n: (t.content, t.think_ms) for n, t in rec.turns.items()},
    )


def worker_plans(cfg: ReplayConfig, planned: list[PlannedBattle]) -> list[WorkerPlan]:
    count = max(1, cfg.workers)
    scripts = tuple(script_of(r) for r in cfg.recordings)
    battles: list[list[BattleJob]] = [[] for _ in range(count)]
    spectators: list[list[SpectatorJob]] = [[] for _ in range(count)]
    n = len(planned)
    for p in planned:
        offset = cfg.ramp_s * p.index / n if n else 0.0
        # The longest silence a healthy battle has: a turn, the vote, the judge (30 s).
        quiet_ms = max(
            p.body["turnDurationMs"], p.body["voteDurationMs"], p.body["startDelayMs"], 30_000
        )
        battles[p.index % count].append(
            BattleJob(
                p.index,
                p.room,
                p.node,
                p.recording,
                p.agents,
                offset,
                p.slot_base,
                stall_s=quiet_ms / 1000 + 15,
            )
        )
        for j in range(cfg.spectators):
            node = cfg.targets[(p.index + j) % len(cfg.targets)]
            spectators[(p.index + j) % count].append(
                SpectatorJob(p.index, p.room, node, p.slot_base)
            )
    per_worker_gate = max(1, cfg.connect_concurrency // count)
    return [
        WorkerPlan(
            index=i,
            scripts=scripts,
            battles=tuple(battles[i]),
            spectators=tuple(spectators[i]),
            speed=cfg.speed,
            interval_s=cfg.interval_s,
            connect_concurrency=per_worker_gate,
            timeout_s=cfg.timeout_s,
            session_tokens=cfg.session_tokens,
            nodes=tuple(cfg.targets),
        )
        for i in range(count)
    ]


@dataclass
class Aggregate:
    t0_ns: int
    interval_s: float
    total: Interval = field(default_factory=Interval)
    timeline: dict[int, Interval] = field(default_factory=dict)
    worker_cpu: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    sockets: dict[int, int] = field(default_factory=dict)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    spectators: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    ready: dict[int, tuple[float, float]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)

    def take(self, msg: dict[str, Any]) -> None:
        kind = msg["kind"]
        worker = int(msg["worker"])
        if kind == "tick":
            for index, data in msg["intervals"].items():
                part = Interval.from_dict(data)
                self.timeline.setdefault(int(index), Interval()).merge(part)
                self.total.merge(part)
            self.sockets[worker] = int(msg["sockets"])
            t = (int(msg["at"]) - self.t0_ns) / 1e9
            self.worker_cpu.setdefault(worker, []).append((t, float(msg["cpu"])))
        elif kind == "ready":
            self.ready[worker] = (
                (int(msg["connectStart"]) - self.t0_ns) / 1e9,
                (int(msg["connectEnd"]) - self.t0_ns) / 1e9,
            )
        elif kind == "done":
            self.done.add(worker)
            self.outcomes.extend(msg["battles"])
            self.spectators.update(msg["spectators"])
        elif kind == "crash":
            self.done.add(worker)
            self.crashes.append(str(msg["error"]))
            self.total.errors["worker:crashed"] += 1

    def recent(self, intervals: int = 2) -> Interval:
        """The last complete intervals, merged (for the progress line)."""
        now = (time.monotonic_ns() - self.t0_ns) / 1e9 / self.interval_s
        out = Interval()
        for index in range(int(now) - intervals, int(now)):
            if index in self.timeline:
                out.merge(self.timeline[index])
        return out

    def worker_cpu_percent(self, worker: int, window_s: float = 2.0) -> float:
        points = self.worker_cpu.get(worker, [])
        if len(points) < 2:
            return 0.0
        last = points[-1]
        first = next((p for p in points if p[0] >= last[0] - window_s), points[0])
        if first is last:
            first = points[-2]
        return 100 * (last[1] - first[1]) / max(last[0] - first[0], 1e-9)


def _fmt_ms(us: float) -> str:
    ms = us / MS
    return f"{ms:.1f}ms" if ms < 100 else f"{ms:.0f}ms"


def progress_line(
    agg: Aggregate, cfg: ReplayConfig, phase: str, samplers: list[ProcessSampler]
) -> str:
    elapsed = (time.monotonic_ns() - agg.t0_ns) / 1e9
    recent = agg.recent()
    span = 2 * cfg.interval_s
    total = agg.total
    done = total.counters["battlesCompleted"]
    errors = sum(total.errors.values())
    parts = [
        f"[{elapsed:6.1f}s {phase}]",
        f"battles {done}/{cfg.battles}",
        f"sockets {sum(agg.sockets.values())}",
        f"deliv {recent.counters['deliveries'] / span:,.0f}/s",
        f"ack p99 {_fmt_ms(recent.hists['turnAck'].percentile(99))}",
        f"turn→spect p99 {_fmt_ms(recent.hists['turnDelivery'].percentile(99))}",
        f"err {errors}",
        f"drops {total.counters['slowDrops']}",
        "client cpu "
        + ",".join(f"{agg.worker_cpu_percent(w):.0f}%" for w in sorted(agg.worker_cpu)),
    ]
    for s in samplers:
        if s.samples:
            last = s.samples[-1]
            parts.append(
                f"target {last.get('cpuPercent', 0):.0f}% {last['rssBytes'] / 2**20:.0f}MiB"
            )
    return " | ".join(parts)


def run_workers(
    cfg: ReplayConfig, plans: list[WorkerPlan], slot_count: int, say: TextIO
) -> tuple[Aggregate, list[ProcessSampler], dict[str, float]]:
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.RawArray("q", max(slot_count, 1))
    go_ns = ctx.RawArray("q", 1)
    aborted = ctx.RawArray("b", max(cfg.battles, 1))
    go = ctx.Event()
    outbox = ctx.Queue()
    t0 = time.monotonic_ns()
    agg = Aggregate(t0, cfg.interval_s)
    samplers = [ProcessSampler(pid, t0) for pid in cfg.target_pids]
    for s in samplers:
        s.sample()
    procs = [
        ctx.Process(
            target=worker_main,
            args=(plan, slots, t0, go, go_ns, outbox, aborted),
            name=f"replay-worker-{plan.index}",
            daemon=True,
        )
        for plan in plans
    ]
    for proc in procs:
        proc.start()
    phases: dict[str, float] = {"spawned": (time.monotonic_ns() - t0) / 1e9}
    deadline = time.monotonic() + cfg.timeout_s * 2 + 60
    phase = "connect"
    tty = say.isatty()
    next_sample = time.monotonic()
    next_print = time.monotonic() + (0.5 if tty else 5.0)
    line_open = False
    try:
        while len(agg.done) < len(procs):
            try:
                msg = outbox.get(timeout=0.1)
            except queue_mod.Empty:
                msg = None
            if msg is not None:
                agg.take(msg)
                while True:  # drain what else is waiting before doing anything else
                    try:
                        agg.take(outbox.get_nowait())
                    except queue_mod.Empty:
                        break
            if phase == "connect" and len(agg.ready) == len(procs):
                go_ns[0] = time.monotonic_ns()
                go.set()
                phase = "play"
                phases["go"] = (go_ns[0] - t0) / 1e9
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + 0.5
                for s in samplers:
                    s.sample()
            if cfg.progress and now >= next_print:
                line = progress_line(agg, cfg, phase, samplers)
                if tty:
                    print("\r\x1b[K" + line, end="", file=say, flush=True)
                    line_open = True
                    next_print = now + 0.5
                else:
                    print(line, file=say, flush=True)
                    next_print = now + 5.0
            for i, proc in enumerate(procs):
                if not proc.is_alive() and i not in agg.done:
                    # Let its last messages arrive before calling it dead.
                    with contextlib.suppress(queue_mod.Empty):
                        while True:
                            agg.take(outbox.get(timeout=0.5))
                    if i not in agg.done:
                        agg.done.add(i)
                        agg.total.errors["worker:died"] += 1
                        agg.crashes.append(f"worker {i} exited with {proc.exitcode}")
            if now > deadline:
                agg.total.errors["worker:hung"] += len(procs) - len(agg.done)
                break
        phases["end"] = (time.monotonic_ns() - t0) / 1e9
        if "go" not in phases:
            phases["go"] = phases["end"]
    finally:
        if line_open:
            print(file=say, flush=True)
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for s in samplers:
            s.sample()
    return agg, samplers, phases


# ---------------------------------------------------------------------------- report


def cpu_rates(points: list[tuple[float, float]], min_dt: float = 0.45) -> list[tuple[float, float]]:
    """(t, CPU %) from (t, cumulative CPU seconds) samples, over steps of at least ``min_dt``."""
    out = []
    anchor = points[0] if points else None
    for point in points[1:]:
        assert anchor is not None
        if point[0] - anchor[0] >= min_dt:
            out.append((point[0], 100 * (point[1] - anchor[1]) / (point[0] - anchor[0])))
            anchor = point
    return out


def _pct(hist: Histogram) -> dict[str, float | int]:
    return hist.summary(MS)


def build_report(
    cfg: ReplayConfig,
    info: dict[str, Any],
    planned: list[PlannedBattle],
    agg: Aggregate,
    samplers: list[ProcessSampler],
    phases: dict[str, float],
    after_metrics: dict[str, dict[str, float]],
    started_at: datetime,
) -> dict[str, Any]:
    total = agg.total
    counters = total.counters
    errors: Counter[str] = Counter(total.errors)
    lost = counters["lostDeliveries"]
    if lost:
        errors["spectator:lost_deliveries"] += lost
    if agg.spectators["incomplete"]:
        errors["spectator:incomplete"] += agg.spectators["incomplete"]
    if agg.spectators["aborted"]:
        errors["spectator:battle_aborted"] += agg.spectators["aborted"]
    outcomes = agg.outcomes
    statuses = Counter(str(o["status"]) for o in outcomes)
    events = sum(int(o["last_seq"]) for o in outcomes if o["status"] == "COMPLETED")
    play_s = max(phases["end"] - phases["go"], 1e-9)
    if agg.ready:
        connect_s = max(
            max(end for _, end in agg.ready.values()) - min(s for s, _ in agg.ready.values()),
            1e-9,
        )
    else:
        connect_s = 1e-9
    spectator_connects = counters["spectatorConnects"]
    by_mode: Counter[str] = Counter()
    for o in outcomes:
        if o["status"] == "COMPLETED":
            by_mode[cfg.recordings[planned[int(o["battle"])].recording].mode] += 1

    workers = []
    saturated = False
    for w, points in sorted(agg.worker_cpu.items()):
        go_t = phases["go"]
        window = [p for p in points if p[0] >= go_t] or points
        first, last = window[0], window[-1]
        mean = (
            100 * (last[1] - first[1]) / max(last[0] - first[0], 1e-9) if len(window) > 1 else 0.0
        )
        peaks = [p for _, p in cpu_rates(points)]
        workers.append(
            {
                "worker": w,
                "cpuSeconds": round(points[-1][1], 3),
                "cpuPercentMeanPlay": round(mean, 1),
                "cpuPercentMax": round(max(peaks), 1) if peaks else None,
            }
        )
        saturated = saturated or mean >= 90
    timeline = []
    for index in range(0, max(agg.timeline, default=-1) + 1):
        part = agg.timeline.get(index, Interval())
        row: dict[str, Any] = {
            "t": round(index * cfg.interval_s, 3),
            "deliveries": part.counters["deliveries"],
            "deliveriesPerSec": round(part.counters["deliveries"] / cfg.interval_s, 1),
            "turnsSent": part.counters["turnsSent"],
            "connects": part.counters["spectatorConnects"] + part.counters["agentConnects"],
            "errors": sum(part.errors.values()),
            "slowDrops": part.counters["slowDrops"],
            "battlesCompleted": part.counters["battlesCompleted"],
        }
        for name, key in (("turnAck", "ack"), ("turnDelivery", "delivery")):
            hist = part.hists[name]
            if hist.count:
                row[f"{key}P50Ms"] = round(hist.percentile(50) / MS, 3)
                row[f"{key}P99Ms"] = round(hist.percentile(99) / MS, 3)
                row[f"{key}MaxMs"] = round(hist.max / MS, 3)
        timeline.append(row)
    worker_timeline = {
        str(w): [{"t": round(t, 3), "cpuPercent": round(p, 1)} for t, p in cpu_rates(points)]
        for w, points in sorted(agg.worker_cpu.items())
    }
    hists = total.hists
    delivery = hists["turnDelivery"]
    ack = hists["turnAck"]
    budgets = cfg.budgets
    gates: list[dict[str, Any]] = [
        {"name": "errors", "limit": 0, "value": sum(errors.values())},
        {
            "name": "slow consumer drops (4008)",
            "limit": budgets.max_drops,
            "value": counters["slowDrops"],
        },
    ]
    for name, limit, value in (
        ("turn→spectator p50 ms", budgets.delivery_p50_ms, delivery.percentile(50) / MS),
        ("turn→spectator p99 ms", budgets.delivery_p99_ms, delivery.percentile(99) / MS),
        ("turn→spectator max ms", budgets.delivery_max_ms, delivery.max / MS),
        ("turn→ack p99 ms", budgets.ack_p99_ms, ack.percentile(99) / MS),
    ):
        if limit is not None:
            gates.append({"name": name, "limit": limit, "value": round(value, 3)})
    for gate in gates:
        gate["ok"] = gate["value"] <= gate["limit"]
    ok = all(g["ok"] for g in gates)

    target: list[dict[str, Any]] = [s.summary() for s in samplers]
    return {
        "tool": "arena-rt replay",
        "reportVersion": 1,
        "ok": ok,
        "startedAt": started_at.isoformat(timespec="seconds"),
        "command": cfg.command,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "the load generator and a local target share this machine's cores",
        },
        "config": {
            "targets": cfg.targets,
            "source": cfg.source,
            "recordings": len(cfg.recordings),
            "battles": cfg.battles,
            "spectatorsPerBattle": cfg.spectators,
            "pacing": "asap" if cfg.speed is None else f"recorded timing x{cfg.speed:g}",
            "workers": cfg.workers,
            "startDelayMs": cfg.start_delay_ms,
            "voteDurationMs": cfg.vote_duration_ms,
            "turnDurationMs": sorted({p.body["turnDurationMs"] for p in planned}),
            "agentAuth": "session token after first connect" if cfg.session_tokens else "api key",
            "judge": cfg.judge,
            "commentator": cfg.commentator,
            "rampSeconds": cfg.ramp_s,
            "timeoutSeconds": cfg.timeout_s,
            "intervalSeconds": cfg.interval_s,
            "budgets": {
                "deliveryP50Ms": budgets.delivery_p50_ms,
                "deliveryP99Ms": budgets.delivery_p99_ms,
                "deliveryMaxMs": budgets.delivery_max_ms,
                "ackP99Ms": budgets.ack_p99_ms,
                "maxDrops": budgets.max_drops,
            },
        },
        "setup": {k: v for k, v in info.items() if k not in ("errors", "metricsBefore")},
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "summary": {
            "battles": {
                "planned": cfg.battles,
                "completed": statuses["COMPLETED"],
                "cancelled": statuses["CANCELLED"],
                "notSeated": statuses["NOT_SEATED"],
                "stalled": statuses["STALLED"],
                "incomplete": cfg.battles
                - statuses["COMPLETED"]
                - statuses["CANCELLED"]
                - statuses["NOT_SEATED"]
                - statuses["STALLED"],
                "completedByMode": dict(by_mode),
            },
            "events": events,
            "spectators": cfg.battles * cfg.spectators,
            "deliveries": counters["deliveries"],
            "deliveriesExpected": agg.spectators["expected"],
            "eventsTimesSpectators": events * cfg.spectators,
            "lostDeliveries": lost,
            "deliveryBytes": counters["deliveryBytes"],
            "playSeconds": round(play_s, 3),
            "deliveriesPerSec": round(counters["deliveries"] / play_s, 1),
            "turns": {
                "expected": sum(int(o["turns_expected"]) for o in outcomes),
                "sent": counters["turnsSent"],
                "acked": counters["turnAcks"],
                "deliveredToSpectators": counters["turnDeliveries"],
            },
            "turnsPerSec": round(counters["turnsSent"] / play_s, 1),
            "connects": {
                "spectators": spectator_connects,
                "agents": counters["agentConnects"],
                "agentAuthByKey": counters["agentAuthKey"],
                "agentAuthBySessionToken": counters["agentAuthSession"],
                "connectPhaseSeconds": round(connect_s, 3),
                "spectatorConnectsPerSec": round(spectator_connects / connect_s, 1),
                "reconnects": counters["reconnects"],
            },
            "errors": sum(errors.values()),
            "errorsByCode": dict(sorted(errors.items())),
            "closeCodes": dict(sorted(total.closes.items())),
            "slowDrops": counters["slowDrops"],
        },
        "latencyMs": {name: _pct(hists[name]) for name in HISTOGRAMS},
        "histograms": {name: hists[name].to_dict() for name in HISTOGRAMS},
        "timeline": timeline,
        "client": {
            "workers": workers,
            "workerTimeline": worker_timeline,
            "parentCpuSeconds": round(cpu_seconds(), 3),
            "saturated": saturated,
        },
        "target": target,
        "serverMetrics": metric_deltas(info.get("metricsBefore", {}), after_metrics),
        "gates": gates,
        "crashes": agg.crashes,
        "battles": _battle_rows(cfg, planned, outcomes),
    }


def _battle_rows(
    cfg: ReplayConfig, planned: list[PlannedBattle], outcomes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_index = {int(o["battle"]): o for o in outcomes}
    rows = []
    for p in planned:
        o = by_index.get(p.index, {})
        rows.append(
            {
                "battle": p.index,
                "room": p.room,
                "node": p.node,
                "recording": cfg.recordings[p.recording].name,
                "mode": p.body["mode"],
                "seats": p.body["maxParticipants"],
                "status": o.get("status", "NOT_RUN"),
                "lastSeq": o.get("last_seq", 0),
                "turnsExpected": o.get("turns_expected", 0),
                "turnsSent": o.get("turns_sent", 0),
                "turnsAcked": o.get("turns_acked", 0),
            }
        )
    return rows


def text_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    c = s["connects"]
    lat = report["latencyMs"]
    lines = [
        f"arena-rt replay: {'PASS' if report['ok'] else 'FAIL'}  ({report['config']['pacing']}, "
        f"{report['config']['battles']} battles x {report['config']['spectatorsPerBattle']} "
        f"spectators, {report['config']['workers']} workers)",
        f"  battles     completed {s['battles']['completed']}/{s['battles']['planned']}"
        f" (cancelled {s['battles']['cancelled']}, not seated {s['battles']['notSeated']},"
        f" stalled {s['battles']['stalled']}, incomplete {s['battles']['incomplete']})"
        f" by mode {s['battles']['completedByMode']}",
        f"  deliveries  {s['deliveries']:,} of {s['deliveriesExpected']:,} expected "
        f"(events {s['events']:,} x {report['config']['spectatorsPerBattle']} spectators = "
        f"{s['eventsTimesSpectators']:,}); {s['deliveriesPerSec']:,.0f}/s over "
        f"{s['playSeconds']:.1f}s; turns {s['turns']['sent']:,} sent, {s['turns']['acked']:,} acked"
        f" ({s['turnsPerSec']:,.1f}/s)",
        f"  connects    {c['spectators']:,} spectators in {c['connectPhaseSeconds']:.1f}s "
        f"({c['spectatorConnectsPerSec']:,.0f}/s), {c['agents']:,} agents, "
        f"{c['reconnects']} reconnects",
    ]
    for name, label in (
        ("turnAck", "turn→ack"),
        ("turnDelivery", "turn→spect"),
        ("connectSpectator", "spect conn"),
        ("connectAgent", "agent conn"),
    ):
        h = lat[name]
        lines.append(
            f"  {label:<11} p50 {h['p50']:.2f}  p90 {h['p90']:.2f}  p99 {h['p99']:.2f}  "
            f"max {h['max']:.2f} ms  (n={h['count']:,})"
        )
    lines.append(
        f"  errors      {s['errors']} {s['errorsByCode'] or ''}  "
        f"close codes {s['closeCodes'] or '{}'}  slow drops {s['slowDrops']}"
    )
    client = report["client"]
    lines.append(
        "  client cpu  "
        + ", ".join(
            f"w{w['worker']} {w['cpuPercentMeanPlay']:.0f}% (max {w['cpuPercentMax']}%)"
            for w in client["workers"]
        )
        + (
            "  ** a client worker is saturated: figures are client-bound **"
            if client["saturated"]
            else ""
        )
    )
    for t in report["target"]:
        if "rssMaxBytes" in t:
            lines.append(
                f"  target pid {t['pid']}: cpu mean {t['cpuPercentMean']}% "
                f"max {t['cpuPercentMax']}% (100% = one core), "
                f"rss {t['rssStartBytes'] / 2**20:.0f} → "
                f"{t['rssEndBytes'] / 2**20:.0f} MiB (max {t['rssMaxBytes'] / 2**20:.0f} MiB)"
            )
        elif "error" in t:
            lines.append(f"  target pid {t['pid']}: {t['error']}")
    for gate in report["gates"]:
        lines.append(
            f"  gate {'ok  ' if gate['ok'] else 'FAIL'} {gate['name']}: {gate['value']} "
            f"(limit {gate['limit']})"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- entry


def run(cfg: ReplayConfig, say: TextIO = sys.stderr) -> tuple[int, dict[str, Any] | None]:
    from arena_rt.replay.html import render_html

    started_at = datetime.now(UTC)
    cfg.targets = [t.rstrip("/") for t in cfg.targets]
    try:
        planned, slot_count, info = asyncio.run(setup(cfg, say))
    except SetupError as exc:
        print(f"arena-rt replay: {exc}", file=say)
        return EXIT_SETUP, None
    plans = worker_plans(cfg, planned)
    agg, samplers, phases = run_workers(cfg, plans, slot_count, say)
    after = asyncio.run(finish_scrape(cfg))
    report = build_report(cfg, info, planned, agg, samplers, phases, after, started_at)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    (cfg.out_dir / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (cfg.out_dir / "report.html").write_text(render_html(report), encoding="utf-8")
    print(text_summary(report))
    print(f"  reports     {cfg.out_dir / 'report.json'}  {cfg.out_dir / 'report.html'}")
    for crash in agg.crashes:
        print(f"arena-rt replay: worker failure:\n{crash}", file=say)
    return (EXIT_OK if report["ok"] else EXIT_FAILED), report
