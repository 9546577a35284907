"""One load-generating worker process: its share of the agents and spectators, on one loop.

The parent gives each worker a :class:`WorkerPlan`: the battles whose agents it plays (all
agents of a battle live in one worker, connected to the node that owns the battle) and the
spectator sockets it holds (a battle's spectators are spread over every worker and node). A
turn's submit time is written, just before the frame is sent, to a slot of an array shared by
all workers (``CLOCK_MONOTONIC`` is system-wide), so whichever worker holds a spectator
measures turn submit → delivery on the same clock without any message between workers.

Phases: connect every spectator (each waits for its ``snapshot``), report ``ready``, wait for
the parent's *go*, then seat and play the battles (staggered by the ramp). Every interval the
worker sends the parent what happened in it: counters, errors, close codes and latency
histograms (sparse, mergeable), plus its own CPU time, so a saturated client shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
import traceback
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from arena_rt.replay.histogram import Histogram

FINAL = frozenset({"COMPLETED", "CANCELLED"})
# Frames that are not battle events (an ``ack`` carries the ``seq`` of the event it stored).
NOT_EVENTS = frozenset({"ack", "error", "pong", "welcome", "snapshot"})
HISTOGRAMS = ("turnAck", "turnDelivery", "connectSpectator", "connectAgent", "eventLag")
MAX_RECONNECTS = 5


class SlotArray(Protocol):
    """A shared ``int64`` array (``multiprocessing.RawArray('q', n)``)."""

    def __getitem__(self, index: int) -> int: ...
    def __setitem__(self, index: int, value: int) -> None: ...


class _Zeros:
    """A stand-in for the shared abort flags when a Worker runs alone (tests)."""

    def __getitem__(self, index: int) -> int:
        return 0

    def __setitem__(self, index: int, value: int) -> None:
        pass


class Flag(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


class Outbox(Protocol):
    def put(self, obj: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Script:
    """What the agents of one battle replay: the seats' teams and the turns by number."""

    teams: tuple[str | None, ...]
    turns: dict[int, tuple[str, int]]  # turn number → (content, think ms)


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str
    api_key: str


@dataclass(frozen=True, slots=True)
class BattleJob:
    battle: int
    room: str
    node: str
    script: int  # index into WorkerPlan.scripts
    agents: tuple[Agent, ...]  # in seat (join) order
    start_offset_s: float
    slot_base: int
    stall_s: float = 60.0  # no event for this long: the battle is stuck (a server fault)


@dataclass(frozen=True, slots=True)
class SpectatorJob:
    battle: int
    room: str
    node: str
    slot_base: int


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    index: int
    scripts: tuple[Script, ...]
    battles: tuple[BattleJob, ...]
    spectators: tuple[SpectatorJob, ...]
    speed: float | None  # None: as soon as the turn starts
    interval_s: float
    connect_concurrency: int
    timeout_s: float
    open_timeout_s: float = 30.0
    welcome_timeout_s: float = 60.0
    session_tokens: bool = True  # later sockets of an agent use its session token
    nodes: tuple[str, ...] = ()  # every target: sockets move on when theirs drains or dies


class _Frame(msgspec.Struct, rename="camel"):
    """The fields of any server frame the replay looks at; the rest are skipped unparsed."""

    type: str
    seq: int | None = None
    at: int | None = None
    turn_number: int | None = None
    agent_id: str | None = None
    status: str | None = None
    reason: str | None = None
    last_seq: int | None = None
    code: str | None = None
    ref: str | None = None
    session_token: str | None = None


_decode = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.Encoder().encode


def ws_url(base: str, path: str) -> str:
    base = base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + path
    return base.replace("http://", "ws://", 1) + path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Interval:
    """What happened during one reporting interval (merged by the parent)."""

    counters: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    hists: dict[str, Histogram] = field(
        default_factory=lambda: {h: Histogram() for h in HISTOGRAMS}
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "errors": dict(self.errors),
            "closes": dict(self.closes),
            "hists": {k: h.to_dict() for k, h in self.hists.items() if h.count},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        out = cls()
        out.counters.update(data.get("counters", {}))
        out.errors.update(data.get("errors", {}))
        out.closes.update(data.get("closes", {}))
        for name, hist in data.get("hists", {}).items():
            out.hists.setdefault(name, Histogram()).merge(Histogram.from_dict(hist))
        return out

    def merge(self, other: Interval) -> None:
        self.counters.update(other.counters)
        self.errors.update(other.errors)
        self.closes.update(other.closes)
        for name, hist in other.hists.items():
            self.hists.setdefault(name, Histogram()).merge(hist)


class Stats:
    """Per-interval accumulators keyed by the interval a sample falls in (from the shared t0)."""

    def __init__(self, t0_ns: int, interval_s: float) -> None:
        self.t0_ns = t0_ns
        self.interval_ns = max(int(interval_s * 1e9), 1_000_000)
        self.pending: dict[int, Interval] = {}

    def now(self) -> Interval:
        index = max((time.monotonic_ns() - self.t0_ns) // self.interval_ns, 0)
        found = self.pending.get(index)
        if found is None:
            found = self.pending[index] = Interval()
        return found

    def count(self, name: str, n: int = 1) -> None:
        self.now().counters[name] += n

    def error(self, code: str) -> None:
        self.now().errors[code] += 1

    def closed(self, code: int | None) -> None:
        self.now().closes[str(code)] += 1

    def latency(self, name: str, micros: int) -> None:
        self.now().hists[name].record(micros)

    def drain(self, everything: bool = False) -> dict[int, dict[str, Any]]:
        current = (time.monotonic_ns() - self.t0_ns) // self.interval_ns
        done = [i for i in self.pending if everything or i < current]
        return {i: self.pending.pop(i).to_dict() for i in sorted(done)}


@dataclass
class BattleOutcome:
    battle: int
    status: str = "NOT_STARTED"
    last_seq: int = 0
    turns_sent: int = 0
    turns_acked: int = 0
    turns_expected: int = 0
    last_event_ns: int = 0


@dataclass
class SpectatorTally:
    done: int = 0
    incomplete: int = 0
    aborted: int = 0  # their battle was given up by the agents' worker
    expected: int = 0
    received: int = 0


class Worker:
    def __init__(
        self,
        plan: WorkerPlan,
        slots: SlotArray,
        t0_ns: int,
        outbox: Outbox,
        aborted: SlotArray | None = None,
    ) -> None:
        self.plan = plan
        self.slots = slots
        # aborted[battle] is set by the worker that plays the battle when it gave up on it
        # (agents could not be seated, or stopped being served), so its spectators stop too.
        self.aborted: SlotArray = aborted if aborted is not None else _Zeros()
        self.watched: dict[int, set[ClientConnection]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.outbox = outbox
        self.stats = Stats(t0_ns, plan.interval_s)
        self.open_sockets = 0
        self.connect_gate = asyncio.Semaphore(max(plan.connect_concurrency, 1))
        self.outcomes: dict[int, BattleOutcome] = {}
        self.spectators = SpectatorTally()
        self.go_ns = 0
        self._ready: list[asyncio.Future[None]] = []
        self.tokens: dict[str, str] = {}  # agent id → session token from a welcome

    # ------------------------------------------------------------------ plumbing

    def send(self, kind: str, **body: Any) -> None:
        self.outbox.put({"kind": kind, "worker": self.plan.index, **body})

    def tick(self, final: bool = False) -> None:
        self.send(
            "tick",
            intervals=self.stats.drain(everything=final),
            cpu=cpu_seconds(),
            sockets=self.open_sockets,
            at=time.monotonic_ns(),
        )

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(self.plan.interval_s / 2)
            self.tick()

    async def watchdog(self) -> None:
        """Close the spectators of battles given up by their owner (they would wait forever)."""
        while True:
            await asyncio.sleep(0.25)
            for battle, conns in self.watched.items():
                if conns and self.aborted[battle]:
                    for conn in list(conns):
                        task = asyncio.create_task(conn.close(1000, "battle aborted"))
                        self._closing.add(task)
                        task.add_done_callback(self._closing.discard)
                    conns.clear()

    def node_after(self, home: str, attempts: int) -> str:
        """Where a socket (re)connects: its own node first, then each target in turn, so a
        battle's sockets move on when their node drains (1001) or dies."""
        nodes = self.plan.nodes
        if attempts == 0 or home not in nodes:
            return home
        return nodes[(nodes.index(home) + attempts) % len(nodes)]

    async def open(
        self, url: str, headers: dict[str, str] | None, kind: str
    ) -> tuple[ClientConnection, int, Callable[[], None]] | None:
        """A socket, the instant its handshake began, and the release of its connect slot.

        A connect slot (``--connect-concurrency``) is held from the handshake until the
        caller has the first frame (snapshot / welcome) and calls the release, or for
        ``open_timeout_s`` at most; so connect latency is the server's, not a queue of ours.
        None when the connection failed (counted as an error).
        """
        await self.connect_gate.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.connect_gate.release()

        started = time.monotonic_ns()
        try:
            conn = await websockets.connect(
                url,
                additional_headers=headers,
                open_timeout=self.plan.open_timeout_s,
                ping_interval=None,
                compression=None,
                max_size=None,
                close_timeout=2,
            )
        except websockets.InvalidStatus as exc:
            release()
            self.stats.error(f"connect_{kind}:http_{exc.response.status_code}")
            return None
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            release()
            self.stats.error(f"connect_{kind}:{type(exc).__name__}")
            return None
        except BaseException:
            release()
            raise
        asyncio.get_running_loop().call_later(self.plan.open_timeout_s, release)
        self.open_sockets += 1
        return conn, started, release

    async def close(self, conn: ClientConnection) -> None:
        self.open_sockets -= 1
        with contextlib.suppress(Exception):
            await conn.close()

    # ------------------------------------------------------------------ spectators

    async def spectate(self, job: SpectatorJob, ready: asyncio.Future[None]) -> None:
        stats = self.stats
        slots = self.slots
        path = f"/ws/battles/{job.room}/spectate"
        start: int | None = None
        last = 0
        received = 0
        final: int | None = None
        attempts = 0
        aborted = False
        try:
            while final is None and attempts <= MAX_RECONNECTS and not self.aborted[job.battle]:
                query = "" if start is None else f"?since={last}"
                node = self.node_after(job.node, attempts)
                opened = await self.open(ws_url(node, path + query), None, "spectator")
                if opened is None:
                    attempts += 1
                    await asyncio.sleep(min(0.2 * 2**attempts, 5))
                    continue
                conn, began, release = opened
                watched = self.watched.setdefault(job.battle, set())
                watched.add(conn)
                first = True
                try:
                    async for raw in conn:
                        now = time.monotonic_ns()
                        frame = _decode(raw)
                        if first:
                            first = False
                            release()
                            stats.latency("connectSpectator", (now - began) // 1000)
                            stats.count("spectatorConnects")
                            if not ready.done():
                                ready.set_result(None)
                        seq = frame.seq
                        if seq is None or frame.type in NOT_EVENTS:
                            if frame.type == "snapshot":
                                start = last = frame.last_seq or 0
                            elif frame.type == "error":
                                stats.error(f"spectator:{frame.code}")
                            continue
                        if start is None:  # resumed before any snapshot: counted from 0
                            start = 0
                        if seq <= last:
                            stats.error("spectator:duplicate_event")
                            continue
                        if seq != last + 1:
                            stats.error("spectator:event_gap")
                        last = seq
                        received += 1
                        stats.count("deliveries")
                        stats.count("deliveryBytes", len(raw))
                        if frame.at:
                            stats.latency(
                                "eventLag", max(time.time_ns() // 1000 - frame.at * 1000, 0)
                            )
                        kind = frame.type
                        if kind == "turn" and frame.turn_number is not None:
                            sent = slots[job.slot_base + frame.turn_number]
                            if sent:
                                stats.latency("turnDelivery", (now - sent) // 1000)
                                stats.count("turnDeliveries")
                            else:
                                stats.error("spectator:turn_without_submit")
                        elif kind == "state" and frame.status in FINAL:
                            final = seq
                            break
                except websockets.ConnectionClosed:
                    pass
                finally:
                    release()
                    watched.discard(conn)
                    await self.close(conn)
                if final is not None:
                    break
                if self.aborted[job.battle]:
                    aborted = True
                    break
                code = conn.close_code
                stats.closed(code)
                if code == 4008:
                    stats.count("slowDrops")
                else:
                    stats.error(f"spectator:closed_{code}")
                attempts += 1
                stats.count("reconnects")
        finally:
            if not ready.done():
                ready.set_result(None)
            if final is not None and start is not None:
                self.spectators.done += 1
                self.spectators.expected += final - start
                self.spectators.received += received
                if final - start != received:
                    stats.count("lostDeliveries", final - start - received)
            elif aborted or self.aborted[job.battle]:
                self.spectators.aborted += 1
                self.spectators.received += received
            else:
                self.spectators.incomplete += 1
                self.spectators.received += received

    # ------------------------------------------------------------------ agents

    async def battle(self, job: BattleJob) -> None:
        outcome = self.outcomes[job.battle] = BattleOutcome(job.battle)
        script = self.plan.scripts[job.script]
        outcome.turns_expected = len(script.turns)
        delay = self.go_ns + int(job.start_offset_s * 1e9) - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        outcome.status = "SEATING"
        seated: list[asyncio.Task[None]] = []
        finished: asyncio.Future[tuple[str, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        try:
            for seat, agent in enumerate(job.agents):
                welcomed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                seated.append(
                    asyncio.create_task(
                        self.agent(job, script, seat, agent, welcomed, finished, outcome)
                    )
                )
                try:  # positions follow join order: seat one at a time
                    ok = await asyncio.wait_for(
                        asyncio.shield(welcomed), self.plan.welcome_timeout_s
                    )
                except TimeoutError:
                    self.stats.error("agent:no_welcome_in_time")
                    ok = False
                if not ok:
                    outcome.status = "NOT_SEATED"
                    self.stats.error("battle:not_seated")
                    return
            outcome.status = "PLAYING"
            outcome.last_event_ns = time.monotonic_ns()
            pending = set(seated)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=1.0)
                if pending and time.monotonic_ns() - outcome.last_event_ns > job.stall_s * 1e9:
                    outcome.status = "STALLED"
                    self.stats.error("battle:stalled")
                    return
        finally:
            for task in seated:
                task.cancel()
            for task in seated:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            reason = None
            if finished.done():
                outcome.status, reason = finished.result()
            if outcome.status == "COMPLETED":
                self.stats.count("battlesCompleted")
            elif outcome.status == "CANCELLED":
                self.stats.error(f"battle:cancelled ({reason})")
            else:
                if outcome.status not in ("NOT_SEATED", "STALLED"):
                    self.stats.error("battle:incomplete")
                self.aborted[job.battle] = 1

    async def agent(
        self,
        job: BattleJob,
        script: Script,
        seat: int,
        agent: Agent,
        welcomed: asyncio.Future[bool],
        finished: asyncio.Future[tuple[str, str | None]],
        outcome: BattleOutcome,
    ) -> None:
        stats = self.stats
        slots = self.slots
        team = script.teams[seat] if seat < len(script.teams) else None
        played: set[int] = set()
        pending: dict[str, int] = {}
        plays: set[asyncio.Task[None]] = set()
        last: int | None = None
        attempts = 0
        me = agent.agent_id

        async def play(conn: ClientConnection, number: int) -> None:
            content, think_ms = script.turns[number]
            if self.plan.speed is not None and think_ms > 0:
                await asyncio.sleep(think_ms / 1000 / self.plan.speed)
            ref = f"t{number}"
            frame = _encode({"type": "turn", "turnNumber": number, "content": content, "ref": ref})
            sent = time.monotonic_ns()
            if not slots[job.slot_base + number]:
                slots[job.slot_base + number] = sent
            pending[ref] = sent
            try:
                await conn.send(frame.decode())
            except websockets.ConnectionClosed:
                pending.pop(ref, None)
                played.discard(number)  # resent after the reconnect, when the turn is still open
                return
            outcome.turns_sent += 1
            stats.count("turnsSent")

        try:
            while attempts <= MAX_RECONNECTS:
                params = [f"team={team}"] if team else []
                if last is not None:
                    params.append(f"since={last}")
                path = f"/ws/battles/{job.room}/agent" + ("?" + "&".join(params) if params else "")
                token = self.tokens.get(me) if self.plan.session_tokens else None
                stats.count("agentAuthSession" if token else "agentAuthKey")
                headers = {"Authorization": f"Bearer {token or agent.api_key}"}
                node = self.node_after(job.node, attempts)
                opened = await self.open(ws_url(node, path), headers, "agent")
                if opened is None:
                    attempts += 1
                    if not welcomed.done() and attempts > 2:
                        welcomed.set_result(False)
                        return
                    await asyncio.sleep(min(0.2 * 2**attempts, 5))
                    continue
                conn, began, release = opened
                try:
                    async for raw in conn:
                        now = time.monotonic_ns()
                        frame = _decode(raw)
                        kind = frame.type
                        seq = frame.seq
                        if seq is not None and kind not in NOT_EVENTS:
                            last = seq
                            outcome.last_event_ns = now
                            if kind == "turn_started":
                                number = frame.turn_number or 0
                                if (
                                    frame.agent_id == me
                                    and number in script.turns
                                    and number not in played
                                ):
                                    played.add(number)
                                    task = asyncio.create_task(play(conn, number))
                                    plays.add(task)
                                    task.add_done_callback(plays.discard)
                            elif kind == "turn_skipped":
                                if (
                                    frame.agent_id == me
                                    and (frame.turn_number or 0) in script.turns
                                ):
                                    stats.error(f"agent:turn_skipped_{frame.reason}")
                            elif kind == "state" and frame.status in FINAL:
                                outcome.last_seq = seq
                                if not finished.done():
                                    finished.set_result((frame.status or "", frame.reason))
                                return
                        elif kind == "ack":
                            sent_at = pending.pop(frame.ref or "", None)
                            if sent_at is not None:
                                stats.latency("turnAck", (now - sent_at) // 1000)
                                stats.count("turnAcks")
                                outcome.turns_acked += 1
                        elif kind == "welcome":
                            release()
                            stats.latency("connectAgent", (now - began) // 1000)
                            stats.count("agentConnects")
                            if last is None:
                                last = frame.last_seq or 0
                            if frame.session_token:
                                self.tokens[me] = frame.session_token
                            if not welcomed.done():
                                welcomed.set_result(True)
                        elif kind == "error":
                            stats.error(f"agent:{frame.code}")
                            if frame.ref:
                                pending.pop(frame.ref, None)
                except websockets.ConnectionClosed:
                    pass
                finally:
                    release()
                    await self.close(conn)
                code = conn.close_code
                stats.closed(code)
                stats.error(f"agent:closed_{code}")
                if code == 4001 and token:  # the session token was refused: use the key
                    self.tokens.pop(me, None)
                if not welcomed.done():
                    welcomed.set_result(False)
                    return
                attempts += 1
                stats.count("reconnects")
        finally:
            for task in list(plays):
                task.cancel()
            if not welcomed.done():
                welcomed.set_result(False)

    # ------------------------------------------------------------------ phases

    async def run(self, go: Flag, go_ns: Callable[[], int]) -> None:
        helpers = [asyncio.create_task(self.ticker()), asyncio.create_task(self.watchdog())]
        try:
            async with asyncio.timeout(self.plan.timeout_s):
                await self._run(go, go_ns)
        except TimeoutError:
            self.stats.error("worker:timeout")
        finally:
            for helper in helpers:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        self.tick(final=True)
        self.send(
            "done",
            battles=[vars(o) for o in self.outcomes.values()],
            spectators=vars(self.spectators),
            cpu=cpu_seconds(),
        )

    async def _run(self, go: Flag, go_ns: Callable[[], int]) -> None:
        loop = asyncio.get_running_loop()
        watchers: list[asyncio.Task[None]] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            connect_start = time.monotonic_ns()
            for job in self.plan.spectators:
                ready: asyncio.Future[None] = loop.create_future()
                self._ready.append(ready)
                watchers.append(asyncio.create_task(self.spectate(job, ready)))
            if self._ready:
                limit = self.plan.open_timeout_s + len(self._ready) / 20
                _, late = await asyncio.wait(self._ready, timeout=limit)
                for _ in late:  # they go on waiting; the battles start without them
                    self.stats.error("spectator:no_snapshot_in_time")
            self.send(
                "ready",
                spectators=len(self.plan.spectators),
                connectStart=connect_start,
                connectEnd=time.monotonic_ns(),
            )
            while not await asyncio.to_thread(go.wait, 0.5):
                pass
            self.go_ns = go_ns()
            for battle in self.plan.battles:
                tasks.append(asyncio.create_task(self.battle(battle)))
            await asyncio.gather(*tasks, *watchers)
        finally:
            for task in (*tasks, *watchers):
                task.cancel()
            for task in (*tasks, *watchers):
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _loop_runner(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def worker_main(
    plan: WorkerPlan,
    slots: SlotArray,
    t0_ns: int,
    go: Flag,
    go_ns: SlotArray,
    outbox: Outbox,
    aborted: SlotArray,
) -> None:
    """Entry point of a worker process (``multiprocessing`` target)."""
    _raise_fd_limit()
    try:

        async def main() -> None:
            worker = Worker(plan, slots, t0_ns, outbox, aborted)
            await worker.run(go, lambda: go_ns[0])

        _loop_runner(main())
    except BaseException:
        outbox.put(
            {
                "kind": "crash",
                "worker": plan.index,
                "error": traceback.format_exc(),
                "pid": os.getpid(),
            }
        )
        raise
