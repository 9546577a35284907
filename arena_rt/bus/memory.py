"""The in-process bus: the embedded default (one server process, no Redis)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Sequence

from arena_rt.bus.base import (
    DEFAULT_HISTORY_SIZE,
    Bus,
    MessageHandler,
    ReconnectHandler,
    contiguous_after,
)

__all__ = ["DEFAULT_MAX_BATTLES", "MemoryBus"]

DEFAULT_MAX_BATTLES = 10_000


class MemoryBus(Bus):
    """Delivers synchronously inside ``publish`` and keeps a bounded deque per battle.

    Histories are bounded twice: ``history_size`` events per battle, and ``max_battles`` battles
    (the least recently published one is forgotten first; the database still has it).
    The bus owns no task and no connection, so it never reports a reconnect.
    """

    def __init__(
        self,
        on_message: MessageHandler | None = None,
        *,
        on_reconnect: ReconnectHandler | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        max_battles: int = DEFAULT_MAX_BATTLES,
    ) -> None:
        super().__init__(on_message, on_reconnect=on_reconnect, history_size=history_size)
        if max_battles < 1:
            raise ValueError("max_battles must be at least 1")
        self._max_battles = max_battles
        self._logs: OrderedDict[str, deque[tuple[int, bytes]]] = OrderedDict()

    async def _start(self) -> None:
        self._logs.clear()

    async def _stop(self) -> None:
        self._logs.clear()

    async def _publish(self, battle_id: str, seq: int, data: bytes) -> None:
        self._store(battle_id, seq, data)
        if battle_id in self._subscriptions:
            self._emit(battle_id, seq, data)

    def publish_soon(
        self, battle_id: str, events: Sequence[tuple[int, bytes]]
    ) -> asyncio.Future[None]:
        # Nothing to wait for in-process: published now, in call order by construction.
        self._check_started()
        for seq, data in events:
            self._store(battle_id, seq, data)
        if battle_id in self._subscriptions:
            self._emit_step(battle_id, events)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _store(self, battle_id: str, seq: int, data: bytes) -> None:
        log = self._logs.get(battle_id)
        if log is None:
            log = self._logs[battle_id] = deque(maxlen=self.history_size)
            while len(self._logs) > self._max_battles:
                self._logs.popitem(last=False)
        else:
            self._logs.move_to_end(battle_id)
        # Like the Redis stream: the history only ever grows in seq (a repeat is not stored
        # twice), but the message itself is delivered (the hub drops what it already has).
        if not log or seq > log[-1][0]:
            log.append((seq, data))

    async def _history(self, battle_id: str, after_seq: int) -> list[tuple[int, bytes]] | None:
        log = self._logs.get(battle_id)
        if not log:
            return None
        return contiguous_after(log, after_seq, have_any=True)

    async def _subscribe(self, battle_id: str) -> None:
        return None

    async def _unsubscribe(self, battle_id: str) -> None:
        return None

    async def _ping(self) -> None:
        return None
