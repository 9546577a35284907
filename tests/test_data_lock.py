"""Embedded mode is one process per data directory, checked with real ``arena-rt`` processes.

A second ``serve`` or ``demo`` on the same SQLite file exits 2 naming the file; ``demo`` keeps
its data in a directory of its own by default, so ``serve`` and ``demo`` started in one
directory run side by side.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import embedded_env
from tests.support import free_port, spawn_server


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("ARENA_DATA_DIR", None)
    return {**env, **extra}


def run_second(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arena_rt.cli", command, "--port", str(free_port())],
        env=_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_second_serve_or_demo_on_the_same_data_dir_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = embedded_env(data)
    with spawn_server(_env(env), tmp_path / "first.log"):
        for command in ("serve", "demo"):
            second = run_second(command, env, tmp_path)
            assert second.returncode == 2, (command, second.stdout, second.stderr)
            assert str(data.resolve() / "arena_rt.db") in second.stderr, second.stderr
            assert "another arena-rt process" in second.stderr, second.stderr


@contextmanager
def process(command: str, cwd: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arena_rt.cli", command, "--port", str(port)],
            env=_env({"ARENA_REGISTRATIONS_PER_MINUTE": "1000"}),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not healthy: {log.read_text()}")


def test_serve_and_demo_in_one_directory_do_not_share_a_database(tmp_path: Path) -> None:
    with process("serve", tmp_path, tmp_path / "serve.log") as (server, server_url):
        wait_healthy(server, server_url, tmp_path / "serve.log")
        with process("demo", tmp_path, tmp_path / "demo.log") as (demo, demo_url):
            wait_healthy(demo, demo_url, tmp_path / "demo.log")
            deadline = time.monotonic() + 20
            while "Watch the battle" not in (tmp_path / "demo.log").read_text():
                assert demo.poll() is None, (tmp_path / "demo.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()
                time.sleep(0.1)
            assert server.poll() is None
            demo_log = (tmp_path / "demo.log").read_text()
            assert str(tmp_path / "arena_rt_demo") in demo_log, demo_log
            # The demo's battle is in its own database, not the server's.
            assert httpx.get(server_url + "/api/battles").json()["battles"] == []
            assert len(httpx.get(demo_url + "/api/battles").json()["battles"]) == 1
    assert (tmp_path / "arena_rt.db").exists()
    assert (tmp_path / "arena_rt_demo" / "arena_rt.db").exists()
    serve_log = (tmp_path / "serve.log").read_text()
    assert "UNIQUE constraint failed" not in serve_log + (tmp_path / "demo.log").read_text()
