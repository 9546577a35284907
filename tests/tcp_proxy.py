"""A loopback TCP proxy the test can cut and restore: a real network fault, no fakes.

It runs on its own thread and event loop, so a server process (or a blocking helper such as
``spawn_server``) can use it while the test's loop is busy or blocked. Everything it forwards
is real PostgreSQL or Redis traffic; it only decides when connections stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support import free_port


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.tripped = threading.Event()
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pairs: set[asyncio.StreamWriter] = set()
        self._trip: tuple[bytes, bool, bool] | None = None

    # ----------------------------------------------------------------- control (any thread)

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def close(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        """Close every connection and refuse new ones (connection refused)."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def trip_on(self, marker: bytes, *, forward: bool, then_refuse: bool) -> None:
        """On the next client→server chunk containing ``marker``: forward it (or not), then
        close that connection; with ``then_refuse``, also cut everything until restore()."""
        self.tripped.clear()
        self._trip = (marker, forward, then_refuse)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- the proxy's loop

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._pairs):
            writer.transport.abort()
        self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._pairs.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer, writer, client_side=True),
            self._pump(up_reader, writer, up_writer, client_side=False),
            return_exceptions=True,
        )
        self._pairs.difference_update((writer, up_writer))

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        *,
        client_side: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                trip = self._trip
                if client_side and trip is not None and trip[0] in data:
                    self._trip = None
                    _, forward, then_refuse = trip
                    if forward:
                        writer.write(data)
                        await writer.drain()
                        writer.close()  # FIN after the data: the server reads and runs it
                    else:
                        writer.transport.abort()
                    other.transport.abort()  # the client never hears back
                    if then_refuse:
                        await self._cut()
                    self.tripped.set()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@contextlib.contextmanager
def proxy_to(host: str, port: int) -> Iterator[Proxy]:
    proxy = Proxy(host, port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
