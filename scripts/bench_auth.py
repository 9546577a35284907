"""Benchmark of agent authentication: bcrypt, cached keys over HTTP, session tokens.

Run: ``.venv/bin/python scripts/bench_auth.py [--clients 16] [--seconds 4]`` (about 40 s).

It measures, on this machine:

1. bcrypt cost-12 ``checkpw`` (what a key costs the first time, or after a rotation);
2. requests/s through a real ``arena-rt serve`` process (embedded configuration in a temporary
   directory) from N concurrent httpx clients, each for a fixed duration:

   * ``POST /api/battles`` with a *cached* API key and an invalid body: the server authenticates
     (key-id lookup + verifier cache hit) and then refuses the body with 400, so nothing is
     written: the cost of authentication plus the request itself. There is no authenticated
     GET in the API; this is the cheapest authenticated request;
   * the same with a session token (signature check + Session row lookup);
   * ``POST /api/battles`` with the cached key and a valid body (201: auth + the battle row
     and its runner, which starts at creation);
   * ``POST /api/battles`` without credentials (401 before any database work): the floor
     cost of a request through this stack;
   * ``GET /api/agents/{id}``, unauthenticated (three SELECTs): the public read the
     authenticated rates are compared to (column "vs GET");

3. session-token verifies/s in this process: ``SessionSigner.verify`` alone, and
   ``SessionStore.verify`` against the same embedded SQLite database.

Not a test: the figures depend on the machine, which is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

from arena_rt.auth import BCRYPT_COST, SessionSigner
from arena_rt.config import load_settings
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.sessions import SessionStore

BCRYPT_CHECKS = 20
WARMUP_S = 1.0


@dataclass
class Rate:
    label: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    statuses: dict[int, int]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


# --------------------------------------------------------------------------- bcrypt


def bench_bcrypt() -> list[float]:
    key = f"ak_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}".encode()
    hashed = bcrypt.hashpw(key, bcrypt.gensalt(rounds=BCRYPT_COST))
    times = []
    for _ in range(BCRYPT_CHECKS):
        start = time.perf_counter()
        assert bcrypt.checkpw(key, hashed)
        times.append((time.perf_counter() - start) * 1000)
    return times


# --------------------------------------------------------------------------- server


@contextlib.contextmanager
def serve(data_dir: Path) -> Iterator[str]:
    """``python -m arena_rt.cli serve``, embedded, in its own process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ARENA_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env["ARENA_DATA_DIR"] = str(data_dir)
    with benchlib.arena_server(env, data_dir / "server.log", healthy_within_s=30) as (_, port):
        yield f"http://127.0.0.1:{port}"


async def drive(
    base: str,
    label: str,
    clients: int,
    seconds: float,
    send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    expect: int,
) -> Rate:
    """``clients`` concurrent httpx clients sending back to back; warm-up, then ``seconds``."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counting = False
    stop = False

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            while not stop:
                start = time.perf_counter()
                response = await send(http)
                elapsed = (time.perf_counter() - start) * 1000
                if counting:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    tasks = [asyncio.create_task(worker()) for _ in range(clients)]
    await asyncio.sleep(WARMUP_S)
    counting = True
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    measured = time.perf_counter() - began
    stop = True
    await asyncio.gather(*tasks)
    unexpected = {s: n for s, n in statuses.items() if s != expect}
    if unexpected:
        raise RuntimeError(f"{label}: unexpected statuses {unexpected} (wanted {expect})")
    return Rate(label, len(latencies), measured, latencies, statuses)


# --------------------------------------------------------------------------- sessions


async def loop_for(seconds: float, call: Callable[[], Awaitable[object]]) -> float:
    count = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            await call()
        count += 50
    return count / (time.perf_counter() - began)


def signer_rate(signer: SessionSigner, token: str, seconds: float) -> float:
    count = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            signer.verify(token)
        count += 1000
    return count / (time.perf_counter() - began)


# --------------------------------------------------------------------------- socket connects

WELCOME_LIKE = (
    '{"type":"welcome","battle":{"id":"'
    + "x" * 25
    + '","roomCode":"ABCDEFGH","topic":"'
    + "t" * 200
    + '"},"sessionToken":"'
    + "s" * 120
    + '","lastSeq":0}'
)


def connect_worker(
    conn: Any, port: int, slots: list[tuple[str, dict[str, str]]], seconds: float, warmup_s: float
) -> None:
    """Each slot connects, waits for the first frame, drops the connection, and again."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counting = False
        stop = False
        latencies: list[float] = []
        errors: dict[str, int] = {}

        async def slot(path: str, headers: dict[str, str]) -> None:
            while not stop:
                done: asyncio.Future[bytes] = loop.create_future()
                request = benchlib.upgrade_request("127.0.0.1", path, headers)
                began = time.perf_counter()
                try:
                    await loop.create_connection(
                        functools.partial(benchlib.Connect, request, done), "127.0.0.1", port
                    )
                    first = await asyncio.wait_for(done, 30)
                    if not first.startswith(b'{"type":"welcome"'):
                        raise RuntimeError(first[:60].decode(errors="replace"))
                except Exception as exc:  # counted and shown: a refused connect is a result
                    if counting:
                        name = f"{type(exc).__name__}: {exc}"[:80]
                        errors[name] = errors.get(name, 0) + 1
                    await asyncio.sleep(0.05)
                    continue
                if counting:
                    latencies.append((time.perf_counter() - began) * 1000)

        tasks = [asyncio.create_task(slot(path, headers)) for path, headers in slots]
        await asyncio.sleep(warmup_s)
        counting = True
        cpu0, began = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        counting = False
        measured, cpu = time.perf_counter() - began, time.process_time() - cpu0
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send((latencies, errors, measured, cpu))

    with asyncio.Runner(loop_factory=benchlib.use_uvloop()) as runner:
        runner.run(main())


def ceiling_ws_server(conn: Any, port: int, lifetime: float) -> None:
    """websockets.asyncio.server on uvloop: accept, send one welcome-sized frame, wait."""
    from websockets.asyncio.server import serve as ws_serve

    async def handler(ws: Any) -> None:
        await ws.send(WELCOME_LIKE)
        await ws.wait_closed()

    async def main() -> None:
        async with ws_serve(handler, "127.0.0.1", port, compression=None, backlog=4096):
            conn.send("ready")
            await asyncio.sleep(lifetime)

    with asyncio.Runner(loop_factory=benchlib.use_uvloop()) as runner:
        runner.run(main())


@dataclass
class ConnectRate:
    label: str
    connects: int
    seconds: float
    latencies_ms: list[float]
    errors: dict[str, int]
    server_cpu: float  # % of one core
    client_cpu: float

    @property
    def per_second(self) -> float:
        return self.connects / self.seconds

    def percentile(self, q: int) -> float:
        if len(self.latencies_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


def drive_connects(
    label: str,
    port: int,
    server_pid: int,
    slots: list[tuple[str, dict[str, str]]],
    args: argparse.Namespace,
) -> ConnectRate:
    ctx = mp.get_context("spawn")
    workers = []
    for w in range(args.socket_workers):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=connect_worker,
            args=(child, port, slots[w :: args.socket_workers], args.socket_seconds, WARMUP_S),
            daemon=True,
        )
        proc.start()
        workers.append((proc, parent))
    time.sleep(WARMUP_S)
    cpu0 = benchlib.cpu_seconds(server_pid)
    t0 = time.perf_counter()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    measured = client_cpu = 0.0
    for proc, pipe in workers:
        if not pipe.poll(args.socket_seconds + 120):
            raise RuntimeError("a connect worker did not report")
        lat, err, secs, cpu = pipe.recv()
        latencies += lat
        for k, v in err.items():
            errors[k] = errors.get(k, 0) + v
        measured = max(measured, secs)
        client_cpu += cpu
        proc.join(10)
    server_cpu = (benchlib.cpu_seconds(server_pid) - cpu0) / (time.perf_counter() - t0) * 100
    return ConnectRate(
        label,
        len(latencies),
        measured,
        latencies,
        errors,
        server_cpu,
        client_cpu / measured * 100,
    )


async def seat_agents(base: str, port: int, agents: int) -> list[tuple[str, dict[str, str]]]:
    """Register agents, one lobby battle each (FREE_FOR_ALL: one seat stays a lobby), seat
    each with its API key, and keep the session token its welcome carries."""
    slots = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for i in range(agents):
            made = await http.post(
                "/api/agents", json={"name": f"conn{os.getpid()}-{i}", "displayName": "C"}
            )
            made.raise_for_status()
            key = made.json()["apiKey"]
            battle = await http.post(
                "/api/battles",
                json={"topic": "connects", "mode": "FREE_FOR_ALL", "maxParticipants": 10},
                headers={"Authorization": f"Bearer {key}"},
            )
            battle.raise_for_status()
            path = f"/ws/battles/{battle.json()['roomCode']}/agent"
            loop = asyncio.get_running_loop()
            done: asyncio.Future[bytes] = loop.create_future()
            request = benchlib.upgrade_request(
                "127.0.0.1", path, {"Authorization": f"Bearer {key}"}
            )
            await loop.create_connection(
                functools.partial(benchlib.Connect, request, done), "127.0.0.1", port
            )
            welcome = json.loads(await asyncio.wait_for(done, 30))
            token = welcome["sessionToken"]
            slots.append((path, {"Authorization": f"Bearer {token}"}))
    return slots


def socket_phase(args: argparse.Namespace) -> tuple[ConnectRate, ConnectRate]:
    """Agent sockets authenticated by session token (production mode) vs the ceiling."""
    benchlib.raise_nofile(65_536)
    with benchlib.migrated_database("arena_connects") as url, tempfile.TemporaryDirectory() as tmp:
        env = benchlib.production_env(url, ARENA_REGISTRATIONS_PER_MINUTE="100000")
        with benchlib.arena_server(env, Path(tmp) / "server.log") as (proc, port):
            base = f"http://127.0.0.1:{port}"
            print(f"seating {args.socket_slots} agents (bcrypt at registration) …", file=sys.stderr)
            slots = asyncio.run(seat_agents(base, port, args.socket_slots))
            print("session-token agent connects …", file=sys.stderr)
            arena = drive_connects(
                "arena_rt agent socket, session token", port, proc.pid, slots, args
            )
    print("ceiling: websockets server connects …", file=sys.stderr)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    port = benchlib.free_port()
    ceiling_proc = ctx.Process(
        target=ceiling_ws_server, args=(child, port, args.socket_seconds + 120), daemon=True
    )
    ceiling_proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("ceiling server did not start")
        parent.recv()
        assert ceiling_proc.pid is not None
        ceiling = drive_connects(
            "websockets server, one frame, no logic", port, ceiling_proc.pid, slots, args
        )
    finally:
        ceiling_proc.kill()
        ceiling_proc.join()
    return arena, ceiling


def bcrypt_parallel(threads: int) -> float:
    """Checks/s with ``threads`` threads at once (bcrypt releases the GIL)."""
    key = f"ak_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}".encode()
    hashed = bcrypt.hashpw(key, bcrypt.gensalt(rounds=BCRYPT_COST))
    per_thread = 4
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda _: [bcrypt.checkpw(key, hashed) for _ in range(per_thread)], range(threads)
            )
        )
    return threads * per_thread / (time.perf_counter() - began)


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, command: str) -> None:
    started = datetime.now(UTC)
    wall = time.perf_counter()
    print("bcrypt cost-12 checks …", file=sys.stderr)
    bcrypt_ms = bench_bcrypt()

    with tempfile.TemporaryDirectory(prefix="bench_auth_") as tmp:
        data_dir = Path(tmp)
        with serve(data_dir) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                name = f"bench-{secrets.token_hex(4)}"
                created = await http.post("/api/agents", json={"name": name, "displayName": "B"})
                created.raise_for_status()
                agent = created.json()
                key: str = agent["apiKey"]
                # The server's settings, read back from the same directory (same secret).
                settings = load_settings({"ARENA_DATA_DIR": str(data_dir)})
                engine = make_engine(settings.database_url)
                signer = SessionSigner(settings.secret.reveal())
                store = SessionStore(
                    make_sessionmaker(engine), signer, settings.timings.session_ttl_s
                )
                token, _ = await store.create(agent["id"])
                # The auth-only request really authenticates before it looks at the body.
                invalid = {"topic": ""}
                wrong = f"ak_{agent['keyId']}_{secrets.token_urlsafe(32)}"
                probe = await http.post(
                    "/api/battles", json=invalid, headers={"Authorization": f"Bearer {wrong}"}
                )
                assert probe.status_code == 401, probe.text
                for credential in (key, token):  # warms the key cache, checks the token works
                    probe = await http.post(
                        "/api/battles",
                        json=invalid,
                        headers={"Authorization": f"Bearer {credential}"},
                    )
                    assert probe.status_code == 400, probe.text

            key_headers = {"Authorization": f"Bearer {key}"}
            token_headers = {"Authorization": f"Bearer {token}"}
            n, secs = args.clients, args.seconds
            phases = [
                (
                    "POST /api/battles, cached API key, 400 (auth only)",
                    lambda h: h.post("/api/battles", json=invalid, headers=key_headers),
                    400,
                    secs,
                ),
                (
                    "POST /api/battles, session token, 400 (auth only)",
                    lambda h: h.post("/api/battles", json=invalid, headers=token_headers),
                    400,
                    secs,
                ),
                (
                    "POST /api/battles, cached API key, 201 (auth + create)",
                    lambda h: h.post("/api/battles", json={"topic": "bench"}, headers=key_headers),
                    201,
                    secs / 2,
                ),
                (
                    "POST /api/battles, no credentials, 401 (no DB)",
                    lambda h: h.post("/api/battles", json=invalid),
                    401,
                    secs / 2,
                ),
                (
                    "GET /api/agents/{id}, no auth (3 SELECTs)",
                    lambda h: h.get(f"/api/agents/{agent['id']}"),
                    200,
                    secs,
                ),
            ]
            rates = []
            for label, send, expect, seconds in phases:
                print(f"{label} …", file=sys.stderr)
                rates.append(await drive(base, label, n, seconds, send, expect))

        print("session verifies in-process …", file=sys.stderr)
        signer_per_s = signer_rate(signer, token, 1.0)
        store_per_s = await loop_for(2.0, lambda: store.verify(token))
        await engine.dispose()

    ceiling = rates[-1].per_second
    print("bcrypt, threads in parallel …", file=sys.stderr)
    bcrypt_threads = {n: bcrypt_parallel(n) for n in (1, os.cpu_count() or 1)}
    sockets: tuple[ConnectRate, ConnectRate] | None = None
    if args.socket_slots > 0:
        sockets = await asyncio.to_thread(socket_phase, args)
    print()
    print("arena_rt authentication benchmark")
    print(f"  command : {command}")
    print(f"  cwd     : {Path.cwd()}")
    print(f"  date    : {started.isoformat(timespec='seconds')}")
    print(
        f"  machine : nproc={os.cpu_count()}, {benchlib.cpu_model()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, "
        f"bcrypt {importlib.metadata.version('bcrypt')}"
    )
    print(f"  load    : {benchlib.load_average()} (1/5/15 min, at the end)")
    print(
        "  note    : shared, noisy machine; the load generator (httpx) runs on the same cores "
        "as the server, so the HTTP rates are lower bounds and only their ratios travel"
    )
    print()
    print(
        f"bcrypt checkpw, cost {BCRYPT_COST}, {len(bcrypt_ms)} checks: "
        f"mean {statistics.fmean(bcrypt_ms):.1f} ms, p50 {statistics.median(bcrypt_ms):.1f} ms, "
        f"p99 {statistics.quantiles(bcrypt_ms, n=100, method='inclusive')[98]:.1f} ms "
        f"(= {1000 / statistics.fmean(bcrypt_ms):.1f} uncached key checks/s per core)"
    )
    print()
    print(
        f"HTTP through `python -m arena_rt.cli serve` (embedded, SQLite), {args.clients} "
        f"concurrent httpx clients, {WARMUP_S:.0f} s warm-up each:"
    )
    width = max(len(r.label) for r in rates)
    print(f"  {'request':<{width}}  {'req/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'vs GET':>6}  n")
    for r in rates:
        print(
            f"  {r.label:<{width}}  {r.per_second:8.0f}  {r.percentile(50):7.1f}  "
            f"{r.percentile(99):7.1f}  {r.per_second / ceiling:6.2f}  {r.requests} "
            f"in {r.seconds:.1f} s"
        )
    print()
    print("session tokens, in this process:")
    print(f"  SessionSigner.verify (HMAC only)                : {signer_per_s:10,.0f} /s")
    print(f"  SessionStore.verify (HMAC + SQLite row, no Redis): {store_per_s:10,.0f} /s")
    print()
    print(
        "bcrypt checks/s with threads at once: "
        + ", ".join(f"{n} thread(s) {rate:.1f}/s" for n, rate in bcrypt_threads.items())
        + f" (ceiling: {os.cpu_count()} cores x the 1-thread rate)"
    )
    if sockets is not None:
        arena, ceiling_rate = sockets
        print()
        print(
            f"Agent socket connects (handshake -> welcome -> drop), {args.socket_slots} agents "
            f"in {args.socket_workers} client processes, {args.socket_seconds:g} s each; "
            "arena_rt in production mode (PostgreSQL + Redis, `python -m arena_rt.cli serve`); "
            "ceiling: websockets.asyncio.server sending one welcome-sized frame, same client:"
        )
        print(
            f"  {'server':<40}  {'connects/s':>10}  {'p50 ms':>7}  {'p99 ms':>7}  "
            f"{'server CPU':>10}  {'client CPU':>10}  errors"
        )
        for r in (arena, ceiling_rate):
            print(
                f"  {r.label:<40}  {r.per_second:10,.0f}  {r.percentile(50):7.1f}  "
                f"{r.percentile(99):7.1f}  {r.server_cpu:9.0f}%  {r.client_cpu:9.0f}%  "
                f"{sum(r.errors.values())} {r.errors or ''}"
            )
        print(
            f"  ratio: {arena.per_second / ceiling_rate.per_second:.2f} of the ceiling "
            "(target: >= 5,000 session-token connects/s)"
        )
    print(f"total wall time {time.perf_counter() - wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent httpx clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase")
    parser.add_argument(
        "--socket-slots", type=int, default=32, help="agents reconnecting at once (0: skip)"
    )
    parser.add_argument("--socket-workers", type=int, default=2, help="client processes")
    parser.add_argument("--socket-seconds", type=float, default=6.0)
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    asyncio.run(run(parser.parse_args(), command))


if __name__ == "__main__":
    main()
