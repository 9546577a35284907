"""Several nodes: takeover time after kill -9 of an owner, and agent turn → ack when the
agent's socket is on a node that does not run the battle (forwarded) vs on the owner (direct).

Three ``python -m arena_rt.cli serve`` processes in production mode (one fresh PostgreSQL
database migrated with ``arena-rt migrate``, Redis, distinct ``ARENA_NODE_ID``, the same
``ARENA_SECRET``, default lease settings, ``ARENA_RECONNECT_GRACE_MS`` of an hour so battles
stay live without their agents).

1. Takeover. ``--battles`` live battles (default 50), each created on the nodes in turn (its
   creator runs it) and brought to IN_PROGRESS by two agents over real WebSockets (turn 1 lasts
   ten minutes, so nothing happens by itself); the agents then leave. ``--kills`` rounds
   (default 20): a node (in turn) is killed with SIGKILL, and for each battle it owned (its
   Redis lease ``arena:owner:<id>``) we time kill → (a) the signed ``owned`` announcement of the
   battle by another node on ``arena:cluster`` (running again on a new owner) and (b) the first
   new event seen by a spectator socket on a surviving node (the ``resumed`` event a new owner
   emits; "n/a" when this checkout has no such event). The killed node is started again (same
   node id) and must be healthy before the next round. At the end every battle must still be
   IN_PROGRESS with a gap-free event log.
2. Turn → ack, forwarded vs direct. ``--ack-battles`` battles (default 20) played out at the
   same time, their agents answering each ``turn_started`` at once with a ~500-character
   turn: half with both agents on the owner (direct), half on another node (forwarded: that
   node relays the inputs to the owner over Redis). Both kinds interleaved, so the machine's
   noise hits both alike; the figure is the ratio forwarded / direct.

    .venv/bin/python scripts/bench_failover.py [--battles 50] [--kills 20] [--ack-battles 20]
        [--out DIR]

Node logs are kept (their folder is printed): a slow takeover or a failed forward is in them.
Machines here have 2 cores shared with other work; the three nodes and this client share them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import websockets  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from arena_rt.battle.ownership import LEASE_PREFIX  # noqa: E402
from arena_rt.cluster.relay import cluster_channel, relay_key  # noqa: E402
from arena_rt.protocol import BattleEvent  # noqa: E402

NODES = 3
FINAL = ("COMPLETED", "CANCELLED")
TAKEOVER_WAIT_S = 30.0  # per round: a takeover not announced by then counts as failed
HEALTHY_WITHIN_S = 60.0
FAILOVER_SETTINGS = {"turnDurationMs": 600_000, "startDelayMs": 100}
ACK_SETTINGS = {
    "turnDurationMs": 30_000,
    "maxTurns": 20,
    "startDelayMs": 100,
    "voteDurationMs": 500,
}
TURN_FILLER = (
    "A claim, the evidence for it and a rebuttal of the other side's last point, at the "
    "length of a real agent's turn. "
) * 5
EVENT_TYPES = {t.__struct_config__.tag for t in typing.get_args(BattleEvent)}
HAS_RESUMED = "resumed" in EVENT_TYPES

TOOK_OVER = re.compile(r"took over battle (\S+) \(token (\d+)\) after (\d+) ms without an owner")
_began = time.monotonic()
CREATED: list[str] = []  # every battle of this run, for the Redis clean-up at the end


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.monotonic() - _began:6.1f} s] {message}", file=sys.stderr, flush=True)


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def figures(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": quantile(values, 50),
        "p99": quantile(values, 99),
        "max": max(values),
        "min": min(values),
    }


def checkout() -> str:
    """The commit the nodes run, and whether arena_rt/ has changes on top of it (the checkout
    may be shared: a node restarted after an edit runs the edited code)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "arena_rt"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in arena_rt/" if dirty else "")


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://", 1) + path


# --------------------------------------------------------------------------- the nodes


class Node:
    """One ``arena-rt serve`` process; started again (same node id, same port) after a kill."""

    def __init__(self, index: int, env: dict[str, str], logs: Path) -> None:
        self.index = index
        # Unique on this Redis: node channels (``arena:node:<id>``) are global to the server,
        # and tests or other benchmarks may run their own nodes on it at the same time.
        self.node_id = f"bench{os.getpid()}-n{index}"
        self.env = {**env, "ARENA_NODE_ID": self.node_id}
        self.log_path = logs / f"{self.node_id}.log"
        self.port = benchlib.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start {self.starts} on port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arena_rt.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    async def healthy(self, http: httpx.AsyncClient, within_s: float = HEALTHY_WITHIN_S) -> float:
        """Seconds until /healthz answers 200; raises when the process exits or is too slow."""
        began = time.monotonic()
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"node {self.node_id} exited with {self.proc.returncode}; log: {self.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get(self.url + "/healthz", timeout=2)
                if response.status_code == 200:
                    return time.monotonic() - began
            if time.monotonic() - began > within_s:
                raise RuntimeError(f"node {self.node_id} not healthy in {within_s:g} s")
            await asyncio.sleep(0.1)

    async def start(self, http: httpx.AsyncClient) -> float:
        self.spawn()
        try:
            return await self.healthy(http)
        except RuntimeError:
            if self.proc is None or self.proc.poll() is None:
                raise
            # The port may not be free again yet: once more on another one.
            say(f"{self.node_id} did not start on port {self.port}; trying another port")
            self.port = benchlib.free_port()
            self.spawn()
            return await self.healthy(http)

    def kill(self) -> None:
        """SIGKILL, no drain."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    async def reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.proc.wait, 10)


# --------------------------------------------------------------------------- arena:cluster


@dataclass
class Owned:
    at: float  # monotonic, when this process received it
    sender: str
    battle_id: str
    token: int


class ClusterWatch:
    """Subscribed to ``arena:cluster``: every ``owned`` announcement whose signature checks
    out under this run's secret (others on the same Redis are counted and ignored)."""

    def __init__(self, redis_url: str, secret: str) -> None:
        self._redis = Redis.from_url(redis_url)
        self._key = relay_key(secret)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._waiting: dict[str, tuple[str, asyncio.Future[Owned]]] = {}
        self.owned: list[Owned] = []
        self.foreign = 0  # signed with another key: another cluster on this Redis
        self.other_kinds: dict[str, int] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        async with asyncio.timeout(10):
            await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._redis.aclose()

    def expect(self, battle_id: str, not_from: str) -> asyncio.Future[Owned]:
        """The next ``owned`` of the battle by a node other than ``not_from``."""
        future: asyncio.Future[Owned] = asyncio.get_running_loop().create_future()
        self._waiting[battle_id] = (not_from, future)
        return future

    def forget(self, battle_id: str) -> None:
        self._waiting.pop(battle_id, None)

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(cluster_channel(self._key))
            self._ready.set()
            while True:
                item = await pubsub.get_message(timeout=1.0)
                if item is not None and item.get("type") == "message":
                    self._receive(time.monotonic(), item["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _receive(self, at: float, raw: bytes) -> None:
        signature, body = raw[:64], raw[64:]
        expected = hmac.new(self._key, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(signature, expected):
            self.foreign += 1
            return
        message = json.loads(body)
        if message.get("kind") != "owned":
            kind = str(message.get("kind"))
            self.other_kinds[kind] = self.other_kinds.get(kind, 0) + 1
            return
        owned = Owned(at, message["sender"], message["battle_id"], int(message["token"]))
        self.owned.append(owned)
        waiting = self._waiting.get(owned.battle_id)
        if waiting is not None and owned.sender != waiting[0] and not waiting[1].done():
            waiting[1].set_result(owned)
            del self._waiting[owned.battle_id]


# --------------------------------------------------------------------------- clients


@dataclass
class Agent:
    id: str
    name: str
    api_key: str
    session: str | None = None  # from a welcome: later sockets skip bcrypt

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session or self.api_key}"}


@dataclass
class Battle:
    index: int
    id: str
    room: str
    creator: Node
    agents: tuple[Agent, Agent]


async def register(http: httpx.AsyncClient, node: Node, count: int) -> list[Agent]:
    agents = []
    for i in range(count):
        name = f"bench-{os.getpid()}-{secrets.token_hex(3)}-{i}"
        response = await http.post(
            node.url + "/api/agents", json={"name": name, "displayName": f"Bench {i}"}
        )
        if response.status_code != 201:
            raise RuntimeError(f"registration failed: {response.status_code} {response.text}")
        body = response.json()
        agents.append(Agent(body["id"], name, body["apiKey"]))
    return agents


async def create(
    http: httpx.AsyncClient, node: Node, creator: Agent, settings: dict[str, int]
) -> dict[str, Any]:
    response = await http.post(
        node.url + "/api/battles",
        json={"topic": "Is a hot dog a sandwich?", **settings},
        headers={"Authorization": f"Bearer {creator.api_key}"},
    )
    if response.status_code != 201:
        raise RuntimeError(f"battle creation failed: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    CREATED.append(body["id"])
    return body


async def create_battles(
    http: httpx.AsyncClient, nodes: list[Node], pool: list[Agent], n: int, settings: dict[str, int]
) -> list[Battle]:
    """``n`` battles, created on the nodes in turn, each with two agents of the pool."""
    battles: list[Battle] = []
    for i in range(n):
        node = nodes[i % NODES]
        pair = (pool[(2 * i) % len(pool)], pool[(2 * i + 1) % len(pool)])
        body = await create(http, node, pair[0], settings)
        battles.append(Battle(i, body["id"], body["roomCode"], node, pair))
    return battles


async def seat_and_leave(battle: Battle) -> None:
    """Both agents join on the creator; once turn 1 has started they close their sockets."""
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for agent in battle.agents:
            conn = await stack.enter_async_context(
                websockets.connect(
                    ws_url(battle.creator.url, f"/ws/battles/{battle.room}/agent"),
                    additional_headers=agent.headers(),
                    open_timeout=20,
                    max_size=2**22,
                )
            )
            welcome = json.loads(await asyncio.wait_for(conn.recv(), 20))
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"battle {battle.room}: {welcome}")
            agent.session = welcome["sessionToken"]
            sockets.append(conn)
        async with asyncio.timeout(30):
            while True:
                frame = json.loads(await sockets[0].recv())
                if frame.get("type") == "turn_started" and frame.get("turnNumber") == 1:
                    return


async def lease_holders(redis: Redis, battles: list[Battle]) -> dict[str, tuple[str, int] | None]:
    values = await redis.mget([LEASE_PREFIX + b.id for b in battles])
    holders: dict[str, tuple[str, int] | None] = {}
    for battle, value in zip(battles, values, strict=True):
        if value is None:
            holders[battle.id] = None
        else:
            node, token = value.decode().rsplit(" ", 1)
            holders[battle.id] = (node, int(token))
    return holders


@dataclass
class Watcher:
    """A spectator socket of one battle on a surviving node: when its first event newer
    than the snapshot arrives, and whether its seqs stay gap-free."""

    battle: Battle
    node: Node
    last_seq: int = 0  # the newest seq seen (the snapshot's, then events')
    baseline: int | None = None  # set at the kill: events after it are new
    first_new_at: float | None = None
    first_new_type: str | None = None
    seqs: list[int] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    new_event: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None

    async def run(self) -> None:
        try:
            async with websockets.connect(
                ws_url(self.node.url, f"/ws/battles/{self.battle.room}/spectate"),
                open_timeout=20,
                max_size=2**22,
            ) as conn:
                async for raw in conn:
                    now = time.monotonic()
                    frame = json.loads(raw)
                    if frame.get("type") == "snapshot":
                        self.last_seq = frame["lastSeq"]
                        self.seqs.append(self.last_seq)
                        self.ready.set()
                    elif "seq" in frame:
                        seq = frame["seq"]
                        self.seqs.append(seq)
                        self.last_seq = max(self.last_seq, seq)
                        new = self.baseline is not None and seq > self.baseline
                        if new and self.first_new_at is None:
                            self.first_new_at, self.first_new_type = now, frame["type"]
                            self.new_event.set()
        except (OSError, websockets.WebSocketException) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            self.new_event.set()  # nothing more will come: don't wait for it


# --------------------------------------------------------------------------- 1. takeover


async def failover(
    args: argparse.Namespace,
    nodes: list[Node],
    http: httpx.AsyncClient,
    redis: Redis,
    watch: ClusterWatch,
    pool: list[Agent],
) -> dict[str, Any]:
    say(f"creating {args.battles} battles on the {NODES} nodes in turn")
    battles = await create_battles(http, nodes, pool, args.battles, FAILOVER_SETTINGS)
    say("seating two agents in each (then they leave; turn 1 waits ten minutes)")
    gate = asyncio.Semaphore(8)

    async def seat(battle: Battle) -> None:
        async with gate:
            await seat_and_leave(battle)

    await asyncio.gather(*(seat(b) for b in battles))
    setup_done = time.monotonic()
    holders = await lease_holders(redis, battles)
    by_node = {n.node_id: 0 for n in nodes}
    for battle in battles:
        holder = holders[battle.id]
        if holder is None or holder[0] != battle.creator.node_id:
            raise RuntimeError(f"battle {battle.room} is held by {holder}, not its creator")
        by_node[holder[0]] += 1
    say(f"{len(battles)} battles IN_PROGRESS; owners {by_node}")

    takeovers: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    max_on_one = 0  # the most battles one node ran before a kill
    for r in range(args.kills):
        victim = nodes[r % NODES]
        survivors = [n for n in nodes if n is not victim]
        holders = await lease_holders(redis, battles)
        unowned = [b.room for b in battles if holders[b.id] is None]
        load = [sum(1 for h in holders.values() if h and h[0] == n.node_id) for n in nodes]
        max_on_one = max(max_on_one, *load)
        mine = [b for b in battles if (holders[b.id] or ("", 0))[0] == victim.node_id]
        watchers = [Watcher(b, survivors[i % len(survivors)]) for i, b in enumerate(mine)]
        tasks = [asyncio.create_task(w.run()) for w in watchers]
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(w.ready.wait() for w in watchers))
            broken = [w for w in watchers if w.error]
            if broken:
                raise RuntimeError(f"spectator sockets failed: {broken[0].error}")
            expected = {b.id: watch.expect(b.id, not_from=victim.node_id) for b in mine}
            for w in watchers:
                w.baseline = w.last_seq
            killed_at = time.monotonic()
            victim.kill()
            await victim.reap()
            if expected:
                await asyncio.wait(expected.values(), timeout=TAKEOVER_WAIT_S)
            grace = TAKEOVER_WAIT_S if HAS_RESUMED else 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(w.new_event.wait() for w in watchers))
            now_holders = await lease_holders(redis, mine)
            round_s: list[float] = []
            for battle, w in zip(mine, watchers, strict=True):
                future = expected[battle.id]
                if not future.done():
                    watch.forget(battle.id)
                    failed.append(
                        {"round": r, "room": battle.room, "holder": now_holders[battle.id]}
                    )
                    continue
                owned = future.result()
                taken_s = owned.at - killed_at
                round_s.append(taken_s)
                takeovers.append(
                    {
                        "round": r,
                        "room": battle.room,
                        "from": victim.node_id,
                        "to": owned.sender,
                        "token": owned.token,
                        "owned_s": taken_s,
                        "event_s": None if w.first_new_at is None else w.first_new_at - killed_at,
                        "event_type": w.first_new_type,
                        "lease_matches": now_holders[battle.id] == (owned.sender, owned.token),
                        "spectator_gaps": sum(
                            1 for a, b in zip(w.seqs, w.seqs[1:], strict=False) if b != a + 1
                        ),
                    }
                )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        restart_s = await victim.start(http)
        went = {n.node_id: 0 for n in survivors}
        for t in takeovers:
            if t["round"] == r:
                went[t["to"]] += 1
        rounds.append(
            {
                "round": r,
                "killed": victim.node_id,
                "battles": len(mine),
                "unowned_before": unowned,
                "max_s": max(round_s, default=None),
                "to": went,
                "restart_s": restart_s,
            }
        )
        say(
            f"round {r + 1}/{args.kills}: killed {victim.node_id} owning {len(mine)} battles; "
            + (
                f"taken over in {min(round_s):.2f} to {max(round_s):.2f} s"
                if round_s
                else "nothing to take over"
            )
            + (f", {len(mine) - len(round_s)} NOT taken" if len(round_s) < len(mine) else "")
            + f" (by {', '.join(f'{k} {v}' for k, v in went.items())})"
            + f"; restarted, healthy in {restart_s:.1f} s"
        )

    say("checking every battle: still IN_PROGRESS, event log gap-free")
    not_live: list[str] = []
    gappy: list[str] = []
    after_setup: dict[str, int] = {}
    for i, battle in enumerate(battles):
        node = nodes[i % NODES]
        state = (await http.get(f"{node.url}/api/battles/{battle.room}")).json()
        if state.get("status") != "IN_PROGRESS":
            not_live.append(f"{battle.room}:{state.get('status')}:{state.get('cancelReason')}")
        events = (await http.get(f"{node.url}/api/battles/{battle.room}/events")).json()["events"]
        seqs = [e["seq"] for e in events]
        if not seqs or seqs != list(range(1, len(seqs) + 1)) or seqs[-1] != state.get("lastSeq"):
            gappy.append(battle.room)
        seen_turn = False
        for event in events:  # what happened after turn 1 started (should be nothing)
            if seen_turn:
                after_setup[event["type"]] = after_setup.get(event["type"], 0) + 1
            seen_turn = seen_turn or event["type"] == "turn_started"
    owned_s = [t["owned_s"] for t in takeovers]
    # The new owner's own account (INFO log): from the battle's last lease renewal by the dead
    # node to its acquisition, on Redis's clock; at least kill → acquisition.
    ids = {b.id for b in battles}
    outage_s = [
        int(m[3]) / 1000
        for n in nodes
        for m in TOOK_OVER.finditer(n.log_path.read_text(errors="replace"))
        if m[1] in ids
    ]
    event_s = [t["event_s"] for t in takeovers if t["event_s"] is not None]
    return {
        "battles": len(battles),
        "kills": args.kills,
        "takeovers": len(takeovers),
        "failed_takeovers": failed,
        "owned_s": figures(owned_s),
        "event_s": figures(event_s) if HAS_RESUMED else None,
        "new_events_seen": len(event_s),
        "outage_logged_s": figures(outage_s),
        "resumed_event_exists": HAS_RESUMED,
        "lease_mismatches": sum(1 for t in takeovers if not t["lease_matches"]),
        "spectator_gaps": sum(t["spectator_gaps"] for t in takeovers),
        "one_taker_rounds": sum(
            1 for x in rounds if x["battles"] > 1 and max(x["to"].values()) == x["battles"]
        ),
        "rounds_with_battles": sum(1 for x in rounds if x["battles"] > 1),
        "most_on_one_node": max_on_one,
        "taken_by": {n.node_id: sum(1 for t in takeovers if t["to"] == n.node_id) for n in nodes},
        "not_in_progress": not_live,
        "gappy_logs": gappy,
        "events_after_turn_1": after_setup,
        "seconds_since_setup": time.monotonic() - setup_done,
        "rounds": rounds,
        "takeover_list": takeovers,
    }


# --------------------------------------------------------------------------- 2. turn → ack


@dataclass
class AckPlayer:
    agent: Agent
    battle: Battle
    node: Node
    kind: str
    acks_us: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    final: str | None = None
    close: str | None = None

    async def run(self) -> None:
        sent: dict[str, int] = {}
        url = ws_url(self.node.url, f"/ws/battles/{self.battle.room}/agent")
        try:
            async with websockets.connect(
                url, additional_headers=self.agent.headers(), open_timeout=20, max_size=2**22
            ) as conn:
                async for raw in conn:
                    now = time.perf_counter_ns()
                    frame = json.loads(raw)
                    kind = frame.get("type")
                    if kind == "ack":
                        began = sent.pop(str(frame.get("ref")), None)
                        if began is not None:
                            self.acks_us.append((now - began) // 1000)
                    elif kind == "error":
                        code = str(frame.get("code"))
                        self.errors[code] = self.errors.get(code, 0) + 1
                    elif kind == "turn_started" and frame.get("agentId") == self.agent.id:
                        number = frame["turnNumber"]
                        ref = f"t{number}"
                        content = f"Turn {number} of {self.agent.name}. {TURN_FILLER}"[:500]
                        turn = {"type": "turn", "turnNumber": number, "content": content}
                        body = json.dumps({**turn, "ref": ref})
                        sent[ref] = time.perf_counter_ns()
                        await conn.send(body)
                    elif kind == "state" and frame.get("status") in FINAL:
                        self.final = frame["status"]
                        return
                self.close = f"{conn.close_code} {conn.close_reason}"
        except (OSError, websockets.WebSocketException) as exc:
            self.close = f"{type(exc).__name__}: {exc}"


async def forwarding(
    args: argparse.Namespace,
    nodes: list[Node],
    http: httpx.AsyncClient,
    redis: Redis,
    pool: list[Agent],
) -> dict[str, Any]:
    waves: list[list[AckPlayer]] = []
    for wave in range(args.ack_waves):
        say(
            f"turn → ack{f' (wave {wave + 1}/{args.ack_waves})' if args.ack_waves > 1 else ''}: "
            f"{args.ack_battles} battles, half with agents on the owner, half forwarded"
        )
        battles = await create_battles(http, nodes, pool, args.ack_battles, ACK_SETTINGS)
        holders = await lease_holders(redis, battles)
        players: list[AckPlayer] = []
        for battle in battles:
            holder = holders[battle.id]
            if holder is None or holder[0] != battle.creator.node_id:
                raise RuntimeError(f"battle {battle.room} is held by {holder}, not its creator")
            forwarded = battle.index % 2 == 1  # interleaved: the kinds alternate
            node = nodes[(battle.creator.index + 1) % NODES] if forwarded else battle.creator
            kind = "forwarded" if forwarded else "direct"
            players += [AckPlayer(agent, battle, node, kind) for agent in battle.agents]
        try:
            async with asyncio.timeout(args.ack_timeout_s):
                await asyncio.gather(*(p.run() for p in players))
        except TimeoutError:
            say(f"turn → ack: not every battle finished within {args.ack_timeout_s:g} s")
        waves.append(players)
    result: dict[str, Any] = {
        "battles_at_once": args.ack_battles,
        "waves": args.ack_waves,
        "kinds": {},
    }
    for kind in ("direct", "forwarded"):
        players = [p for wave in waves for p in wave if p.kind == kind]
        hist = benchlib.Histogram()
        errors: dict[str, int] = {}
        for player in players:
            for us in player.acks_us:
                hist.add_us(us)
            for code, count in player.errors.items():
                errors[code] = errors.get(code, 0) + count
        result["kinds"][kind] = {
            "n": hist.n,
            # The histogram answers a bucket's upper edge: never above the largest sample.
            "p50_ms": min(hist.percentile_ms(50), hist.max_us / 1000),
            "p90_ms": min(hist.percentile_ms(90), hist.max_us / 1000),
            "p99_ms": min(hist.percentile_ms(99), hist.max_us / 1000),
            "max_ms": hist.max_us / 1000,
            "errors": errors,
            "unfinished": sum(1 for p in players if p.final != "COMPLETED"),
            "closes": [p.close for p in players if p.close],
            "histogram": hist.sparse(),
        }
    direct, forwarded = result["kinds"]["direct"], result["kinds"]["forwarded"]
    for q in ("p50", "p99"):
        result[f"ratio_{q}"] = forwarded[f"{q}_ms"] / max(direct[f"{q}_ms"], 0.1)
    return result


# --------------------------------------------------------------------------- main


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:,.0f} ms"


def report(taken: dict[str, Any], acks: dict[str, Any]) -> list[str]:
    lines = []
    if taken and not taken["kills"]:
        lines.append(f"takeover: not measured (--kills 0; {taken['battles']} battles stayed live)")
    elif taken:
        owned = taken["owned_s"]
        lines.append(
            f"takeover after kill -9 ({taken['kills']} kills of {NODES} nodes, "
            f"{taken['battles']} live battles, default ARENA_LEASE_MS 5000 / SCAN 1000):"
        )
        if owned["n"]:
            lines.append(
                f"  (a) kill → `owned` by a new node: p50 {ms(owned['p50'])}, "
                f"p99 {ms(owned['p99'])}, max {ms(owned['max'])}, min {ms(owned['min'])} "
                f"(n={owned['n']} takeovers)"
            )
        else:
            lines.append("  (a) kill → `owned` by a new node: no takeover observed")
        if taken["event_s"] is None:
            lines.append(
                "  (b) kill → first new event at a spectator on a surviving node: n/a (this "
                "checkout has no `resumed` event; "
                f"{taken['new_events_seen']} of {taken['takeovers']} takeovers showed any event)"
            )
        elif taken["event_s"]["n"]:
            ev = taken["event_s"]
            lines.append(
                f"  (b) kill → first new event (`resumed`) at a spectator on a surviving node: "
                f"p50 {ms(ev['p50'])}, p99 {ms(ev['p99'])}, max {ms(ev['max'])} (n={ev['n']})"
            )
        else:
            lines.append("  (b) no spectator saw a new event after a takeover")
        outage = taken["outage_logged_s"]
        if outage["n"]:
            lines.append(
                f"  the new owners' logs, last renewal → acquisition (Redis clock): "
                f"p50 {ms(outage['p50'])}, p99 {ms(outage['p99'])}, max {ms(outage['max'])} "
                f"(n={outage['n']})"
            )
        lines.append(
            f"  failed takeovers (no `owned` within {TAKEOVER_WAIT_S:g} s): "
            f"{len(taken['failed_takeovers'])}; lease ≠ announced owner: "
            f"{taken['lease_mismatches']}; spectators' seqs not consecutive: "
            f"{taken['spectator_gaps']}; taken by {taken['taken_by']}"
        )
        lines.append(
            f"  all of a dead node's battles went to one survivor in "
            f"{taken['one_taker_rounds']} of {taken['rounds_with_battles']} rounds; the most "
            f"battles one node ran before a kill: {taken['most_on_one_node']} of "
            f"{taken['battles']}"
        )
        lines.append(
            f"  after all rounds ({taken['seconds_since_setup']:.0f} s): "
            f"{taken['battles'] - len(taken['not_in_progress'])}/{taken['battles']} battles "
            f"IN_PROGRESS, {taken['battles'] - len(taken['gappy_logs'])}/{taken['battles']} "
            f"event logs gap-free; events after turn 1 started: "
            f"{taken['events_after_turn_1'] or 'none'}"
        )
        if taken["not_in_progress"]:
            lines.append(f"  NOT in progress: {', '.join(taken['not_in_progress'][:10])}")
        if taken["gappy_logs"]:
            lines.append(f"  logs with gaps: {', '.join(taken['gappy_logs'][:10])}")
    if acks:
        d, f = acks["kinds"]["direct"], acks["kinds"]["forwarded"]
        lines.append(
            f"agent turn → ack ({acks['battles_at_once']} battles at once"
            + (f", {acks['waves']} waves one after the other" if acks["waves"] > 1 else "")
            + f", {ACK_SETTINGS['maxTurns']} turns each, ~500-character turns answered at once):"
        )
        for name, k in (("direct   ", d), ("forwarded", f)):
            lines.append(
                f"  {name}: p50 {k['p50_ms']:.1f} ms, p90 {k['p90_ms']:.1f} ms, "
                f"p99 {k['p99_ms']:.1f} ms, max {k['max_ms']:.1f} ms (n={k['n']}); "
                f"errors {k['errors'] or 0}; battles not completed {k['unfinished'] // 2}"
            )
        lines.append(
            f"  forwarded / direct: p50 {acks['ratio_p50']:.2f}x, p99 {acks['ratio_p99']:.2f}x "
            f"(target ≤ 1.5x at p99: {'met' if acks['ratio_p99'] <= 1.5 else 'NOT met'})"
        )
    return lines


async def run(args: argparse.Namespace) -> int:
    lines = benchlib.header(
        f"failover and forwarding: {NODES} nodes, {args.battles} battles, {args.kills} kills; "
        f"{args.ack_battles} battles for turn → ack"
    )
    code = checkout()
    lines.append(f"checkout: {code}")
    print("\n".join(lines), flush=True)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        logs = out / "logs"
        logs.mkdir(exist_ok=True)
    else:
        logs = Path(tempfile.mkdtemp(prefix="arena-bench-failover-"))
    say(f"node logs: {logs}")
    taken: dict[str, Any] = {}
    acks: dict[str, Any] = {}
    redis = Redis.from_url(benchlib.REDIS_URL)
    nodes: list[Node] = []
    try:
        async with (
            benchlib.temp_database("arena_failover") as url,
            httpx.AsyncClient(timeout=30) as http,
        ):
            env = benchlib.production_env(
                url,
                ARENA_LOG_LEVEL="INFO",
                ARENA_RECONNECT_GRACE_MS="3600000",
                ARENA_REGISTRATIONS_PER_MINUTE="100000",
            )
            say("arena-rt migrate")
            migrated = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "arena_rt.cli", "migrate"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            if migrated.returncode != 0:
                raise RuntimeError(f"migrate failed: {migrated.stderr[-2000:]}")
            watch = ClusterWatch(benchlib.REDIS_URL, env["ARENA_SECRET"])
            await watch.start()
            try:
                nodes = [Node(i, env, logs) for i in range(NODES)]
                for node in nodes:
                    node.spawn()
                started = await asyncio.gather(*(n.healthy(http) for n in nodes))
                say(
                    "nodes healthy: "
                    + ", ".join(
                        f"{n.node_id} :{n.port} ({s:.1f} s)"
                        for n, s in zip(nodes, started, strict=True)
                    )
                )
                say(f"registering {args.agents} agents")
                pool = await register(http, nodes[0], args.agents)
                taken = await failover(args, nodes, http, redis, watch, pool)
                if args.ack_battles:
                    acks = await forwarding(args, nodes, http, redis, pool)
            finally:
                await watch.stop()
                for node in nodes:
                    node.kill()
                for node in nodes:
                    await node.reap()
                if taken:
                    taken["foreign_cluster_messages"] = watch.foreign
    finally:
        await forget(redis, CREATED)
        await redis.aclose()
    table = report(taken, acks)
    if checkout() != code:
        table.append(
            f"WARNING: the checkout changed during the run ({code} → {checkout()}): nodes "
            "restarted after the change ran other code than the ones before it"
        )
    if taken.get("foreign_cluster_messages"):
        table.append(
            f"note: {taken['foreign_cluster_messages']} messages on the cluster channel were signed"
            " with another key (another cluster on this Redis, e.g. tests running meanwhile);"
            " the nodes logged them as refused"
        )
    print("\n".join(table))
    print(f"node logs: {logs}")
    print(f"load at the end: {benchlib.load_average()}")
    if out is not None:
        (out / "failover.txt").write_text("\n".join([*lines, *table]) + "\n")
        (out / "failover.json").write_text(
            json.dumps(
                {
                    "command": benchlib.command_line(),
                    "header": lines,
                    "takeover": taken,
                    "turn_ack": acks,
                },
                indent=1,
            )
        )
        print(f"figures: {out / 'failover.json'}")
    ok = (
        taken.get("owned_s", {}).get("n", 0) > 0
        and not taken.get("failed_takeovers")
        and not taken.get("not_in_progress")
        and not taken.get("gappy_logs")
    ) or args.kills == 0
    return 0 if ok else 1


async def forget(redis: Redis, battle_ids: list[str]) -> None:
    """Remove this run's battles' keys from the shared Redis (leases lapse by themselves;
    alive marks would stay a week)."""
    keys = [
        f"{prefix}{battle_id}{suffix}"
        for battle_id in battle_ids
        for prefix, suffix in (
            ("arena:owner:", ""),
            ("arena:alive:", ""),
            ("arena:battle:", ":log"),
            ("arena:spectators:", ""),
        )
    ]
    with contextlib.suppress(Exception):
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start : start + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--battles", type=int, default=50, help="live battles for the kills")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 rounds")
    parser.add_argument("--ack-battles", type=int, default=20, help="battles for turn → ack")
    parser.add_argument("--ack-waves", type=int, default=1, help="repeat turn → ack N times")
    parser.add_argument("--ack-timeout-s", type=float, default=180.0)
    parser.add_argument("--agents", type=int, default=12, help="agent pool (bcrypt at signup)")
    parser.add_argument("--out", default=None, help="folder for failover.json and node logs")
    args = parser.parse_args()
    if args.battles < 1 or args.agents < 2 or args.ack_battles % 2:
        parser.error("--battles ≥ 1, --agents ≥ 2, --ack-battles even")
    sys.exit(asyncio.run(stoppable(run(args))))


async def stoppable(work: typing.Coroutine[Any, Any, int]) -> int:
    """``work``, cancelled on SIGTERM or SIGINT: its clean-up (nodes killed, database dropped,
    Redis keys removed) still runs, then the exit code is 130."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        print("interrupted: nodes stopped, database dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    main()
