"""The supervisor: owns every runner task of this process for the app's lifetime.

It starts a runner when a battle needs one (created, an agent connects, a vote arrives, at
start-up for battles left live, or when it finds a live battle whose owner's lease lapsed:
failover), holds the battle's ownership lease while it runs, and when a runner crashes it logs
it and cancels that battle cleanly; the server carries on. On a drain it lets every runner
finish what is queued, then hands its battles to the other nodes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

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
from arena_rt.battle.ownership import Holder, LeaseHeld, LocalOwnership, Ownership
from arena_rt.battle.runner import Runner, RunnerDeps
from arena_rt.config import Timings
from arena_rt.errors import ArenaError, Conflict, Unavailable
from arena_rt.protocol import FINAL_STATUSES, ErrorCode, Mode, event_decoder
from arena_rt.store.battle_writes import StepWrite, client_key
from arena_rt.store.events import read_after
from arena_rt.store.models import Battle, Vote, utcnow

log = logging.getLogger("arena_rt.supervisor")

RESUME_SCAN_LIMIT = 10_000
# A battle is adopted by the lease scan only once its creator had time to take its lease.
ADOPT_AFTER = timedelta(seconds=2)
LOCAL_HEARTBEAT_S = 1.0
UNLOADABLE_RETRY_S = 60

# Told to the other nodes: "I run these now" (their agent sessions re-attach here), and
# "take these at once" (a drain handing its battles over).
OwnedHook = Callable[[str, int], Awaitable[None]]
HandoffHook = Callable[[list[str]], Awaitable[None]]


class NotOwner(ArenaError):
    status = 409
    code = ErrorCode.NOT_OWNER

    def __init__(self, battle_id: str, holder: Holder) -> None:
        super().__init__(f"battle {battle_id} is run by node {holder.node_id}")
        self.holder = holder


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
        self._background: list[asyncio.Task[None]] = []
        self._draining = False
        self.on_owned: OwnedHook | None = None
        self.on_handoff: HandoffHook | None = None
        self.count_nodes: Callable[[], Awaitable[int]] | None = None  # live nodes, for shares
        self._lapsed_before: set[str] = set()  # lapsed at the last scan, left to the others
        self._unloadable: dict[str, float] = {}  # battle -> when to try loading it again

    # ----------------------------------------------------------------- lifetime

    async def start(self) -> None:
        """Renew leases, watch for lapsed ones and resume the battles left live, in the
        background: the server serves at once, and a socket for a battle not resumed yet
        loads it on demand (the timers of a battle still loading are not running)."""
        self._background.append(asyncio.create_task(self._renew_leases(), name="arena-leases"))
        self._background.append(
            asyncio.create_task(self._resume_live_battles(), name="arena-resume")
        )
        if self._ownership.lease_ms:
            self._background.append(
                asyncio.create_task(self._watch_leases(), name="arena-lease-watch")
            )

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, timeout_s: float) -> int:
        """Stop taking battles, let every runner finish what it has queued (its commits land
        and are published), release each lease marked for a hand-off and tell the peers to
        claim them now. Returns how many battles were handed over."""
        self._draining = True
        runners = dict(self._runners)
        for runner in runners.values():
            runner.stop_after_queued()
        tasks = [t for b, t in self._tasks.items() if b in runners]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:  # a step stuck on the database: the log is the truth anyway
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        handed = [b for b, r in runners.items() if not machine.is_final(r.state)]
        if handed and self.on_handoff is not None:
            try:
                await self.on_handoff(handed)
            except Exception as exc:  # peers still find them by their lease scan
                log.warning("could not announce the hand-off of %d battles: %s", len(handed), exc)
        log.info("drained: %d live battle(s) handed over", len(handed))
        return len(handed)

    def live(self, battle_id: str) -> Runner | None:
        return self._runners.get(battle_id)

    async def holder(self, battle_id: str) -> Holder | None:
        """Who runs the battle now (None: nobody, or this process in embedded mode)."""
        return await self._ownership.holder(battle_id)

    @property
    def live_count(self) -> int:
        return len(self._runners)

    # ----------------------------------------------------------------- runners

    async def runner_for(self, battle: Battle) -> Runner:
        """This process's runner of the battle, started (and its lease taken) if needed."""
        runner = self._runners.get(battle.id)
        if runner is not None:
            return runner
        if self._draining:
            raise Unavailable("this server is shutting down; connect again")
        lock = self._starting.setdefault(battle.id, asyncio.Lock())
        async with lock:
            runner = self._runners.get(battle.id)
            if runner is not None:
                return runner
            try:
                lease = await self._ownership.acquire(battle.id)
            except LeaseHeld as held:
                raise NotOwner(battle.id, held.holder) from None
            try:
                state = await self._load(battle)
            except BaseException:
                await self._ownership.release(battle.id)
                raise
            if machine.is_final(state):
                await self._ownership.release(battle.id)
                raise Conflict(f"the battle is {state.status.value}", code=ErrorCode.INVALID_STATE)
            runner = Runner(state, self._deps, lease)
            # Loaded seats have no socket yet: start their reconnect grace, as a drop would.
            now = self._deps.clock.now_ms()
            for seat in state.seats:
                runner.submit_internal(Disconnect(seat.agent_id, now))
            self._runners[battle.id] = runner
            self._tasks[battle.id] = asyncio.create_task(
                self._supervise(runner), name=f"battle-{battle.room_code}"
            )
            self._deps.metrics.live_battles.set(len(self._runners))
            if lease.outage_ms:
                log.info(
                    "took over battle %s (token %d) after %d ms without an owner",
                    battle.id,
                    lease.token,
                    lease.outage_ms,
                )
        self._starting.pop(battle.id, None)
        if self.on_owned is not None and state.last_seq:
            try:
                await self.on_owned(battle.id, lease.token)
            except Exception as exc:  # agents' sessions elsewhere re-attach on their next input
                log.warning("could not announce the owner of battle %s: %s", battle.id, exc)
        return runner

    async def adopt(self, battle_id: str) -> bool:
        """Run a battle nobody runs (lapsed lease, hand-off); False when someone else does."""
        if battle_id in self._runners or self._draining:
            return False
        async with self._db() as session:
            battle = await session.get(Battle, battle_id)
        if battle is None or battle.status in {s.value for s in FINAL_STATUSES}:
            return False
        try:
            await self.runner_for(battle)
        except (NotOwner, Unavailable, Conflict):  # taken, draining, or over meanwhile
            return False
        return True

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
            if await self._still_owned(battle_id):
                log.exception("battle runner crashed battle=%s; cancelling the battle", battle_id)
                await self._cancel_after_crash(runner.state)
            else:  # another node runs it now (our write collided with its seq): not ours
                log.exception("battle runner stopped battle=%s: the battle moved", battle_id)
        finally:
            self._runners.pop(battle_id, None)
            self._tasks.pop(battle_id, None)
            self._deps.metrics.live_battles.set(len(self._runners))
            # A battle that is not over goes on elsewhere: mark the hand-off so the next owner
            # extends its timers by milliseconds, not by a whole lease.
            handoff = not machine.is_final(runner.state)
            with contextlib.suppress(Exception):
                await self._ownership.release(battle_id, handoff=handoff)

    async def _still_owned(self, battle_id: str) -> bool:
        """Whether this process still holds the battle's lease (a zombie must not end it)."""
        try:
            return battle_id in await self._ownership.renew([battle_id])
        except Exception:
            return False  # can't tell: leave the battle to whoever holds it

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
        battles = await self._live_battles()
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
        if isinstance(self._ownership, LocalOwnership):
            self._ownership.resumed()

    async def _live_battles(self) -> list[Battle]:
        query = (
            select(Battle)
            .where(Battle.status.not_in([s.value for s in FINAL_STATUSES]))
            .order_by(Battle.created_at)
            .limit(RESUME_SCAN_LIMIT)
        )
        async with self._db() as session:
            return list(await session.scalars(query))

    async def _adoptable_ids(self) -> list[str]:
        """Live battles old enough for their creator to hold their lease: ids only, since
        every node asks every scan and only the few that lapsed are loaded."""
        query = (
            select(Battle.id)
            .where(Battle.status.not_in([s.value for s in FINAL_STATUSES]))
            .where(Battle.created_at < utcnow() - ADOPT_AFTER)
            .limit(RESUME_SCAN_LIMIT)
        )
        async with self._db() as session:
            return list(await session.scalars(query))

    # ----------------------------------------------------------------- leases

    async def _watch_leases(self) -> None:
        """Failover: every node looks for live battles whose owner's lease lapsed and takes
        them (the lease decides which node; the log's unique seq is the last guard)."""
        interval = self._timings.lease_scan_ms / 1000
        while True:
            # Jittered, so the nodes don't all race for the same battles at the same moment.
            await asyncio.sleep(interval * random.uniform(0.5, 1.0))
            try:
                await self.adopt_lapsed()
            except Exception as exc:
                log.warning("lease scan failed (will retry): %s", exc)

    async def adopt_lapsed(self) -> int:
        """Take this node's share of the live battles nobody runs; how many it took."""
        if self._draining:
            return 0
        ids = [i for i in await self._adoptable_ids() if i not in self._runners]
        lapsed_ids = await self._ownership.unowned(ids) if ids else []
        if not lapsed_ids:
            return 0
        async with self._db() as session:
            lapsed = list(await session.scalars(select(Battle).where(Battle.id.in_(lapsed_ids))))
        # A dead node's leases lapse together: take a fair share per round, in an order of our
        # own, so the survivors split its battles rather than the fastest scanner taking all.
        # Whatever nobody took by the next round is taken whole (a share never strands one).
        random.shuffle(lapsed)
        waited = [b for b in lapsed if b.id in self._lapsed_before]
        fresh = [b for b in lapsed if b.id not in self._lapsed_before]
        self._lapsed_before = {b.id for b in fresh}
        nodes = await self._count_nodes() if self.count_nodes is not None and fresh else 1
        share = len(waited) + -(-len(fresh) // max(1, nodes))  # ceil
        taken = 0
        now = time.monotonic()
        self._unloadable = {b: t for b, t in self._unloadable.items() if t > now}
        for battle in [*waited, *fresh]:
            if taken >= share or self._draining:
                break
            if self._unloadable.get(battle.id, 0.0) > now:
                continue
            try:
                await self.runner_for(battle)
                taken += 1
            except (NotOwner, Conflict):
                continue
            except Exception:
                # Not every scan: a battle whose log can't be loaded would flood the log.
                self._unloadable[battle.id] = now + UNLOADABLE_RETRY_S
                log.exception(
                    "could not take over battle %s (next try in %d s)",
                    battle.id,
                    UNLOADABLE_RETRY_S,
                )
        return taken

    async def _count_nodes(self) -> int:
        assert self.count_nodes is not None
        try:
            return await self.count_nodes()
        except Exception:
            return 1  # can't tell: take them all rather than leave them unowned

    async def _renew_leases(self) -> None:
        """One batched renewal of every lease a third of the way into their lifetime (the
        embedded node stamps its heartbeat instead)."""
        lease_ms = self._ownership.lease_ms
        interval = lease_ms / 3000 if lease_ms else LOCAL_HEARTBEAT_S
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
