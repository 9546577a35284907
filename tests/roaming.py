"""An agent as production ones behave: it plays each of its turns after a think time, and when
its socket closes (a drain, a crash, a refusal) it connects again to the next node with
``since`` and sends its unacknowledged turn again. It records what a test checks: acks, errors,
close codes and reasons, and every event by seq (gaps and duplicates counted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.clients import Frame, agent_path, ws_url
from tests.helpers_http import auth

FINAL = ("COMPLETED", "CANCELLED")
RETRY_CODES = ("unavailable",)  # answered to a turn that could not be stored: send it again


@dataclass
class RoamingAgent:
    agent: Frame
    room: str
    nodes: list[str]
    think_s: float = 0.0
    node_index: int = 0
    acks: dict[int, int] = field(default_factory=dict)  # turn number -> seq
    errors: list[Frame] = field(default_factory=list)
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    connected_to: list[str] = field(default_factory=list)
    events: list[Frame] = field(default_factory=list)
    duplicates: int = 0
    gaps: int = 0
    final: str | None = None
    playing: asyncio.Event = field(default_factory=asyncio.Event)  # a turn_started was seen
    _due: dict[int, float] = field(default_factory=dict)  # pending turn -> when to send it
    _sends: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def agent_id(self) -> str:
        return str(self.agent["id"])

    @property
    def last_seq(self) -> int | None:
        return self.events[-1]["seq"] if self.events else None

    async def run(self, timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while self.final is None:
                node = self.nodes[self.node_index % len(self.nodes)]
                try:
                    await self._session(node)
                except websockets.ConnectionClosed as exc:
                    received = exc.rcvd
                    self.closes.append(
                        (received.code, received.reason) if received else (None, str(exc))
                    )
                except (OSError, websockets.InvalidHandshake) as exc:
                    self.closes.append((None, str(exc)))
                for task in self._sends:
                    task.cancel()
                if self.final is None:
                    self.node_index += 1
                    await asyncio.sleep(0.1)

    async def _session(self, node: str) -> None:
        since = self.last_seq
        url = ws_url(node, agent_path(self.room, since=since))
        async with websockets.connect(
            url, additional_headers=auth(self.agent["apiKey"]), open_timeout=10
        ) as conn:
            self.connected_to.append(node)
            loop = asyncio.get_running_loop()
            for number, due in self._due.items():  # unacknowledged turns: again, here
                self._send_at(conn, number, max(0.0, due - loop.time()))
            async for raw in conn:
                self._on_frame(conn, json.loads(raw))
                if self.final is not None:
                    return
            self.closes.append((conn.close_code, conn.close_reason or ""))

    def _on_frame(self, conn: ClientConnection, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "ack" and str(frame.get("ref", "")).startswith("t"):
            number = int(frame["ref"][1:])
            self.acks[number] = frame["seq"]
            self._due.pop(number, None)
            return
        if kind == "error":
            self.errors.append(frame)
            ref = str(frame.get("ref") or "")
            if frame.get("code") in RETRY_CODES and ref.startswith("t"):
                self._send_at(conn, int(ref[1:]), 0.2)
            return
        if kind in ("welcome", "pong") or "seq" not in frame:
            return
        self._on_event(conn, frame)

    def _on_event(self, conn: ClientConnection, event: Frame) -> None:
        last = self.last_seq
        if last is not None and event["seq"] <= last:
            self.duplicates += 1
            return
        if last is not None and event["seq"] != last + 1:
            self.gaps += 1
        self.events.append(event)
        if event["type"] == "turn_started":
            self.playing.set()
        if event["type"] == "turn_started" and event["agentId"] == self.agent_id:
            number = event["turnNumber"]
            if number not in self.acks and number not in self._due:
                self._due[number] = asyncio.get_running_loop().time() + self.think_s
                self._send_at(conn, number, self.think_s)
        if event["type"] == "state" and event["status"] in FINAL:
            self.final = event["status"]

    def _send_at(self, conn: ClientConnection, number: int, delay: float) -> None:
        async def send() -> None:
            await asyncio.sleep(delay)
            if number in self._due:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await conn.send(json.dumps(self.turn(number)))

        task = asyncio.create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def turn(self, number: int) -> dict[str, Any]:
        content = f"Turn {number} of {self.agent['name']}: a claim, its evidence, a rebuttal."
        return {"type": "turn", "turnNumber": number, "content": content, "ref": f"t{number}"}
