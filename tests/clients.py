"""Socket clients for tests: agents and spectators speaking PROTOCOL.md over real WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

Frame = dict[str, Any]


def ws_url(base_url: str, path: str) -> str:
    return base_url.replace("http://", "ws://", 1) + path


class Client:
    """Collects every frame; tests wait for the ones they need."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[Frame] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.close_code: int | None = None

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                frame = json.loads(raw)
                async with self._arrived:
                    self.frames.append(frame)
                    self._arrived.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.conn.close_code
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, frame: Frame) -> None:
        await self.conn.send(json.dumps(frame))

    async def wait_for(
        self, predicate: Callable[[Frame], bool], timeout: float = 10.0, start: int = 0
    ) -> Frame:
        try:
            async with asyncio.timeout(timeout), self._arrived:
                while True:
                    for frame in self.frames[start:]:
                        if predicate(frame):
                            return frame
                    if self._reader.done():
                        raise AssertionError(
                            f"socket closed ({self.close_code}) before the frame came; "
                            f"last frames: {self.frames[-5:]}"
                        )
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(
                f"no such frame within {timeout}s; last: {self.frames[-5:]}"
            ) from None

    async def wait_type(self, kind: str, timeout: float = 10.0, **fields: Any) -> Frame:
        return await self.wait_for(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout,
        )

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._reader)
        return self.close_code

    def events(self) -> list[Frame]:
        return [f for f in self.frames if "seq" in f]

    async def close(self) -> None:
        await self.conn.close()
        with contextlib.suppress(Exception):
            await self._reader


@contextlib.asynccontextmanager
async def connect(
    base_url: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    conn = await websockets.connect(
        ws_url(base_url, path), additional_headers=headers or {}, open_timeout=10, **kwargs
    )
    client = Client(conn)
    try:
        yield client
    finally:
        await client.close()


def agent_path(room: str, **query: Any) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    return f"/ws/battles/{room}/agent" + (f"?{params}" if params else "")


def spectator_path(room: str, since: int | None = None) -> str:
    return f"/ws/battles/{room}/spectate" + ("" if since is None else f"?since={since}")


class Bot:
    """An agent that plays its turns as they come: the reference behaviour for tests."""

    def __init__(self, client: Client, agent_id: str, say: Callable[[int], str] | None = None):
        self.client = client
        self.agent_id = agent_id
        self.say = say or (lambda n: f"Argument {n} from {agent_id}: evidence and rebuttal.")
        self.acks: dict[int, Frame] = {}
        self._task = asyncio.create_task(self._play())

    async def _play(self) -> None:
        played: set[int] = set()
        index = 0
        while True:
            frame = await self.client.wait_for(lambda f: True, timeout=120, start=index)
            index = self.client.frames.index(frame, index) + 1
            if (
                frame.get("type") == "turn_started"
                and frame["agentId"] == self.agent_id
                and frame["turnNumber"] not in played
            ):
                number = frame["turnNumber"]
                played.add(number)
                await self.client.send(
                    {
                        "type": "turn",
                        "turnNumber": number,
                        "content": self.say(number),
                        "ref": f"t{number}",
                    }
                )
            if frame.get("type") == "state" and frame["status"] in ("COMPLETED", "CANCELLED"):
                return

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssertionError):
            await self._task
