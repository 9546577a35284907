"""The supervisor: owns every runner task of this process for the app's lifetime.

It starts a runner when a battle needs one (created, an agent connects, a vote arrives, or at
start-up for battles left live), holds the battle's ownership lease while it runs, and when a
runner crashes it logs it and cancels that battle cleanly; the server carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.battle import machine
from arena_rt.battle.domain import (
    BattleConfig,
    BattleState,
    Cancel,
    Disconnect,
    Emit,
    VoteRecord,
)
from arena_rt.battle.log import fold
from arena_rt.battle.ownership import Ownership
from arena_rt.battle.runner import Runner, RunnerDeps
from arena_rt.config import Timings
from arena_rt.errors import ArenaError, Conflict
from arena_rt.protocol import FINAL_STATUSES, ErrorCode, Mode, event_decoder
from arena_rt.store.battle_writes import StepWrite, client_key
from arena_rt.store.events import read_after
from arena_rt.store.models import Battle, Vote

log = logging.getLogger("arena_rt.supervisor")

RESUME_SCAN_LIMIT = 10_000


class NotOwner(ArenaError):
    status = 409
    code = ErrorCode.NOT_OWNER

    def __init__(self, battle_id: str, owner: str) -> None:
        super().__init__(f"battle {battle_id} is run by node {owner}; connect there")
        self.owner = owner


def config_of(battle: Battle, timings: Timings) -> BattleConfig:
    return BattleConfig(
        battle_id=battle.id,
        room_code=battle.room_code,
        topic=battle.topic,
        mode=Mode(battle.mode),
        max_participants=battle.max_participants,
        turn_duration_ms=battle.turn_duration_ms,
        max_turns=battle.max_turns,
        start_delay_ms=battle.start_delay_ms,
        vote_duration_ms=battle.vote_duration_ms,
        enable_judge=battle.enable_judge,
        enable_commentator=battle.enable_commentator,
        lobby_timeout_ms=timings.lobby_timeout_ms,
        reconnect_grace_ms=timings.reconnect_grace_ms,
        judge_timeout_ms=timings.judge_timeout_ms,
    )


class Supervisor:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        deps: RunnerDeps,
        ownership: Ownership,
        timings: Timings,
    ) -> None:
        self._db = db
        self._deps = deps
        self._ownership = ownership
        self._timings = timings
        self._runners: dict[str, Runner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._renewer: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifetime

    async def start(self) -> None:
        if self._ownership.lease_ms:
            self._renewer = asyncio.create_task(self._renew_leases(), name="arena-lease-renewer")
        await self._resume_live_battles()

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def live(self, battle_id: str) -> Runner | None:
        return self._runners.get(battle_id)

    @property
    def live_count(self) -> int:
        return len(self._runners)

    # ----------------------------------------------------------------- runners

    async def runner_for(self, battle: Battle) -> Runner:
        """This process's runner of the battle, started (and its lease taken) if needed."""
        runner = self._runners.get(battle.id)
        if runner is not None:
            return runner
        lock = self._starting.setdefault(battle.id, asyncio.Lock())
        async with lock:
            runner = self._runners.get(battle.id)
            if runner is not None:
                return runner
            owner = await self._ownership.acquire(battle.id)
            if owner is not None:
                raise NotOwner(battle.id, owner)
            try:
                state = await self._load(battle)
            except BaseException:
                await self._ownership.release(battle.id)
                raise
            if machine.is_final(state):
                await self._ownership.release(battle.id)
                raise Conflict(f"the battle is {state.status.value}", code=ErrorCode.INVALID_STATE)
            runner = Runner(state, self._deps)
            # Loaded seats have no socket yet: start their reconnect grace, as a drop would.
            now = self._deps.clock.now_ms()
            for seat in state.seats:
                runner.submit_internal(Disconnect(seat.agent_id, now))
            self._runners[battle.id] = runner
            self._tasks[battle.id] = asyncio.create_task(
                self._supervise(runner), name=f"battle-{battle.room_code}"
            )
            self._deps.metrics.live_battles.set(len(self._runners))
        self._starting.pop(battle.id, None)
        return runner

    async def _load(self, battle: Battle) -> BattleState:
        config = config_of(battle, self._timings)
        records = await read_after(self._db, battle.id, 0)
        async with self._db() as session:
            # Cast order, as the live path applied them (ties within one commit: by id).
            rows = await session.scalars(
                select(Vote).where(Vote.battle_id == battle.id).order_by(Vote.created_at, Vote.id)
            )
            votes = [
                VoteRecord(client_key(v.idempotency_key), v.voter_id, None, v.target_agent_id)
                for v in rows
            ]
        return fold(config, (event_decoder.decode(data) for _, data in records), votes)

    async def _supervise(self, runner: Runner) -> None:
        battle_id = runner.battle_id
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("battle runner crashed battle=%s; cancelling the battle", battle_id)
            await self._cancel_after_crash(runner.state)
        finally:
            self._runners.pop(battle_id, None)
            self._tasks.pop(battle_id, None)
            self._deps.metrics.live_battles.set(len(self._runners))
            with contextlib.suppress(Exception):
                await self._ownership.release(battle_id)

    async def _cancel_after_crash(self, state: BattleState) -> None:
        if state.status in FINAL_STATUSES:
            return
        _, effects = machine.step(state, Cancel("internal error", self._deps.clock.now_ms()))
        events = [e.event for e in effects if isinstance(e, Emit)]
        write = StepWrite.of(state.config.battle_id, events, [], {})
        try:
            await self._deps.committer.commit(write)
            for event, data in zip(events, write.encoded, strict=True):
                await self._deps.bus.publish(state.config.battle_id, event.seq, data)
        except Exception:
            log.exception(
                "could not cancel battle %s after its runner crashed", state.config.battle_id
            )

    async def _resume_live_battles(self) -> None:
        async with self._db() as session:
            battles = list(
                await session.scalars(
                    select(Battle)
                    .where(Battle.status.not_in([s.value for s in FINAL_STATUSES]))
                    .order_by(Battle.created_at)
                    .limit(RESUME_SCAN_LIMIT)
                )
            )
        resumed = 0
        for battle in battles:
            try:
                await self.runner_for(battle)
                resumed += 1
            except NotOwner:
                continue
            except Exception:
                log.exception("could not resume battle %s", battle.id)
        if resumed:
            log.info("resumed %d live battle(s) from the event log", resumed)

    async def _renew_leases(self) -> None:
        """One batched renewal of every lease a third of the way into their lifetime."""
        interval = self._ownership.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            runners = dict(self._runners)
            try:
                held = await self._ownership.renew(list(runners))
            except Exception:
                log.warning("lease renewal failed for %d battles (will retry)", len(runners))
                continue
            for battle_id, runner in runners.items():
                # A runner that finished meanwhile released its lease: nothing was lost.
                if battle_id in held or self._runners.get(battle_id) is not runner:
                    continue
                log.error(
                    "lost the lease of battle %s to another node; stopping its runner", battle_id
                )
                task = self._tasks.get(battle_id)
                if task is not None:
                    task.cancel()
