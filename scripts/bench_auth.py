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
import importlib.metadata
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import httpx

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


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "unknown"


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(data_dir: Path) -> Iterator[str]:
    """``python -m arena_rt.cli serve``, embedded, in its own process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ARENA_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env["ARENA_DATA_DIR"] = str(data_dir)
    port = free_port()
    log = (data_dir / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arena_rt.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(data_dir / 'server.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in 30 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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
    print()
    print("arena_rt authentication benchmark")
    print(f"  command : {command}")
    print(f"  cwd     : {Path.cwd()}")
    print(f"  date    : {started.isoformat(timespec='seconds')}")
    print(
        f"  machine : nproc={os.cpu_count()}, {cpu_model()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, "
        f"bcrypt {importlib.metadata.version('bcrypt')}"
    )
    print(f"  load    : {load_average()} (1/5/15 min, at the end)")
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
    print(f"total wall time {time.perf_counter() - wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent httpx clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase")
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    asyncio.run(run(parser.parse_args(), command))


if __name__ == "__main__":
    main()
