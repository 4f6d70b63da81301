"""The supervisor: observe → decide → act → publish (STYLE "The shape"; SPEC §5).

It owns the loop around the pure core (``failoverd.decide``) and reaches the world only
through ports: health from a ``HealthSource``, routing and moves through ``OvhApi``, the
durable record through ``Journal``, hooks through ``Hooks``, events through ``Recorder``.

One cycle is synchronous (no ``await`` between observing, deciding and starting the
actions), so nothing can change the engine state half-way. The loop wakes on a health
change, a manual command, a move finishing, a routing read or preflight landing, the next
timer (cooldown end, pause expiry, failback ``after``, failover window) and at least once a
second (``last_tick`` feeds ``/healthz`` and the systemd watchdog).

A move runs in its own task: journal ``planned`` *before* anything is sent → pre hook →
``can_move`` of every block on the target → per block, under one global semaphore of
``guards.max_parallel_moves``: journal ``submitting`` → POST → journal ``submitted`` with the
task id → wait for the task and verify ``routedTo`` → journal ``task_done`` and
``verified`` | ``failed``. Blocks that failed get the next candidate (the core's own target
choice, with the failed target known to be ineligible for them): a partial failover. Then
the move is finished in the core (cooldown), the post hook is started, metrics recorded
and the group's routing re-read.

Restart (SPEC §5.8): the journal is replayed before the first decision. A block whose task
id is journaled is followed to its end, never submitted again; a block journaled as
``submitting`` without a task id is looked up with ``find_move_task`` and its routing —
resubmitted only once both say it never reached OVH; blocks never sent are abandoned (or
sent with the rest of their move when part of it already went out, so a group is never left
split by a crash).

Shutdown: when ``stop`` is set no new POST starts; a POST in progress is given until
``shutdown_grace`` to get its task id into the journal; then the remaining move tasks are
cancelled — the journal says where each block was and the next start follows it.

Journal writes run on the journal's own thread (see failoverd.journal); the ones on the
move path are awaited (durability is their point), the others (history lines, persisted
state) are queued in order and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

import structlog

from failoverd import decide as core
from failoverd import preflight
from failoverd.decide import (
    Blocked,
    DriftDetected,
    EngineState,
    GroupState,
    Observation,
    Refusal,
    StartMove,
)
from failoverd.errors import (
    FailoverdError,
    MoveFailed,
    MoveRefused,
    MoveSubmissionUnknown,
    OvhError,
    OvhPermanentError,
    OvhTransientError,
    UnknownGroup,
)
from failoverd.model import (
    BlockInfo,
    Eligibility,
    GroupStatus,
    GroupView,
    GuardName,
    GuardView,
    Health,
    HistoryEntry,
    JournaledMove,
    JournalStep,
    MoveAccepted,
    MoveResult,
    MoveTicket,
    MoveView,
    PersistedGroup,
    PersistedState,
    ServerHealth,
    ServerView,
    ServiceInfo,
    Snapshot,
    Trigger,
)
from failoverd.policy import Block, GroupPolicy, Policy, block_str
from failoverd.ports import HealthSource, Hooks, Journal, OvhApi, Recorder

log = structlog.get_logger()

TICK = 1.0  # the loop runs at least this often, for /healthz and the watchdog
SHUTDOWN_GRACE = 15.0  # a POST in progress at SIGTERM may take this long to get its task id
VETO_RETRY = 60.0  # a vetoed group is asked again after this long (or its cooldown if shorter)
PREFLIGHT_RETRY = 60.0  # soonest re-check of eligibility when a group has no eligible standby
UNKNOWN_RETRY = 1.0  # pause between looks for a move task whose POST had no clear answer
GUARDS: tuple[GuardName, ...] = ("mass_failure", "canary", "max_failovers")

Outcome = Literal["verified", "failed", "unknown", "unsent"]


@dataclass
class _Flight:
    """A move in progress (mutable: its phase and target change as it goes)."""

    move_id: str
    group: str
    trigger: Trigger
    target: str
    blocks: tuple[str, ...]
    dry_run: bool
    reason: str
    started_at: float  # wall
    started_loop: float
    source: str | None  # the holder when the move started
    routing_at_start: Mapping[str, str | None]
    detect_since: float | None = None  # loop time the holder's first failed round ended (auto)
    force: bool = False  # an operator's forced move: its retries are forced too
    phase: str = "planned"
    sent: bool = False  # at least one POST went out (or may have)
    task: asyncio.Task[None] | None = None
    moved: dict[str, str] = field(default_factory=dict)  # block -> target it reached
    failed: dict[str, str] = field(default_factory=dict)  # block -> why it did not move
    attempts: list[str] = field(default_factory=list)  # failed attempts, for the sentence


@dataclass
class _BlockResult:
    outcome: Outcome
    reason: str


class Supervisor:
    """The engine: implements ``ports.Engine`` and runs the failover loop."""

    def __init__(
        self,
        policy: Policy,
        *,
        api: OvhApi,
        health: HealthSource,
        journal: Journal,
        recorder: Recorder,
        hooks: Hooks | None = None,
        wall: Callable[[], float] = time.time,
        shutdown_grace: float = SHUTDOWN_GRACE,
    ) -> None:
        self._policy = policy
        self._api = api
        self._health = health
        self._journal = journal
        self._recorder = recorder
        self._hooks = hooks
        self._wall = wall
        self._shutdown_grace = shutdown_grace

        self._state = EngineState.initial(policy)
        self._statuses: Mapping[str, GroupStatus] = {}
        self._routing: dict[str, str | None] = {}
        self._block_regions: dict[str, tuple[str, ...]] = {}
        self._services: dict[str, ServiceInfo] = {}
        self._eligibility: dict[tuple[str, str], Eligibility] = {}
        self._standby_eligible: dict[tuple[str, str], bool] = {}
        self._flights: dict[str, _Flight] = {}
        self._sem = asyncio.Semaphore(policy.guards.max_parallel_moves)

        self._wake = asyncio.Event()
        self._reconcile_now = asyncio.Event()
        self._preflight_now = asyncio.Event()
        self._running = False
        self._stopping = False
        self._critical = 0  # blocks between journal "submitting" and "submitted"
        self._critical_done = asyncio.Event()
        self._critical_done.set()
        self._last_tick = 0.0
        self._preflight_kicked = float("-inf")
        self._failing_since: dict[str, float] = {}  # server -> loop time of its first failed round
        self._saved: PersistedState | None = None
        self._logged: dict[str, str] = {}  # group -> last logged decision (digits folded)
        self._writes: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._roots: list[asyncio.Task[None]] = []

    # ================================================================== public: Engine

    @property
    def last_tick(self) -> float:
        """Loop time of the last completed cycle (0.0 before the first)."""
        return self._last_tick

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def state(self) -> EngineState:
        return self._state

    def snapshot(self) -> Snapshot:
        now = self._wall()
        servers = tuple(
            ServerView(
                name=h.name,
                health=h.health,
                failing=h.failing,
                since=h.since,
                last_check=h.last_round_at,
                last_reason=h.last_reason,
                canary=h.canary,
            )
            for h in self._health_wall(now).values()
        )
        guards = tuple(
            GuardView(name=g, active=g in self._state.guards, reason=self._state.guards.get(g, ""))
            for g in GUARDS
        )
        in_flight = tuple(
            MoveView(
                move_id=f.move_id,
                group=f.group,
                target=f.target,
                blocks=f.blocks,
                trigger=f.trigger,
                phase=f.phase,
                started_at=f.started_at,
                dry_run=f.dry_run,
            )
            for f in self._flights.values()
        )
        return Snapshot(
            taken_at=now,
            groups=tuple(self._group_view(name, now) for name in self._policy.groups),
            servers=servers,
            guards=guards,
            in_flight=in_flight,
            dry_run=self._policy.daemon.dry_run,
        )

    async def request_move(
        self, group: str, *, to: str | None, force: bool, dry_run: bool
    ) -> MoveAccepted:
        if group not in self._policy.groups:
            raise UnknownGroup(f"unknown group {group}")
        if self._stopping:
            raise MoveRefused("failoverd is shutting down; no new move", status=409)
        obs = self._observe()
        dry = dry_run or self._policy.daemon.dry_run
        plan = core.plan_manual_move(
            self._state, obs, self._policy, group, to=to, force=force, dry_run=dry
        )
        if isinstance(plan, Refusal):
            log.info("manual move refused", group=group, server=to, reason=plan.reason)
            raise MoveRefused(plan.reason, status=plan.status)
        move_id = self._start(plan, obs, detect_since=None)
        return MoveAccepted(
            move_id=move_id,
            group=group,
            target=plan.target,
            blocks=plan.blocks,
            dry_run=plan.dry_run,
        )

    async def pause(self, group: str, *, duration: float | None, reason: str | None) -> GroupView:
        if group not in self._policy.groups:
            raise UnknownGroup(f"unknown group {group}")
        now = self._wall()
        self._state = core.pause(self._state, group, now=now, duration=duration, reason=reason)
        text = f"{group} paused"
        if duration is not None:
            text += f" for {core.human_duration(duration)} (until {core.clock(now + duration)})"
        if reason:
            text += f": {reason}"
        log.info("paused", group=group, reason=text)
        await self._journal.record(
            "pause",
            text,
            at=now,
            group=group,
            details={"duration": duration, "reason": reason},
        )
        self._after_command()
        return self._group_view(group, self._wall())

    async def resume(self, group: str) -> GroupView:
        if group not in self._policy.groups:
            raise UnknownGroup(f"unknown group {group}")
        now = self._wall()
        self._state = core.resume(self._state, group)
        log.info("resumed", group=group, reason=f"{group} resumed")
        await self._journal.record("resume", f"{group} resumed", at=now, group=group)
        self._after_command()
        return self._group_view(group, self._wall())

    async def history(self, group: str | None, limit: int) -> list[HistoryEntry]:
        # Lines queued before this call are part of the answer.
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        return await self._journal.history(group, limit)

    def apply_policy(self, policy: Policy) -> None:
        """Reload: swap the policy in one step; health, routing and moves in flight survive."""
        old = self._policy
        self._policy = policy
        self._state = core.apply_policy(self._state, policy)
        if policy.guards.max_parallel_moves != old.guards.max_parallel_moves:
            # Moves holding a slot of the old semaphore finish with it; new ones use this.
            self._sem = asyncio.Semaphore(policy.guards.max_parallel_moves)
        self._logged = {g: r for g, r in self._logged.items() if g in policy.groups}
        added = sorted(set(policy.groups) - set(old.groups))
        removed = sorted(set(old.groups) - set(policy.groups))
        text = "policy reloaded"
        if added:
            text += f"; groups added: {', '.join(added)}"
        if removed:
            text += f"; groups removed: {', '.join(removed)}"
        log.info("policy applied", reason=text)
        self._write(self._journal.record("reload", text, at=self._wall()))
        self._reconcile_now.set()
        self._preflight_now.set()
        self._wake.set()

    # ================================================================== the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Replay the journal, then observe → decide → act until `stop` is set."""
        loop = asyncio.get_running_loop()
        self._running = True
        persisted = await self._journal.load_state()
        if persisted is not None:
            self._state = _restore(self._state, persisted)
            self._saved = persisted
        await self._replay()
        self._reconcile_now.set()
        self._preflight_now.set()
        self._roots = [
            loop.create_task(self._watch_health(), name="supervisor: health changes"),
            loop.create_task(self._reconcile_loop(), name="supervisor: routing reconcile"),
            loop.create_task(self._preflight_loop(), name="supervisor: preflight"),
            loop.create_task(self._watch_stop(stop), name="supervisor: stop"),
        ]
        try:
            while not stop.is_set():
                self._check_roots()
                self._wake.clear()
                self._cycle()
                self._last_tick = loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._next_wake())
        finally:
            await self._shutdown()

    def _check_roots(self) -> None:
        for task in self._roots:
            if task.done() and task.get_name() != "supervisor: stop":
                exc = task.exception() if not task.cancelled() else None
                if exc is not None:
                    raise exc
                raise FailoverdError(f"{task.get_name()} stopped unexpectedly")

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self._wake.set()

    async def _watch_health(self) -> None:
        async for change in self._health.changes():
            prev = change.previous
            cur = change.current
            if cur.failing and (prev is None or not prev.failing):
                # The start of the "detect" phase: the first failed round, not the verdict.
                self._failing_since[cur.name] = cur.last_round_at or self._loop_time()
            if prev is None or prev.health is not cur.health:
                log.info(
                    f"server {cur.health.value}",
                    server=cur.name,
                    reason=cur.last_reason,
                    canary=cur.canary,
                )
            self._wake.set()

    def _cycle(self) -> None:
        """One synchronous decision: no await, so the state cannot change under it."""
        obs = self._observe()
        decision = core.decide(self._state, obs, self._policy)
        decided = self._loop_time()
        self._state = decision.state
        self._statuses = decision.statuses
        acted: set[str] = set()
        for action in decision.actions:
            acted.add(action.group)
            if isinstance(action, StartMove):
                detect = None
                if action.trigger == "auto":
                    # Phases of an automatic failover (SPEC §7): detect = first failed round
                    # → down verdict; decide = down verdict → this decision.
                    source, _ = core.holder(self._policy.groups[action.group], obs.routing)
                    h = self._health.current().get(source) if source else None
                    if h is not None and h.health is Health.DOWN:
                        detect = min(self._failing_since.get(h.name, h.since), h.since)
                        self._recorder.phase("detect", h.since - detect)
                        self._recorder.phase("decide", max(0.0, decided - h.since))
                self._start(action, obs, detect_since=detect)
            elif isinstance(action, Blocked):
                self._recorder.failover_blocked(action.group, action.reason)
                if action.reason == "no_eligible_target":
                    self._recheck_eligibility()
                log.warning("failover blocked", group=action.group, reason=action.message)
                self._write(
                    self._journal.record(
                        "blocked",
                        action.message,
                        at=obs.now,
                        group=action.group,
                        details={"reason": action.reason},
                    )
                )
            elif isinstance(action, DriftDetected):
                log.warning("drift", group=action.group, reason=action.message)
                self._write(
                    self._journal.record("drift", action.message, at=obs.now, group=action.group)
                )
        for name, gs in self._state.groups.items():
            folded = _fold(gs.reason)
            if self._logged.get(name) == folded:
                continue
            self._logged[name] = folded
            if name in acted:
                continue  # the action's own line says it
            log.info("decision", group=name, reason=gs.reason)
            self._write(self._journal.record("decision", gs.reason, at=obs.now, group=name))
        self._persist()

    def _recheck_eligibility(self) -> None:
        """A group found no eligible standby: ask the API again soon, not in 15 minutes.

        A preflight verdict may come from an API error rather than a real refusal; when it
        is what keeps a group from failing over, it is re-checked within PREFLIGHT_RETRY.
        """
        now = self._loop_time()
        if now - self._preflight_kicked >= PREFLIGHT_RETRY:
            self._preflight_kicked = now
            self._preflight_now.set()

    def _next_wake(self) -> float:
        """Seconds until the next time-based event (at most TICK)."""
        now = self._wall()
        times: list[float] = []
        health = self._health.current()
        for name, gs in self._state.groups.items():
            times.append(gs.cooldown_until)
            if gs.paused and gs.pause_until is not None:
                times.append(gs.pause_until)
            group = self._policy.groups.get(name)
            if group is None or group.failback.mode != "auto":
                continue
            primary = health.get(group.primary)
            if primary is not None and primary.health is Health.UP:
                times.append(self._to_wall(primary.since, now) + group.failback.after)
        window = self._policy.guards.max_failovers.window
        times.extend(t + window for t in self._state.failovers)
        future = [t - now for t in times if t > now]
        # A hair past the boundary, so the core sees it crossed.
        return min([TICK, *(t + 0.001 for t in future)])

    def _after_command(self) -> None:
        if self._running and not self._stopping:
            self._cycle()
        else:
            self._persist()
        self._wake.set()

    # ================================================================== observe

    def _loop_time(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:  # snapshot() from outside the loop (tests, tooling)
            return time.monotonic()

    def _to_wall(self, loop_time: float, now_wall: float) -> float:
        return now_wall - (self._loop_time() - loop_time)

    def _health_wall(self, now: float) -> dict[str, ServerHealth]:
        loop_now = self._loop_time()
        out: dict[str, ServerHealth] = {}
        for name, h in self._health.current().items():
            out[name] = replace(
                h,
                since=now - (loop_now - h.since),
                last_round_at=None
                if h.last_round_at is None
                else now - (loop_now - h.last_round_at),
            )
        return out

    def _observe(self, routing: Mapping[str, str | None] | None = None) -> Observation:
        now = self._wall()
        return Observation(
            now=now,
            health=MappingProxyType(self._health_wall(now)),
            routing=MappingProxyType(dict(self._routing if routing is None else routing)),
            eligibility=MappingProxyType(dict(self._eligibility)),
            services=MappingProxyType(dict(self._services)),
            block_regions=MappingProxyType(dict(self._block_regions)),
        )

    def _group_view(self, name: str, now: float) -> GroupView:
        group = self._policy.groups[name]
        gs = self._state.groups.get(name) or GroupState()
        routing = {block_str(b): self._routing.get(block_str(b)) for b in group.blocks}
        current, _ = core.holder(group, self._routing)
        status = self._statuses.get(name, GroupStatus.NOMINAL)
        if gs.moving:
            status = GroupStatus.MOVING
        elif status in (GroupStatus.NOMINAL, GroupStatus.FAILED_OVER) and gs.paused:
            status = GroupStatus.PAUSED
        elif status is GroupStatus.PAUSED and not gs.paused:
            status = GroupStatus.NOMINAL if current == group.primary else GroupStatus.FAILED_OVER
        return GroupView(
            name=name,
            status=status,
            primary=group.primary,
            holder=current,
            routing=MappingProxyType(routing),
            cooldown_remaining=max(0.0, gs.cooldown_until - now),
            paused=gs.paused,
            pause_reason=gs.pause_reason,
            pause_until=gs.pause_until,
            eligible=MappingProxyType(
                {
                    s: self._standby_eligible[(name, s)]
                    for s in group.standbys
                    if (name, s) in self._standby_eligible
                }
            ),
            reason=gs.reason,
        )

    async def _read_routing(self, blocks: Iterable[str]) -> bool:
        """Re-read who holds `blocks`; True when every read succeeded."""
        keys = list(dict.fromkeys(blocks))
        results = await asyncio.gather(
            *(self._api.block_info(_block(k)) for k in keys), return_exceptions=True
        )
        ok = True
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BlockInfo):
                if key in self._routing and self._routing[key] != result.routed_to:
                    log.info(
                        "routing changed",
                        block=key,
                        server=result.routed_to,
                        reason=f"{key} now routed to {result.routed_to or 'nothing (parked)'}",
                    )
                self._routing[key] = result.routed_to
                if result.regions:
                    self._block_regions[key] = result.regions
            elif isinstance(result, OvhError):
                ok = False
                log.warning(
                    "routing read failed", block=key, reason=str(result), query_id=result.query_id
                )
            elif isinstance(result, BaseException):
                raise result
        self._wake.set()
        return ok

    async def _read_services(self) -> None:
        names = [n for n in self._policy.servers if n not in self._services]
        results = await asyncio.gather(
            *(self._api.service_info(n) for n in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, ServiceInfo):
                self._services[name] = result
            elif isinstance(result, OvhError):
                log.warning("service read failed", server=name, reason=str(result))
            elif isinstance(result, BaseException):
                raise result

    async def _reconcile_loop(self) -> None:
        while True:
            self._reconcile_now.clear()
            blocks = [block_str(b) for g in self._policy.groups.values() for b in g.blocks]
            ok = await self._read_routing(blocks)
            await self._read_services()
            interval = self._policy.daemon.reconcile_interval
            if not ok:  # the API is having trouble: look again sooner than the full period
                interval = min(interval, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_now.wait(), interval)

    async def _preflight_loop(self) -> None:
        first = True
        while True:
            self._preflight_now.clear()
            policy = self._policy
            interval = self._policy.daemon.preflight_interval
            try:
                report = await preflight.run_preflight(policy, self._api, check_inventory=first)
            except FailoverdError as exc:
                log.warning("preflight failed", reason=str(exc))
                interval = min(interval, PREFLIGHT_RETRY)  # no verdicts at all: try again soon
            else:
                first = False
                if policy is self._policy:
                    self._apply_preflight(report)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._preflight_now.wait(), interval)

    def _apply_preflight(self, report: preflight.PreflightReport) -> None:
        eligibility: dict[tuple[str, str], Eligibility] = {}
        for v in report.verdicts:
            eligibility[(v.server, v.block)] = Eligibility(v.eligible, v.reason)
        standby = dict(report.standby_eligible())
        for (group, server), ok in standby.items():
            if self._standby_eligible.get((group, server)) != ok:
                reasons = [
                    f"{v.block}: {v.reason}"
                    for v in report.verdicts
                    if v.group == group and v.server == server and not v.eligible
                ]
                log.log(
                    20 if ok else 30,
                    "standby eligible" if ok else "standby not eligible",
                    group=group,
                    server=server,
                    reason="; ".join(reasons) or "eligible for every block",
                )
        for finding in getattr(report, "findings", ()):
            if not finding.ok:
                log.warning("preflight finding", reason=f"{finding.subject}: {finding.message}")
        self._eligibility = eligibility
        self._standby_eligible = standby
        self._wake.set()

    # ================================================================== act

    def _start(self, action: StartMove, obs: Observation, *, detect_since: float | None) -> str:
        """Start a move decided by the core (synchronous: state and flight land together)."""
        loop = asyncio.get_running_loop()
        move_id = uuid.uuid4().hex[:12]
        group = self._policy.groups[action.group]
        source, _ = core.holder(group, obs.routing)
        flight = _Flight(
            move_id=move_id,
            group=action.group,
            trigger=action.trigger,
            target=action.target,
            blocks=action.blocks,
            dry_run=action.dry_run,
            reason=action.reason,
            started_at=obs.now,
            started_loop=loop.time(),
            source=source,
            routing_at_start=MappingProxyType(dict(obs.routing)),
            detect_since=detect_since,
            force=action.force,
        )
        self._flights[move_id] = flight
        self._mark_moving(flight, obs.now)
        log.info(
            "move decided",
            group=action.group,
            server=action.target,
            move_id=move_id,
            reason=action.reason,
        )
        flight.task = loop.create_task(self._execute(flight, fresh=True), name=f"move {move_id}")
        self._wake.set()
        return move_id

    def _mark_moving(self, flight: _Flight, now: float) -> None:
        """Tell the core the group is moving: to which target (capacity) and why (an
        automatic move counts for max_failovers while it runs)."""
        if flight.group not in self._state.groups:
            return  # removed by a reload while its move ran: not brought back
        self._state = core.move_started(
            self._state,
            flight.group,
            flight.move_id,
            now,
            target=flight.target,
            trigger=flight.trigger,
        )

    async def _execute(
        self,
        flight: _Flight,
        *,
        fresh: bool,
        follow: Iterable[tuple[str, MoveTicket]] = (),
        unknown: Iterable[tuple[str, str]] = (),
        unsent: Iterable[str] = (),
    ) -> None:
        try:
            if fresh:
                # The move-time eligibility check is a read: it runs while `planned` is being
                # written and the pre hook asked, instead of after them (a few ms saved on a
                # failover). Nothing is sent before `planned` is on disk and the hook agreed.
                checks = None
                if not flight.dry_run:
                    checks = asyncio.ensure_future(
                        self._eligible(flight.target, list(flight.blocks))
                    )
                try:
                    go = await self._prepare(flight)
                except BaseException:
                    _discard(checks)
                    raise
                if not go:
                    _discard(checks)
                    return
                await self._attempts(flight, list(flight.blocks), first_check=checks)
            else:
                await self._resume(flight, list(follow), list(unknown), list(unsent))
            await self._finish(flight)
        except asyncio.CancelledError:
            log.warning(
                "move interrupted",
                group=flight.group,
                move_id=flight.move_id,
                reason="shutting down; the journal keeps its state for the next start",
            )
            raise
        except FailoverdError as exc:
            # The journal could not be written (or similar): stop here, never send blindly.
            log.error("move aborted", group=flight.group, move_id=flight.move_id, reason=str(exc))
            self._release(flight.group, why=f"aborted: {exc}", retry_after=VETO_RETRY)
        except Exception:
            # A bug, not an expected failure: say so loudly, keep the daemon and the group alive.
            log.exception("move crashed", group=flight.group, move_id=flight.move_id)
            self._release(flight.group, why="crashed (see the log)", retry_after=VETO_RETRY)
        finally:
            self._flights.pop(flight.move_id, None)
            self._wake.set()

    async def _prepare(self, flight: _Flight) -> bool:
        """Journal the move, then dry run or pre hook. False: the move ends here."""
        await self._journal.create_move(
            JournaledMove(
                move_id=flight.move_id,
                group=flight.group,
                trigger=flight.trigger,
                target=flight.target,
                blocks=flight.blocks,
                dry_run=flight.dry_run,
                created=flight.started_at,
                reason=flight.reason,
                force=flight.force,
            )
        )
        if flight.dry_run:
            await self._dry_run(flight)
            return False
        veto = await self._pre_hook(flight)
        if veto is not None:
            await self._vetoed(flight, veto)
            return False
        return True

    async def _step(
        self,
        flight: _Flight,
        block: str,
        target: str,
        step: JournalStep,
        *,
        at: float | None = None,
        task_id: int | None = None,
        via: Literal["dedicated", "ip"] | None = None,
        reason: str | None = None,
    ) -> None:
        """Journal a step of one block of `flight` (now, unless `at` says when)."""
        await self._journal.step(
            flight.move_id,
            block,
            target,
            step,
            at=self._wall() if at is None else at,
            task_id=task_id,
            via=via,
            reason=reason,
        )

    async def _pre_hook(self, flight: _Flight) -> str | None:
        argv = self._policy.groups[flight.group].hooks.pre
        if not argv or self._hooks is None:
            return None
        flight.phase = "pre_hook"
        return await self._hooks.pre(argv, self._hook_env(flight, result=None))

    async def _vetoed(self, flight: _Flight, veto: str) -> None:
        now = self._wall()
        message = f"pre hook vetoed the move of {flight.group} to {flight.target}: {veto}"
        log.warning("failover blocked", group=flight.group, move_id=flight.move_id, reason=message)
        self._recorder.failover_blocked(flight.group, "veto")
        for block in flight.blocks:
            await self._step(flight, block, flight.target, "abandoned", at=now, reason=message)
        await self._journal.finish_move(flight.move_id, "vetoed", at=now, reason=message)
        await self._journal.record(
            "blocked", message, at=now, group=flight.group, details={"reason": "veto"}
        )
        # Asked again later, not at once: the next cycle would otherwise run the hook again.
        self._state = core.move_vetoed(
            self._state,
            flight.group,
            now=now,
            retry_after=self._retry_after(flight.group, VETO_RETRY),
            veto=veto,
        )
        self._persist()

    async def _dry_run(self, flight: _Flight) -> None:
        flight.phase = "dry_run"
        verdicts = await self._eligible(flight.target, list(flight.blocks))
        now = self._wall()
        for block in flight.blocks:
            verdict = verdicts.get(block)
            note = "would be moved" if verdict is None else f"would be refused: {verdict.reason}"
            await self._step(flight, block, flight.target, "dry_run", at=now, reason=note)
            log.info("dry run", group=flight.group, block=block, server=flight.target, reason=note)
        text = f"dry run: {flight.group} not moved ({flight.reason})"
        await self._journal.finish_move(flight.move_id, "dry_run", at=now, reason=text)
        group = self._policy.groups.get(flight.group)
        if group is None:  # removed by a reload meanwhile: nothing to cool down
            return
        # The core decides what a dry run costs: never a failover counted; a cooldown for
        # the daemon's own dry run, none for an operator's rehearsal.
        self._state = core.move_finished(
            self._state,
            flight.group,
            trigger=flight.trigger,
            result="success",
            now=now,
            cooldown=group.cooldown,
            dry_run=True,
        )
        self._persist()

    async def _eligible(self, target: str, blocks: list[str]) -> dict[str, Eligibility]:
        """Move-time eligibility of `blocks` on `target`: the refused ones, with OVH's reason.

        A transient error of the check itself does not refuse: the POST gets the final word.
        """
        results = await asyncio.gather(
            *(self._api.can_move(_block(b), target) for b in blocks), return_exceptions=True
        )
        refused: dict[str, Eligibility] = {}
        for block, result in zip(blocks, results, strict=True):
            if isinstance(result, Eligibility):
                if not result.ok:
                    refused[block] = result
            elif isinstance(result, OvhPermanentError):
                refused[block] = Eligibility(False, str(result))
            elif isinstance(result, OvhTransientError):
                log.warning(
                    "eligibility check failed",
                    block=block,
                    server=target,
                    reason=str(result),
                    query_id=result.query_id,
                )
            elif isinstance(result, BaseException):
                raise result
        return refused

    async def _attempts(
        self,
        flight: _Flight,
        pending: list[str],
        *,
        replan: bool = False,
        first_check: asyncio.Future[dict[str, Eligibility]] | None = None,
    ) -> None:
        """Move `pending` to flight.target; what fails goes to the next candidate."""
        first = not replan
        local: dict[tuple[str, str], Eligibility] = {}
        tried: list[str] = []  # in order: the latest one is where the blocks left just failed
        planned: str | None = None  # the core's sentence for a retry, journaled with its plan
        while pending:
            target = flight.target
            if target not in tried:
                tried.append(target)
            now = self._wall()
            if not first:
                for block in pending:
                    await self._step(flight, block, target, "planned", at=now, reason=planned)
            first = False
            flight.phase = "eligibility"
            if first_check is not None:
                refused = await first_check  # started with the move, for these blocks
                first_check = None
            else:
                refused = await self._eligible(target, pending)
            if refused:
                for block, verdict in refused.items():
                    self._eligibility[(target, block)] = verdict
                    for gname, g in self._policy.groups.items():
                        if target in g.standbys and any(block_str(b) == block for b in g.blocks):
                            self._standby_eligible[(gname, target)] = False
                bad = ", ".join(f"{b} ({v.reason})" for b, v in refused.items())
                why = f"{target} cannot take {bad}"
                log.warning("target not eligible", group=flight.group, server=target, reason=why)
                for block in pending:
                    reason = refused[block].reason if block in refused else why
                    await self._step(flight, block, target, "failed", reason=reason)
                    flight.failed[block] = f"{target}: {reason}"
                    local[(target, block)] = Eligibility(False, reason)
            else:
                deadline = asyncio.get_running_loop().time() + self._policy.api.move_timeout
                flight.phase = "submitting"
                results = await asyncio.gather(
                    *(self._move_block(flight, b, target, deadline) for b in pending)
                )
                retry: list[str] = []
                for block, res in zip(pending, results, strict=True):
                    if res.outcome == "verified":
                        flight.moved[block] = target
                        flight.failed.pop(block, None)
                    else:
                        flight.failed[block] = f"{target}: {res.reason}"
                        flight.attempts.append(f"{block} failed on {target}: {res.reason}")
                        local[(target, block)] = Eligibility(False, f"move failed: {res.reason}")
                        if res.outcome in ("failed", "unsent"):
                            retry.append(block)
                pending = retry
            if not pending or flight.trigger == "failback" or self._stopping:
                break
            plan = await self._next_candidate(flight, pending, local, tried)
            if plan is None:
                break
            nxt, planned = plan.target, plan.reason
            log.info(
                "trying next candidate",
                group=flight.group,
                server=nxt,
                move_id=flight.move_id,
                reason=planned,
            )
            flight.target = nxt
            self._mark_moving(flight, self._wall())

    async def _next_candidate(
        self,
        flight: _Flight,
        pending: list[str],
        local: Mapping[tuple[str, str], Eligibility],
        tried: list[str],
    ) -> StartMove | None:
        """The core's next choice for the blocks left (SPEC §5.4, partial failover).

        Only those blocks need a home (the ones already moved stay where they are), targets
        already tried are skipped, and what failed is known as ineligible. When there is no
        other candidate, the core's sentence goes to the history too: it is why the move
        ends partial or failed, and `failoverd history` must say so.
        """
        group = self._policy.groups.get(flight.group)
        if group is None:  # removed by a reload while the move ran
            return None
        # The routing the move started from (after a restart: the latest known).
        routing = dict(flight.routing_at_start) or dict(self._routing)
        obs = self._observe(routing)
        obs = replace(obs, eligibility=MappingProxyType({**obs.eligibility, **local}))
        gs = self._state.groups.get(flight.group) or GroupState()
        # The flight's own target is not held against capacity while choosing its next one.
        state = replace(
            self._state,
            groups=MappingProxyType(
                {**self._state.groups, flight.group: replace(gs, moving=None, moving_to=None)}
            ),
        )
        plan = core.plan_retry(
            state,
            obs,
            self._policy,
            flight.group,
            source=flight.source or core.holder(group, routing)[0],
            blocks=pending,
            tried=tried,
            trigger=flight.trigger,
            force=flight.force,
        )
        if isinstance(plan, Blocked):
            log.warning(
                "no other candidate",
                group=flight.group,
                move_id=flight.move_id,
                reason=plan.message,
            )
            self._recorder.failover_blocked(flight.group, plan.reason)
            await self._journal.record(
                "blocked",
                plan.message,
                at=self._wall(),
                group=flight.group,
                move_id=flight.move_id,
                details={"reason": plan.reason},
            )
            return None
        return plan

    async def _move_block(
        self, flight: _Flight, block: str, target: str, deadline: float
    ) -> _BlockResult:
        loop = asyncio.get_running_loop()
        async with self._sem:
            if self._stopping:
                return _BlockResult("unsent", "failoverd stopping before the submission")
            self._enter_critical()
            critical = True
            try:
                await self._step(flight, block, target, "submitting")
                flight.sent = True
                started = loop.time()
                try:
                    ticket = await self._api.submit_move(_block(block), target, deadline=deadline)
                except MoveSubmissionUnknown as exc:
                    log.warning(
                        "move submission unclear",
                        group=flight.group,
                        block=block,
                        server=target,
                        reason=str(exc),
                        query_id=exc.query_id,
                    )
                    critical = False
                    self._leave_critical()
                    return await self._resolve_unknown(flight, block, target, deadline)
                except OvhError as exc:
                    reason = str(exc)
                    log.warning(
                        "move refused",
                        group=flight.group,
                        block=block,
                        server=target,
                        reason=reason,
                        query_id=exc.query_id,
                    )
                    await self._step(flight, block, target, "failed", reason=reason)
                    return _BlockResult("failed", reason)
                submitted = loop.time()
                # submit = the decision → OVH's answer with a task id (journal, hook,
                # eligibility and the POST itself).
                self._recorder.phase("submit", submitted - flight.started_loop)
                await self._step(
                    flight, block, target, "submitted", task_id=ticket.task_id, via=ticket.via
                )
                log.info(
                    "move submitted",
                    group=flight.group,
                    block=block,
                    server=target,
                    task_id=ticket.task_id,
                    took_s=round(submitted - started, 6),
                )
            finally:
                if critical:
                    self._leave_critical()
            flight.phase = "task"
            return await self._follow(flight, block, ticket, deadline)

    async def _follow(
        self, flight: _Flight, block: str, ticket: MoveTicket, deadline: float
    ) -> _BlockResult:
        try:
            outcome = await self._api.wait_for_move(ticket, deadline=deadline)
        except (MoveFailed, OvhError) as exc:
            reason = str(exc)
            log.warning(
                "move failed",
                group=flight.group,
                block=block,
                server=ticket.target,
                task_id=ticket.task_id,
                reason=reason,
                query_id=getattr(exc, "query_id", None),
            )
            await self._step(
                flight, block, ticket.target, "failed", task_id=ticket.task_id, reason=reason
            )
            # A task that ended is over; a deadline leaves the task's fate open at OVH.
            return _BlockResult("failed" if isinstance(exc, MoveFailed) else "unknown", reason)
        self._recorder.phase("task", outcome.task_seconds)
        self._recorder.phase("verify", outcome.verify_seconds)
        await self._step(flight, block, ticket.target, "task_done", task_id=ticket.task_id)
        flight.phase = "verify"
        await self._step(
            flight,
            block,
            ticket.target,
            "verified",
            task_id=ticket.task_id,
            reason=f"routedTo {ticket.target}",
        )
        self._routing[block] = ticket.target
        log.info(
            "block moved",
            group=flight.group,
            block=block,
            server=ticket.target,
            task_id=ticket.task_id,
            took_s=round(outcome.task_seconds + outcome.verify_seconds, 6),
        )
        return _BlockResult("verified", "verified")

    async def _resolve_unknown(
        self, flight: _Flight, block: str, target: str, deadline: float
    ) -> _BlockResult:
        """A POST that may or may not have reached OVH: find its task, never resend blindly."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                found = await self._find_submission(
                    flight,
                    block,
                    target,
                    deadline,
                    task_found="task found after an unclear submission",
                    routed=f"routedTo {target} (no task left to follow)",
                )
                if found is not None:
                    return found
            except OvhError as exc:
                log.warning("move lookup failed", block=block, server=target, reason=str(exc))
            if loop.time() + UNKNOWN_RETRY >= deadline:
                reason = f"submission to {target} unclear and no task found before the deadline"
                await self._step(flight, block, target, "failed", reason=reason)
                return _BlockResult("unknown", reason)
            await asyncio.sleep(UNKNOWN_RETRY)  # pacing the look-ups, not synchronisation

    async def _find_submission(
        self,
        flight: _Flight,
        block: str,
        target: str,
        deadline: float,
        *,
        task_found: str,
        routed: str,
    ) -> _BlockResult | None:
        """Did a POST whose answer is not journaled reach OVH? None: no sign of it (yet).

        Its task, when OVH lists one, is followed to its end; a block already routed to
        `target` is verified. The two reasons say, in the journal, how the answer was found.
        """
        ticket = await self._api.find_move_task(_block(block), target)
        if ticket is not None:
            await self._step(
                flight,
                block,
                target,
                "submitted",
                task_id=ticket.task_id,
                via=ticket.via,
                reason=task_found,
            )
            return await self._follow(flight, block, ticket, deadline)
        info = await self._api.block_info(_block(block))
        if info.routed_to != target:
            return None
        await self._step(flight, block, target, "verified", reason=routed)
        self._routing[block] = target
        return _BlockResult("verified", "verified")

    def _enter_critical(self) -> None:
        self._critical += 1
        self._critical_done.clear()

    def _leave_critical(self) -> None:
        if self._critical > 0:
            self._critical -= 1
        if self._critical == 0:
            self._critical_done.set()

    async def _finish(self, flight: _Flight) -> None:
        group = self._policy.groups.get(flight.group)
        now = self._wall()
        loop = asyncio.get_running_loop()
        total = len(flight.blocks)
        moved = len(flight.moved)
        targets = sorted(set(flight.moved.values()))
        result: MoveResult
        if (
            moved == total
            and len(targets) == 1
            and not any(b in flight.failed for b in flight.blocks)
        ):
            result = "success"
        elif moved:
            result = "partial"
        else:
            result = "failed"
        if result == "success":
            text = f"{flight.group}: {moved} of {total} blocks moved to {targets[0]}"
        else:
            parts = [f"{b} to {t}" for b, t in flight.moved.items()]
            text = f"{flight.group}: {moved} of {total} blocks moved"
            if parts:
                text += f" ({', '.join(parts)})"
            left = [b for b in flight.blocks if b not in flight.moved]
            if left:
                text += "; not moved: " + "; ".join(
                    f"{b} ({flight.failed.get(b, 'not attempted')})" for b in left
                )
        retried = [a for a in flight.attempts if a.split(" ", 1)[0] in flight.moved]
        if retried:
            text += f" (after {'; '.join(retried)})"
        took = loop.time() - (flight.detect_since or flight.started_loop)
        text += f" in {took:.1f}s"
        await self._journal.finish_move(flight.move_id, result, at=now, reason=text)
        if flight.group not in self._state.groups:
            # The group was removed by a reload while its move ran: nothing to cool down.
            self._recorder.failover_done(flight.group, flight.trigger, result)
            log.info("move finished", group=flight.group, move_id=flight.move_id, reason=text)
            return
        if not flight.sent:
            # Nothing reached OVH: no cooldown, so the core may choose again (and say why not).
            self._release(flight.group, why="nothing reached OVH")
            log.warning("move not sent", group=flight.group, move_id=flight.move_id, reason=text)
            self._recorder.failover_done(flight.group, flight.trigger, result)
            return
        self._state = core.move_finished(
            self._state,
            flight.group,
            trigger=flight.trigger,
            result=result,
            now=now,
            cooldown=group.cooldown if group is not None else 0.0,
        )
        self._persist()
        self._recorder.failover_done(flight.group, flight.trigger, result)
        self._recorder.phase("total", took)
        level = 20 if result == "success" else 30
        log.log(
            level,
            "move finished",
            group=flight.group,
            move_id=flight.move_id,
            result=result,
            reason=text,
            took_s=round(took, 6),
        )
        if group is not None and group.hooks.post and self._hooks is not None:
            self._hooks.post(group.hooks.post, self._hook_env(flight, result=result))
        self._spawn(self._refresh_after_move(group, flight), f"routing after {flight.move_id}")

    async def _refresh_after_move(self, group: GroupPolicy | None, flight: _Flight) -> None:
        """Re-read the group's routing after a move, except what the move just verified.

        A verified block's ``routedTo`` was read a moment ago (by ``wait_for_move``); asking
        again would spend the request budget (60/min) for nothing.
        """
        blocks = [block_str(b) for b in group.blocks] if group is not None else list(flight.blocks)
        unverified = [b for b in blocks if b not in flight.moved]
        if unverified:
            await self._read_routing(unverified)

    def _release(self, group: str, *, why: str, retry_after: float = 0.0) -> None:
        """End a move that sent nothing, without the cooldown of a real move."""
        self._state = core.move_abandoned(
            self._state,
            group,
            now=self._wall(),
            why=why,
            retry_after=self._retry_after(group, retry_after),
        )
        self._persist()

    def _retry_after(self, group: str, wanted: float) -> float:
        """`wanted`, but never longer than the group's own cooldown."""
        policy = self._policy.groups.get(group)
        return min(wanted, policy.cooldown) if policy is not None else 0.0

    def _hook_env(self, flight: _Flight, *, result: str | None) -> dict[str, str]:
        env = {
            "FAILOVERD_GROUP": flight.group,
            "FAILOVERD_TARGET": flight.target,
            "FAILOVERD_FROM": flight.source or "",
            "FAILOVERD_BLOCKS": " ".join(flight.blocks),
            "FAILOVERD_TRIGGER": flight.trigger,
            "FAILOVERD_MOVE_ID": flight.move_id,
        }
        if result is not None:
            env["FAILOVERD_RESULT"] = result
        return env

    # ================================================================== restart

    async def _replay(self) -> None:
        """Follow what the journal says was in flight when the last run ended."""
        loop = asyncio.get_running_loop()
        for move in await self._journal.unfinished_moves():
            latest: dict[str, tuple[str, str, int | None, str | None]] = {}
            for s in move.steps:  # oldest first: the last entry of a block is its latest target
                latest[s.block] = (s.target, s.step, s.task_id, s.via)
            follow: list[tuple[str, MoveTicket]] = []
            unknown: list[tuple[str, str]] = []
            unsent: list[str] = []
            moved: dict[str, str] = {}
            failed: dict[str, str] = {}
            target = move.target
            for block in move.blocks:
                tgt, step, task_id, via = latest.get(block, (move.target, "planned", None, None))
                target = tgt
                if step in ("submitted", "task_done") and task_id is not None:
                    follow.append(
                        (
                            block,
                            MoveTicket(
                                block=_block(block),
                                target=tgt,
                                via="ip" if via == "ip" else "dedicated",
                                task_id=task_id,
                            ),
                        )
                    )
                elif step == "submitting":
                    unknown.append((block, tgt))
                elif step == "verified":
                    moved[block] = tgt
                elif step == "failed":
                    failed[block] = f"{tgt}: before the restart"
                else:
                    unsent.append(block)
            group = self._policy.groups.get(move.group)
            now = self._wall()
            anything_sent = bool(follow or unknown or moved or failed)
            if move.dry_run or group is None or not anything_sent:
                why = (
                    "group no longer in the policy"
                    if group is None and anything_sent
                    else "nothing was sent before the restart"
                )
                for block in unsent:
                    await self._journal.step(
                        move.move_id, block, target, "abandoned", at=now, reason=why
                    )
                if not (follow or unknown):
                    await self._journal.finish_move(
                        move.move_id, "abandoned", at=now, reason=f"{move.group}: {why}"
                    )
                    log.info("journal replay", group=move.group, move_id=move.move_id, reason=why)
                    continue
            flight = _Flight(
                move_id=move.move_id,
                group=move.group,
                trigger=move.trigger,
                target=target,
                blocks=move.blocks,
                dry_run=move.dry_run,
                reason=move.reason,
                started_at=move.created,
                started_loop=loop.time(),
                source=None,
                routing_at_start=MappingProxyType({}),
                force=move.force,  # its retries after the restart are as forced as before
                phase="recovering",
                sent=True,
                moved=moved,
                failed=failed,
            )
            self._flights[move.move_id] = flight
            self._mark_moving(flight, now)
            log.warning(
                "journal replay",
                group=move.group,
                move_id=move.move_id,
                reason=f"following move {move.move_id} of {move.group} left in flight: "
                f"{len(follow)} task(s) to follow, {len(unknown)} submission(s) to look up, "
                f"{len(unsent)} block(s) not sent",
            )
            await self._journal.record(
                "replay",
                f"following move {move.move_id} after a restart",
                at=now,
                group=move.group,
                move_id=move.move_id,
                details={"force": flight.force},
            )
            flight.task = loop.create_task(
                self._execute(
                    flight,
                    fresh=False,
                    follow=follow,
                    unknown=unknown,
                    unsent=unsent if group is not None else (),
                ),
                name=f"move {move.move_id} (replay)",
            )

    async def _resume(
        self,
        flight: _Flight,
        follow: list[tuple[str, MoveTicket]],
        unknown: list[tuple[str, str]],
        unsent: list[str],
    ) -> None:
        deadline = asyncio.get_running_loop().time() + self._policy.api.move_timeout
        flight.phase = "task"
        jobs: list[Awaitable[_BlockResult]] = [
            self._follow(flight, b, t, deadline) for b, t in follow
        ]
        jobs += [self._lookup_after_restart(flight, b, t) for b, t in unknown]
        keys = [(b, t.target) for b, t in follow] + list(unknown)
        results = await asyncio.gather(*jobs)
        for (block, target), res in zip(keys, results, strict=True):
            if res.outcome == "verified":
                flight.moved[block] = target
            elif res.outcome == "unsent":
                unsent.append(block)
            else:
                flight.failed[block] = f"{target}: {res.reason}"
        if unsent and not self._stopping:
            # Part of this move went out: send the rest the same way, so a crash does not
            # leave the group split between two servers.
            await self._attempts(flight, unsent, replan=True)

    async def _lookup_after_restart(self, flight: _Flight, block: str, target: str) -> _BlockResult:
        """The journal says `submitting` and no task id: did that POST reach OVH?"""
        deadline = asyncio.get_running_loop().time() + self._policy.api.move_timeout
        found = await self._find_submission(
            flight,
            block,
            target,
            deadline,
            task_found="task found after a restart",
            routed=f"routedTo {target} after a restart",
        )
        if found is not None:
            return found
        reason = "not submitted before the restart (no task, routing unchanged)"
        await self._step(flight, block, target, "abandoned", reason=reason)
        return _BlockResult("unsent", reason)

    # ================================================================== persistence

    def _persist(self) -> None:
        state = _persisted(self._state)
        if state == self._saved:
            return
        self._saved = state
        self._write(self._journal.save_state(state, at=self._wall()))

    def _write(self, coro: Coroutine[Any, Any, None]) -> None:
        """Queue a journal write that nothing waits for (kept in order by the journal thread)."""
        task = asyncio.get_running_loop().create_task(_logged(coro, "journal write failed"))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(_logged(coro, f"{name} failed"), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ================================================================== shutdown

    async def _shutdown(self) -> None:
        self._stopping = True
        self._running = False
        if self._critical:
            log.info(
                "waiting for submissions to reach the journal",
                reason=f"{self._critical} move submission(s) in progress",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._critical_done.wait(), self._shutdown_grace)
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        tasks += list(self._background) + self._roots
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        if self._hooks is not None:
            await self._hooks.close()


# ====================================================================== helpers


def _block(text: str) -> Block:
    return ipaddress.ip_network(text, strict=False)


def _discard(future: asyncio.Future[Any] | None) -> None:
    """Cancel a result no longer wanted, and keep its error (if any) from being reported."""
    if future is None:
        return
    future.cancel()
    future.add_done_callback(lambda f: None if f.cancelled() else f.exception())


def _fold(reason: str) -> str:
    """A reason with its numbers folded, so a countdown does not count as a change."""
    return re.sub(r"\d+(\.\d+)?", "#", reason)


async def _logged(coro: Coroutine[Any, Any, None], what: str) -> None:
    try:
        await coro
    except FailoverdError as exc:
        log.error(what, reason=str(exc))


def _persisted(state: EngineState) -> PersistedState:
    return PersistedState(
        groups={
            name: PersistedGroup(
                cooldown_until=gs.cooldown_until,
                paused=gs.paused,
                pause_until=gs.pause_until,
                pause_reason=gs.pause_reason,
                last_move_at=gs.last_move_at,
            )
            for name, gs in state.groups.items()
        },
        failovers=tuple(state.failovers),
    )


def _restore(state: EngineState, saved: PersistedState) -> EngineState:
    groups: dict[str, GroupState] = {}
    for name, gs in state.groups.items():
        p = saved.groups.get(name)
        if p is not None:
            gs = replace(
                gs,
                cooldown_until=p.cooldown_until,
                paused=p.paused,
                pause_until=p.pause_until,
                pause_reason=p.pause_reason,
                last_move_at=p.last_move_at,
            )
        groups[name] = gs
    return replace(state, groups=MappingProxyType(groups), failovers=tuple(saved.failovers))
