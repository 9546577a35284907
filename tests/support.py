"""Test helpers: real servers on free ports, real databases, unique names."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from arena_rt.config import Settings, load_settings
from arena_rt.web.app import create_app

TEST_SECRET = "test-secret-" + "x" * 40

# Every spawned server's log, so a failing test's report can show what the servers said.
SPAWNED_LOGS: list[Path] = []


def unique(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(env: Mapping[str, str]) -> Settings:
    return load_settings(dict(env))


@contextlib.asynccontextmanager
async def run_server(settings: Settings) -> AsyncIterator[str]:
    """The real app under uvicorn on a free loopback port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_config=None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("server exited during start-up")
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@dataclass
class Node:
    """An ``arena-rt serve`` process of a test: its URL, its process, its log."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    node_id: str  # ARENA_NODE_ID, when the test set it

    def kill(self) -> None:
        """kill -9: no drain, no goodbye (what a crash or an OOM kill does)."""
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as a deploy does; its exit code once it has drained and stopped."""
        self.proc.terminate()
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def spawn_node(env: Mapping[str, str], log_path: Path, port: int | None = None) -> Iterator[Node]:
    """``arena-rt serve`` as a separate OS process, once its /healthz is 200."""
    port = port or free_port()
    full_env = {**os.environ, **env}
    SPAWNED_LOGS.append(log_path)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arena_rt.cli", "serve", "--port", str(port)],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become healthy: {log_path.read_text()}")
            time.sleep(0.1)
        yield Node(base, proc, log_path, env.get("ARENA_NODE_ID", ""))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def spawn_server(env: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """``arena-rt serve`` as a separate OS process; yields its base URL once /healthz is 200."""
    with spawn_node(env, log_path) as node:
        yield node.url
