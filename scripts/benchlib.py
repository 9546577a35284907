"""Shared pieces of the benchmark suite (scripts/bench_*.py): machine facts, a minimal
WebSocket spectator client, latency histograms, temporary PostgreSQL databases, /proc reads.

The spectator client is deliberately tiny (an ``asyncio.Protocol`` on uvloop with a hand-written
handshake and frame parser, no WebSocket library): at hundreds of thousands of frames per
second the client, not the server, is otherwise the bottleneck on a 2-core machine. It speaks
only RFC 6455 server → client (unmasked frames) and never sends anything after the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import math
import os
import platform
import resource
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("ARENA_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ARENA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BENCH_SECRET = "bench-secret-" + "x" * 40

# --------------------------------------------------------------------------- facts


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


def command_line() -> str:
    exe = os.path.relpath(sys.executable, Path.cwd())
    args = [os.path.relpath(sys.argv[0], Path.cwd()), *sys.argv[1:]]
    return " ".join(shlex.quote(a) for a in [exe, *args])


def header(title: str) -> list[str]:
    """The lines every benchmark prints first: what, how, when, where."""
    return [
        f"# {title}",
        f"command : {command_line()}",
        f"date    : {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"machine : nproc={os.cpu_count()}, {cpu_model()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"load    : {load_average()} (1/5/15 min, at start; the machine is shared and noisy:"
        " compare ratios measured in the same run, not absolute figures)",
    ]


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) to ``want``; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        return want
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- /proc

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


# --------------------------------------------------------------------------- histograms

BUCKET_US = 100  # 0.1 ms resolution
BUCKETS = 20_000  # up to 2 s; beyond goes in the last bucket


class Histogram:
    """Fixed 0.1 ms buckets up to 2 s: exact enough for p99 ≤ 50 ms, mergeable by addition."""

    __slots__ = ("counts", "max_us", "n")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.n = 0
        self.max_us = 0

    def add_us(self, us: int) -> None:
        if us < 0:
            us = 0
        index = us // BUCKET_US
        self.counts[index if index < BUCKETS else BUCKETS - 1] += 1
        self.n += 1
        if us > self.max_us:
            self.max_us = us

    def merge(self, other: Histogram | dict[str, Any]) -> None:
        if isinstance(other, dict):
            counts, n, max_us = other["counts"], other["n"], other["max_us"]
        else:
            counts, n, max_us = other.counts, other.n, other.max_us
        if isinstance(counts, dict):
            for index, count in counts.items():
                self.counts[int(index)] += count
        else:
            for index, count in enumerate(counts):
                if count:
                    self.counts[index] += count
        self.n += n
        self.max_us = max(self.max_us, max_us)

    def sparse(self) -> dict[str, Any]:
        return {
            "counts": {i: c for i, c in enumerate(self.counts) if c},
            "n": self.n,
            "max_us": self.max_us,
        }

    def percentile_ms(self, q: float) -> float:
        if self.n == 0:
            return float("nan")
        rank = max(1, math.ceil(q / 100 * self.n))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return (index + 1) * BUCKET_US / 1000  # upper edge: never optimistic
        return self.max_us / 1000

    def summary(self) -> str:
        return (
            f"p50 {self.percentile_ms(50):.1f} ms, p99 {self.percentile_ms(99):.1f} ms, "
            f"max {self.max_us / 1000:.1f} ms (n={self.n})"
        )


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.asynccontextmanager
async def temp_database(prefix: str = "arena_bench") -> AsyncIterator[str]:
    """A fresh PostgreSQL database (``postgresql+asyncpg://`` URL), dropped afterwards."""
    import asyncpg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + (
            "/" + name
        )
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.contextmanager
def migrated_database(prefix: str = "arena_bench") -> Iterator[str]:
    """A fresh PostgreSQL database at the newest schema, for servers in other processes."""
    import asyncio

    import asyncpg

    from arena_rt.store.db import make_engine
    from arena_rt.store.migrate import upgrade

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def migrate() -> None:
        engine = make_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(migrate())
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def production_env(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without ARENA_* settings, pointed at PostgreSQL + Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
    env.pop("DATABASE_URL_TEST", None)
    env |= {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "ARENA_SECRET": BENCH_SECRET,
        "ARENA_LOG_LEVEL": "WARNING",
    }
    return env | extra


@contextlib.contextmanager
def arena_server(
    env: dict[str, str], log_path: Path, *, healthy_within_s: float = 60
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m arena_rt.cli serve`` in its own process, once ``/healthz`` answers 200:
    ``(process, port)``. Stopped (terminate, then kill) on the way out."""
    import httpx

    port = free_port()
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arena_rt.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + healthy_within_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy in {healthy_within_s:g} s")
            time.sleep(0.2)
        yield proc, port
    finally:
        stop_process(proc, 30)
        log.close()


def stop_process(proc: subprocess.Popen[Any], wait_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``wait_s``."""
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- the client

MARK = b'"content":"T'  # bench events carry content "T<19-digit time_ns>:<4-digit step> ..."
MARK_LEN = len(MARK)


def mark_content(step: int, filler: str, at_ns: int | None = None) -> str:
    return f"T{time.time_ns() if at_ns is None else at_ns:019d}:{step:04d} {filler}"


class Spectator:
    """One spectator socket: handshake, then count and time every marked text frame."""

    __slots__ = (
        "battle",
        "buf",
        "close_code",
        "frames",
        "index",
        "on_frame",
        "on_lost",
        "on_ready",
        "open",
        "ready",
        "transport",
    )

    def __init__(
        self,
        index: int,
        battle: int,
        on_frame: Callable[[Spectator, int, int], None],
        on_ready: Callable[[Spectator], None],
        on_lost: Callable[[Spectator], None],
    ) -> None:
        self.index = index
        self.battle = battle
        self.transport: Any = None
        self.buf = b""
        self.open = False  # handshake done
        self.ready = False  # first frame (snapshot / hello) received
        self.on_frame = on_frame
        self.on_ready = on_ready
        self.on_lost = on_lost
        self.close_code: int | None = None
        self.frames = 0

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def handshake(self, host: str, path: str) -> None:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.transport.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        # The common case first: exactly one whole 126..65535-byte text frame.
        if (
            self.ready
            and not self.buf
            and data[0] == 0x81
            and data[1] == 126
            and (data[2] << 8 | data[3]) + 4 == len(data)
        ):
            at = data.find(MARK, 4, 256)
            if at >= 0:
                at += MARK_LEN
                self.frames += 1
                self.on_frame(
                    self, (now - int(data[at : at + 19])) // 1000, int(data[at + 20 : at + 24])
                )
            return
        buf = self.buf + data if self.buf else data
        pos = 0
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.close_code = -int(buf[9:12] or b"0")
                self.transport.close()
                return
            self.open = True
            pos = end + 4
        size = len(buf)
        find = buf.find
        while size - pos >= 2:
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            start = pos + head
            if opcode == 1:
                if not self.ready:
                    self.ready = True
                    self.on_ready(self)
                else:
                    at = find(MARK, start, end)
                    if at >= 0:
                        at += MARK_LEN
                        self.frames += 1
                        self.on_frame(
                            self,
                            (now - int(buf[at : at + 19])) // 1000,
                            int(buf[at + 20 : at + 24]),
                        )
            elif opcode == 9:  # ping: answer with a (masked, client) pong
                payload = buf[start:end]
                mask = secrets.token_bytes(4)
                masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + mask + masked)
            elif opcode == 8:
                self.close_code = (
                    int.from_bytes(buf[start : start + 2], "big") if length >= 2 else 1005
                )
            pos = end
        self.buf = buf[pos:] if pos < size else b""

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.open = False
        self.on_lost(self)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def source_address(i: int, per_address: int = 10_000) -> str:
    """Spread client sockets over 127.0.0.2, .3, …: each source address has its own
    ephemeral port range, so tens of thousands of loopback sockets never run out of ports."""
    return f"127.0.0.{2 + i // per_address}"


def use_uvloop() -> Callable[[], Any]:
    import uvloop

    return uvloop.new_event_loop


class Connect(asyncio.Protocol):
    """One WebSocket connect: handshake (with extra headers), wait for the first text frame,
    hand it to ``done`` and abort the TCP connection (the server sees the client vanish)."""

    def __init__(self, request: bytes, done: asyncio.Future[bytes]) -> None:
        self.request = request
        self.done = done
        self.buf = b""
        self.open = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._finish(RuntimeError(buf[:40].decode(errors="replace")))
                return
            self.open = True
            buf = buf[end + 4 :]
        if len(buf) >= 2:
            length, head = buf[1] & 0x7F, 2
            if length == 126 and len(buf) >= 4:
                length, head = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127 and len(buf) >= 10:
                length, head = int.from_bytes(buf[2:10], "big"), 10
            if (length < 126 or head > 2) and len(buf) >= head + length:
                self._finish(buf[head : head + length])
                return
        self.buf = buf

    def _finish(self, result: bytes | Exception) -> None:
        if not self.done.done():
            if isinstance(result, Exception):
                self.done.set_exception(result)
            else:
                self.done.set_result(result)
        self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("closed before the first frame"))


def upgrade_request(host: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()
