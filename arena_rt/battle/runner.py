"""The runner: one task per live battle, the only writer of its battle.

It feeds inputs to the pure machine one at a time and performs the effects in order:
persist (group commit) → publish → reply → timers → judge/commentator beside it. State only
advances once the step is durable; a step that cannot be persisted stops the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from arena_rt.battle import machine
from arena_rt.battle.clock import Clock, TimerHandle
from arena_rt.battle.committer import Committer
from arena_rt.battle.domain import (
    ArmTimer,
    BattleState,
    CancelTimer,
    CommentaryReady,
    Effect,
    Emit,
    Input,
    JudgeAnswered,
    JudgeFailed,
    Opened,
    RecordVote,
    ReplyAck,
    ReplyError,
    RequestCommentary,
    RequestJudge,
    TimerFired,
)
from arena_rt.battle.intelligence import Commentator, Judge, Verdict
from arena_rt.battle.ownership import Lease
from arena_rt.bus import Bus
from arena_rt.errors import Unavailable
from arena_rt.metrics import Metrics
from arena_rt.store.battle_writes import StepWrite

log = logging.getLogger("arena_rt.runner")

Reply = ReplyAck | ReplyError
MAX_PENDING_INPUTS = 1_000


class Peer(Protocol):
    """An agent's socket as the runner knows it: here or on another node."""

    id: str

    def kick(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RunnerDeps:
    committer: Committer
    bus: Bus
    clock: Clock
    judge: Judge
    commentator: Commentator
    metrics: Metrics
    commentary_timeout_s: float = 10.0


class Busy(Exception):
    """The battle's input queue is full; the client should retry."""


class RunnerStopped(Unavailable):
    """The battle's runner has stopped (finished, crashed or shut down): no answer will come."""


PUBLISH_WAIT_S = 5.0  # how long a stopping runner waits for its last events to reach the bus
_STOP = object()  # in the inbox: end the loop after the steps queued before it


class Runner:
    def __init__(self, state: BattleState, deps: RunnerDeps, lease: Lease | None = None) -> None:
        self.state = state
        self._deps = deps
        self.lease = lease or Lease(0, 0)  # the fencing token it runs under; the outage before
        self._inbox: asyncio.Queue[tuple[Any, asyncio.Future[Reply] | None]] = asyncio.Queue()
        self._timers: dict[str, TimerHandle] = {}
        self._agents: dict[str, Peer] = {}
        self._helpers: set[asyncio.Task[None]] = set()
        self.finished = asyncio.Event()
        self._stepping = False  # a step is being committed or published
        self._holding_timers = False  # the database is unreachable: timers wait for it
        self._last_publish: asyncio.Future[None] | None = None  # the bus publishes in order

    @property
    def battle_id(self) -> str:
        return self.state.config.battle_id

    @property
    def settled_seq(self) -> int | None:
        """The last seq, when every event up to it is committed and published and no step is
        in flight (the next event will be published after now); else None."""
        return None if self._stepping else self.state.last_seq

    # ----------------------------------------------------------------- inputs from outside

    def attach_agent(self, agent_id: str, peer: Peer) -> Peer | None:
        """Make ``peer`` the agent's socket; returns the one it replaces (to close with 4000)."""
        previous = self._agents.get(agent_id)
        self._agents[agent_id] = peer
        # The same socket attaching again (a session re-attaching after a takeover) is no
        # replacement: compare by id, a forwarded socket is a new proxy object each time.
        return previous if previous is not None and previous.id != peer.id else None

    def detach_agent(self, agent_id: str, peer_id: str) -> bool:
        """True when ``peer_id`` was still the agent's socket (so the agent is now away)."""
        current = self._agents.get(agent_id)
        if current is not None and current.id == peer_id:
            del self._agents[agent_id]
            return True
        return False

    async def call(self, inp: Input) -> Reply | None:
        """Queue a client's input and wait for its reply (None when the machine gave none).
        Refused at once while the database can't be reached: it could not be stored."""
        if self.finished.is_set():
            raise RunnerStopped("the battle is not running")
        if not self._deps.committer.available:
            raise Unavailable("the database is unreachable; send it again shortly")
        if self._inbox.qsize() >= MAX_PENDING_INPUTS:
            raise Busy("battle is busy; retry shortly")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait((inp, future))
        return await future

    def submit_internal(self, inp: Input) -> None:
        """Timers, helper answers, disconnects: a handful per battle at most, never refused."""
        self._inbox.put_nowait((inp, None))

    def stop_after_queued(self) -> None:
        """End the run once the inputs queued so far are stepped, committed and published (a
        drain: nothing in flight is lost, the next owner carries on from the log)."""
        self._inbox.put_nowait((_STOP, None))

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        try:
            opened = Opened(self._deps.clock.now_ms(), outage_ms=self.lease.outage_ms)
            await self._handle(opened, None)
            while not machine.is_final(self.state):
                inp, future = await self._inbox.get()
                if inp is _STOP:
                    break
                try:
                    await self._handle(inp, future)
                except BaseException:
                    if future is not None and not future.done():
                        future.set_exception(RunnerStopped("the battle stopped on this input"))
                    raise
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        helpers = list(self._helpers)
        for task in helpers:
            task.cancel()
        # Helpers only ever await providers; they end at the cancel. Wait so none outlives us.
        await asyncio.gather(*helpers, return_exceptions=True)
        if self._last_publish is not None:
            # Out before the lease goes: the next owner's events must follow ours on the bus.
            with contextlib.suppress(Exception):  # a failure was logged by _published
                await asyncio.wait_for(asyncio.shield(self._last_publish), PUBLISH_WAIT_S)
        self.finished.set()
        while not self._inbox.empty():
            _, future = self._inbox.get_nowait()
            # A client input nobody will step (a drain, a stop): its caller asks again
            # wherever the battle runs now.
            if future is not None and not future.done():
                future.set_exception(RunnerStopped("the battle is not running"))

    async def _handle(self, inp: Input, future: asyncio.Future[Reply] | None) -> None:
        self._stepping = True
        try:
            await self._step(inp, future)
        finally:
            self._stepping = False

    async def _step(self, inp: Input, future: asyncio.Future[Reply] | None) -> None:
        state, effects = machine.step(self.state, inp)
        events = [e.event for e in effects if isinstance(e, Emit)]
        votes = [e.vote for e in effects if isinstance(e, RecordVote)]
        if events or votes:
            seats = {s.agent_id: s.team_id for s in state.seats}
            details = inp.details if isinstance(inp, JudgeAnswered) else None
            write = StepWrite.of(
                self.battle_id, events, votes, seats, mode=state.config.mode, judge_details=details
            )
            await self._deps.committer.commit(write)  # CommitError stops this runner
            # The writer may complete events (ratings in the result): publish what it stored.
            self._publish(
                [(event.seq, data) for event, data in zip(write.events, write.encoded, strict=True)]
            )
        self.state = state
        for effect in effects:
            self._perform(effect, future)
        if future is not None and not future.done():
            future.cancel()

    def _publish(self, events: list[tuple[int, bytes]]) -> None:
        """Hand the step's events to the bus and go on: they are durable already, and the bus
        publishes steps in the order they were handed over."""
        if not events:
            return
        try:
            published = self._deps.bus.publish_soon(self.battle_id, events)
        except Exception:
            log.exception("publish failed battle=%s seqs=%s", self.battle_id, events[0][0])
            return
        published.add_done_callback(functools.partial(self._published, first_seq=events[0][0]))
        self._last_publish = published

    def _published(self, published: asyncio.Future[None], first_seq: int) -> None:
        if not published.cancelled() and published.exception() is not None:
            # Durable already; subscribers fill the gap from the log on the next event.
            log.error(
                "publish failed battle=%s seqs=%s: %s",
                self.battle_id,
                first_seq,
                published.exception(),
            )

    def _perform(self, effect: Effect, future: asyncio.Future[Reply] | None) -> None:
        match effect:
            case ReplyAck() | ReplyError():
                if future is not None and not future.done():
                    future.set_result(effect)
            case ArmTimer(name=name, fire_at=fire_at):
                self._cancel_timer(name)
                self._timers[name] = self._deps.clock.call_at(
                    fire_at, functools.partial(self._timer_fired, due=fire_at), name
                )
            case CancelTimer(name=name):
                self._cancel_timer(name)
            case RequestCommentary():
                self._spawn(self._comment(effect))
            case RequestJudge():
                self._spawn(self._judge(effect))
            case Emit() | RecordVote():
                pass  # persisted above

    # ----------------------------------------------------------------- timers and helpers

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _timer_fired(self, name: str, due: int) -> None:
        self._timers.pop(name, None)
        if not self._deps.committer.available:
            # The database is unreachable: a turn that ran out meanwhile could not have been
            # stored. Hold the battle's timers (the machine still has them) until it is back.
            self._hold_timers()
            return
        # Event loops fire timers up to their clock resolution early, and wall time may step:
        # never report a time before the deadline, or the machine would take it as stale.
        self.submit_internal(TimerFired(name, max(self._deps.clock.now_ms(), due)))

    def _hold_timers(self) -> None:
        if not self._holding_timers:
            self._holding_timers = True
            self._spawn(self._resume_after_outage())

    async def _resume_after_outage(self) -> None:
        """Once the database answers, take charge again as after a takeover: every held timer
        is armed again, the running deadline extended by the outage (a ``resumed`` event)."""
        committer = self._deps.committer
        await committer.wait_available()
        self._holding_timers = False
        now = self._deps.clock.now_ms()
        outage = max(0, now - committer.unreachable_since_ms)
        self.submit_internal(Opened(now, outage_ms=outage))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def _comment(self, request: RequestCommentary) -> None:
        try:
            async with asyncio.timeout(self._deps.commentary_timeout_s):
                text = await self._deps.commentator.comment(self.state.config, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._deps.metrics.ai_failures.labels("commentator").inc()
            log.warning(
                "commentary skipped battle=%s turn=%d: %r", self.battle_id, request.turn_number, exc
            )
            return
        self.submit_internal(CommentaryReady(request.turn_number, text, self._deps.clock.now_ms()))

    async def _judge(self, request: RequestJudge) -> None:
        timeout_s = self.state.config.judge_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                verdict = await self._deps.judge.judge(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._deps.metrics.ai_failures.labels("judge").inc()
            log.warning("judge failed battle=%s: %r", self.battle_id, exc)
            self.submit_internal(JudgeFailed(f"{type(exc).__name__}", self._deps.clock.now_ms()))
            return
        self.submit_internal(
            JudgeAnswered(
                winner_id=verdict.winner_id,
                winning_team_id=verdict.winning_team_id,
                reasoning=verdict.reasoning,
                decided_by=verdict.decided_by,
                now=self._deps.clock.now_ms(),
                scores=verdict.scores or None,
                ranking=verdict.ranking,
                confidence=verdict.confidence,
                details=judge_details(verdict),
            )
        )


def judge_details(verdict: Verdict) -> str | None:
    """What an AI judge said and cost, kept on the battle (too big and raw for the event)."""
    if not verdict.raw and verdict.usage is None:
        return None
    details = {"raw": verdict.raw, "usage": verdict.usage, "scores": verdict.scores}
    return msgspec.json.encode(details).decode()


RunnerFactory = Callable[[BattleState], Runner]
