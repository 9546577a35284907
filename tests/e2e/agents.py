"""Test agents for the browser tests: real agent sockets (PROTOCOL.md 2.1) that remember when
each turn was acked, and that come back with ``since`` after their server restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import websockets

from tests.clients import ws_url


def now_ms() -> float:
    return time.time() * 1000


class PlayingAgent:
    """Plays every turn it is given after ``think_s``; records ``acks[turn] = wall-clock ms``.

    It connects with ``since=0`` and so sees every event of the battle. With ``reconnect=True``
    a dropped socket is reopened (every 0.2 s) with ``since`` set to the last event it saw, and
    any turn of its own that is still open is sent again (the server acks a repeat with the
    same seq and stores it once).
    """

    def __init__(
        self,
        base_url: str,
        room: str,
        api_key: str,
        agent_id: str,
        say: Callable[[int], str],
        *,
        think_s: float = 0.0,
        reconnect: bool = False,
    ) -> None:
        self.base_url = base_url
        self.room = room
        self.api_key = api_key
        self.agent_id = agent_id
        self.say = say
        self.think_s = think_s
        self.reconnect = reconnect
        self.acks: dict[int, float] = {}
        self.ack_seqs: dict[int, int] = {}
        self.open_turns: set[int] = set()
        self.last_seq = 0
        self.errors: list[dict[str, Any]] = []
        self.connections = 0
        self.finished = asyncio.Event()
        self.welcomed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._plays: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"agent-{self.agent_id}")

    async def wait_welcomed(self, timeout: float = 10) -> None:
        await self._wait(self.welcomed, timeout)

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        """Wait for ``event``; if the agent's task fails first, raise its error instead."""
        assert self._task is not None
        waiter = asyncio.ensure_future(event.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if event.is_set():
            return
        if self._task in done:
            self._task.result()  # raises what stopped the agent
            raise AssertionError(f"agent {self.agent_id} stopped early")
        raise AssertionError(f"agent {self.agent_id}: nothing within {timeout}s")

    async def _run(self) -> None:
        while not self.finished.is_set():
            # Always with `since` (0 at first): without it the server starts after the welcome's
            # lastSeq, read after the join, and a turn_started committed in between (second seat,
            # startDelayMs=0, a quick first speaker) would never reach this agent.
            query = f"?since={self.last_seq}"
            url = ws_url(self.base_url, f"/ws/battles/{self.room}/agent{query}")
            try:
                async with websockets.connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self.api_key}"},
                    open_timeout=5,
                ) as ws:
                    self.connections += 1
                    await self._serve(ws)
            except (OSError, websockets.WebSocketException, TimeoutError):
                if not self.reconnect:
                    raise
            if not self.finished.is_set():
                if not self.reconnect:
                    raise AssertionError(f"agent {self.agent_id}: socket closed mid-battle")
                await asyncio.sleep(0.2)

    async def _serve(self, ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "welcome":
                self.welcomed.set()
                for number in sorted(self.open_turns):  # anything unanswered before a drop
                    self._play(ws, number, delay=0)
                continue
            if kind == "error":
                self.errors.append(frame)
                continue
            if kind == "ack":
                ref = frame.get("ref") or ""
                if ref.startswith("t") and frame.get("seq") is not None:
                    number = int(ref[1:])
                    self.acks.setdefault(number, now_ms())
                    self.ack_seqs.setdefault(number, frame["seq"])
                continue
            seq = frame.get("seq")
            if isinstance(seq, int):
                self.last_seq = max(self.last_seq, seq)
            mine = frame.get("agentId") == self.agent_id
            if kind == "turn_started" and mine:
                self.open_turns.add(frame["turnNumber"])
                self._play(ws, frame["turnNumber"], delay=self.think_s)
            elif kind in ("turn", "turn_skipped") and mine:
                self.open_turns.discard(frame["turnNumber"])
            elif kind == "state" and frame["status"] in ("COMPLETED", "CANCELLED"):
                self.finished.set()
                return

    def _play(self, ws: Any, number: int, delay: float) -> None:
        async def play() -> None:
            await asyncio.sleep(delay)
            if number not in self.open_turns:
                return
            frame = {"type": "turn", "turnNumber": number, "content": self.say(number)}
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps({**frame, "ref": f"t{number}"}))

        task = asyncio.create_task(play())
        self._plays.add(task)
        task.add_done_callback(self._plays.discard)

    async def wait_finished(self, timeout: float = 60) -> None:
        await self._wait(self.finished, timeout)

    async def stop(self) -> None:
        for task in [self._task, *self._plays]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._plays]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def arguments(agent_label: str) -> Callable[[int], str]:
    """Plain, distinct turn texts, so every turn can be found on the page."""
    return lambda n: f"{agent_label} argues point {n}: evidence, a rebuttal and a closing line."
