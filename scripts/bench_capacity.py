"""Capacity benchmark: concurrent idle spectator sockets in one server process, RSS per socket.

Starts ``python -m arena_rt.cli serve`` (production mode: PostgreSQL and Redis, a database of
its own, compression off for every socket as ``serve`` configures it), creates battles
through the API, then opens N spectator sockets from ``--workers`` client processes
(benchlib.Spectator; spread over source addresses 127.0.0.2, .3, … so loopback ports never
run out) and waits until every one has its ``snapshot``. RSS is read from /proc before the
first spectator (after one warm-up spectator per battle, so code paths and per-battle state
exist) and after all N are connected and idle for ``--idle-s``; the difference divided by N is
the memory per socket. The sockets are then checked to be still open.

The file-descriptor limit is raised for this process and the server (RLIMIT_NOFILE, soft and
hard when allowed). Machines here have 2 cores shared with other work.

    .venv/bin/python scripts/bench_capacity.py [--sockets 20000] [--battles 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from benchlib import Spectator, raise_nofile, rss_bytes, source_address


def client_worker(
    conn: Connection, port: int, jobs: list[str], worker: int, concurrency: int, lifetime: float
) -> None:
    """Hold ``jobs`` spectator sockets (paths); report when all are open and on request."""
    raise_nofile(200_000)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready = 0
        lost = 0
        codes: dict[int | None, int] = {}
        specs: list[Spectator] = []
        all_ready = asyncio.Event()
        stop = asyncio.Event()

        def on_ready(_: Spectator) -> None:
            nonlocal ready
            ready += 1
            if ready == len(jobs):
                all_ready.set()

        def on_lost(spec: Spectator) -> None:
            nonlocal lost
            lost += 1
            codes[spec.close_code] = codes.get(spec.close_code, 0) + 1

        sem = asyncio.Semaphore(concurrency)
        failed = 0

        async def open_one(i: int) -> None:
            nonlocal failed
            async with sem:
                for attempt in range(5):
                    try:
                        _, spec = await loop.create_connection(
                            lambda: Spectator(i, 0, lambda *_: None, on_ready, on_lost),
                            "127.0.0.1",
                            port,
                            local_addr=(source_address(worker * 60_000 + i, 20_000), 0),
                        )
                        spec.handshake("127.0.0.1", jobs[i])
                        specs.append(spec)
                        return
                    except OSError:
                        await asyncio.sleep(0.2 * (attempt + 1))
                failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(open_one(i) for i in range(len(jobs))))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(120):
                await all_ready.wait()
        conn.send(("ready", ready, failed, time.perf_counter() - started))

        def wait_stop() -> None:
            conn.recv()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_stop, daemon=True).start()
        await stop.wait()
        open_now = sum(1 for s in specs if s.open)
        conn.send(("status", open_now, lost, {str(k): v for k, v in codes.items()}))
        for spec in specs:
            if spec.transport is not None:
                spec.transport.abort()

    with asyncio.Runner(loop_factory=benchlib.use_uvloop()) as runner:
        runner.run(asyncio.wait_for(main(), lifetime))


def warm_up(port: int, paths: list[str]) -> None:
    """One spectator per battle, connected and closed: per-battle state and code paths exist."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        count = 0

        def on_ready(_: Spectator) -> None:
            nonlocal count
            count += 1
            if count == len(paths):
                done.set()

        specs = []
        for i, path in enumerate(paths):
            _, spec = await loop.create_connection(
                lambda i=i: Spectator(i, 0, lambda *_: None, on_ready, lambda *_: None),
                "127.0.0.1",
                port,
            )
            spec.handshake("127.0.0.1", path)
            specs.append(spec)
        async with asyncio.timeout(30):
            await done.wait()
        for spec in specs:
            spec.transport.close()
        await asyncio.sleep(1)

    asyncio.run(main())


def run(args: argparse.Namespace) -> None:
    lines = benchlib.header("capacity benchmark: idle spectator sockets in one process")
    print("\n".join(lines), flush=True)
    soft = raise_nofile(args.sockets + 10_000)
    print(f"RLIMIT_NOFILE soft limit for the server: {soft}", flush=True)
    with benchlib.migrated_database("arena_capacity") as url, tempfile.TemporaryDirectory() as tmp:
        env = benchlib.production_env(
            url,
            ARENA_REGISTRATIONS_PER_MINUTE="1000",
            ARENA_SPECTATORS_PER_BATTLE=str(max(5000, args.sockets // args.battles + 1)),
        )
        with benchlib.arena_server(env, Path(tmp) / "server.log") as (proc, port):
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=30) as http:
                agent = http.post(
                    "/api/agents", json={"name": f"cap{os.getpid()}", "displayName": "Capacity"}
                )
                agent.raise_for_status()
                key = agent.json()["apiKey"]
                rooms = []
                for _ in range(args.battles):
                    made = http.post(
                        "/api/battles",
                        json={"topic": "capacity"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    made.raise_for_status()
                    rooms.append(made.json()["roomCode"])
            paths = [f"/ws/battles/{room}/spectate" for room in rooms]
            warm_up(port, paths)
            time.sleep(1)
            rss_before = rss_bytes(proc.pid)
            jobs = [paths[i % len(paths)] for i in range(args.sockets)]
            ctx = mp.get_context("spawn")
            workers = []
            started = time.perf_counter()
            lifetime = args.idle_s + 300
            for w in range(args.workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(
                    target=client_worker,
                    args=(
                        child,
                        port,
                        jobs[w :: args.workers],
                        w,
                        args.concurrency // args.workers,
                        lifetime,
                    ),
                    daemon=True,
                )
                p.start()
                workers.append((p, parent))
            ready = failed = 0
            for _, pipe in workers:
                if not pipe.poll(300):
                    raise RuntimeError("a client worker did not finish connecting")
                _, r, f, _ = pipe.recv()
                ready += r
                failed += f
            connect_s = time.perf_counter() - started
            print(
                f"connected: {ready:,} of {args.sockets:,} spectators have their snapshot "
                f"({failed} failed) in {connect_s:.1f} s = {ready / connect_s:,.0f} connects/s",
                flush=True,
            )
            time.sleep(args.idle_s)
            rss_after = rss_bytes(proc.pid)
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            for _, pipe in workers:
                pipe.send("stop")
            still_open = lost = 0
            codes: dict[str, int] = {}
            for p, pipe in workers:
                if pipe.poll(60):
                    _, o, lo, c = pipe.recv()
                    still_open += o
                    lost += lo
                    for k, v in c.items():
                        codes[k] = codes.get(k, 0) + v
                p.join(10)
                if p.is_alive():
                    p.kill()
    per_socket = (rss_after - rss_before) / max(ready, 1)
    print(f"server RSS before : {rss_before / 2**20:8.1f} MiB (after a warm-up socket per battle)")
    print(f"server RSS after  : {rss_after / 2**20:8.1f} MiB with {ready:,} idle spectators")
    print(f"server open fds   : {fds:,}")
    print(
        f"RSS per socket    : {per_socket / 1024:8.1f} KiB  (target ≤ 20 KiB; "
        f"{ready:,} sockets, target ≥ 20,000)"
    )
    print(
        f"after {args.idle_s:g} s idle: {still_open:,} still open, {lost} closed "
        f"(close codes {codes or '-'})"
    )
    print(f"load at the end: {benchlib.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sockets", type=int, default=20_000)
    parser.add_argument("--battles", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=400, help="handshakes in flight")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle time before RSS")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
