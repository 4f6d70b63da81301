"""The pure decision core (SPEC §5, STYLE habits 1, 2, 4).

``decide(state, observation, policy)`` returns the next state, the actions to take and a
sentence saying why. Nothing here waits, reads a clock, logs or talks to anything: the
supervisor observes, calls in, and acts. The only clock is ``Observation.now`` (wall-clock
epoch seconds), so cooldowns, pauses and the failover window survive a restart when the
supervisor persists this state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType

from failoverd.model import (
    BlockedReason,
    Eligibility,
    GroupStatus,
    GuardName,
    Health,
    MoveResult,
    ServerHealth,
    ServiceInfo,
    Trigger,
)
from failoverd.policy import Block, GroupPolicy, Policy, block_str

# Regions whose blocks may move between each other (SPEC §1); any other region only to itself.
EU_WEST = frozenset({"eu-west-gra", "eu-west-rbx", "eu-west-sbg"})

_EMPTY: Mapping[str, str] = MappingProxyType({})


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class GroupState:
    cooldown_until: float = 0.0  # wall; no automatic move before it
    paused: bool = False
    pause_until: float | None = None  # None = until resumed
    pause_reason: str | None = None
    moving: str | None = None  # move id while a move of the group is in flight
    degraded: str | None = None  # why the down holder is not being replaced (None = it is fine)
    blocked: BlockedReason | None = None  # last Blocked reason emitted (emit only on change)
    reason: str = ""  # the latest decision sentence for this group
    # Appended by the core (defaults keep the shared contract):
    moving_to: str | None = None  # target of the in-flight move, counted against capacity
    last_move_at: float | None = None  # wall time the latest move finished (for sentences)
    drift: str | None = None  # last drift message reported (DriftDetected only on change)
    moving_trigger: Trigger | None = None  # an automatic move in flight counts for max_failovers


@dataclass(frozen=True)
class EngineState:
    groups: Mapping[str, GroupState]  # one per policy group
    failovers: tuple[float, ...] = ()  # wall times of automatic failovers (max_failovers)
    guards: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # active guard -> reason

    @staticmethod
    def initial(policy: Policy) -> EngineState:
        return EngineState(groups=MappingProxyType({name: GroupState() for name in policy.groups}))


@dataclass(frozen=True)
class Observation:
    now: float  # wall
    health: Mapping[str, ServerHealth]  # servers and canaries (canary=True); times are wall
    routing: Mapping[str, str | None]  # block_str -> service (None = parked); missing = unread
    eligibility: Mapping[tuple[str, str], Eligibility] = field(
        default_factory=lambda: MappingProxyType({})
    )  # (server, block_str) -> latest known verdict (preflight or move time)
    services: Mapping[str, ServiceInfo] = field(default_factory=lambda: MappingProxyType({}))
    block_regions: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # block_str -> BlockInfo.regions


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartMove:
    group: str
    target: str
    blocks: tuple[str, ...]  # block_str of the blocks to move (those not already on target)
    trigger: Trigger
    reason: str
    considered: tuple[tuple[str, str], ...] = ()  # (server, why skipped / "chosen") in order
    force: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class Blocked:
    group: str
    reason: BlockedReason
    message: str


@dataclass(frozen=True)
class DriftDetected:
    group: str
    message: str


Action = StartMove | Blocked | DriftDetected


@dataclass(frozen=True)
class Decision:
    state: EngineState
    actions: tuple[Action, ...]
    reason: str  # one sentence summarising this cycle
    statuses: Mapping[str, GroupStatus] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Refusal:
    status: int  # 404 unknown group/target, 409 conflict (cooldown, guard, in flight), 422
    reason: str


# --------------------------------------------------------------------------- formatting


def human_duration(seconds: float) -> str:
    """``552`` → ``9m12s``, ``600`` → ``10m``, ``3900`` → ``1h5m``; rounded up to a second."""
    total = max(0, math.ceil(seconds - 1e-9))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"


def clock(at: float) -> str:
    """A wall time as ``14:02:11Z`` (UTC, what an on-call reads next to their graphs)."""
    return datetime.fromtimestamp(at, tz=UTC).strftime("%H:%M:%SZ")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _names(items: Iterable[str]) -> str:
    seq = list(items)
    if len(seq) <= 1:
        return "".join(seq)
    return f"{', '.join(seq[:-1])} and {seq[-1]}"


# --------------------------------------------------------------------------- holder


def holder(group: GroupPolicy, routing: Mapping[str, str | None]) -> tuple[str | None, str | None]:
    """(holder, drift message) from the routing of the group's blocks that are known.

    The holder is the one group member every known block is routed to. Blocks spread over
    several services, parked, or routed outside the group are drift: reported, never fixed.
    No block read yet gives (None, None).
    """
    seen: list[str | None] = []
    for block in group.blocks:
        key = block_str(block)
        if key in routing and (routing[key] or None) not in seen:
            seen.append(routing[key] or None)  # OVH answers null or "" for a parked block
    if not seen:
        return None, None
    if len(seen) == 1:
        only = seen[0]
        if only is None:
            return None, f"blocks of {group.name} parked (routed to no service)"
        if only in group.members:
            return only, None
        return None, f"blocks of {group.name} routed to {only}, outside the group"
    names = [s if s is not None else "nowhere (parked)" for s in seen]
    message = f"blocks of {group.name} routed to {_names(names)}"
    outside = [s for s in seen if s is not None and s not in group.members]
    if outside:
        message += f"; {_names(outside)} outside the group"
    return None, message


# --------------------------------------------------------------------------- guards


def _is_failing(h: ServerHealth) -> bool:
    # A server counts from its first failed round (SPEC §5.7), and while still down.
    return h.failing or h.health is Health.DOWN


def active_guards(
    state: EngineState, obs: Observation, policy: Policy
) -> tuple[dict[str, str], tuple[float, ...]]:
    """The guards active before this cycle plans anything: (name -> reason, the automatic
    failovers counted in the max_failovers window)."""
    guards: dict[str, str] = {}
    mass = policy.guards.mass_failure
    total = len(policy.servers)
    failing = sum(
        1
        for name in policy.servers
        if (h := obs.health.get(name)) is not None and not h.canary and _is_failing(h)
    )
    if total and failing >= mass.min_servers and failing >= mass.fraction * total:
        guards["mass_failure"] = (
            f"mass failure: {failing} of {total} servers failing "
            f"(≥ {mass.fraction * 100:g}%); automatic moves frozen"
        )
    canaries = [h for h in obs.health.values() if h.canary]
    if canaries and all(_is_failing(h) for h in canaries):
        guards["canary"] = (
            f"canary: all {len(canaries)} {'canary' if len(canaries) == 1 else 'canaries'} "
            "failing; failoverd itself may be cut off; automatic moves frozen"
        )
    mf = policy.guards.max_failovers
    recent = tuple(t for t in state.failovers if t > obs.now - mf.window)
    if len(recent) >= mf.count:
        # The window slides: moves resume when the oldest counted failover leaves it.
        resume_at = sorted(recent)[len(recent) - mf.count] + mf.window
        guards["max_failovers"] = (
            f"max failovers: {_plural(len(recent), 'automatic failover')} in the last "
            f"{human_duration(mf.window)} (limit {mf.count}); automatic moves frozen "
            f"until {clock(resume_at)}"
        )
    elif len(recent) + _auto_in_flight(state) >= mf.count:
        guards["max_failovers"] = _Budget(mf.count, len(recent), _auto_in_flight(state)).message(
            mf.window
        )
    return guards, recent


def _auto_in_flight(state: EngineState) -> int:
    return sum(1 for g in state.groups.values() if g.moving and g.moving_trigger == "auto")


@dataclass
class _Budget:
    """What is left of max_failovers in this cycle: moves in flight and planned count too.

    Without this, ten primaries failing in one cycle would start ten moves under a limit of
    five, since the window only learns of a failover when it finishes.
    """

    limit: int
    done: int  # finished automatic failovers inside the window
    started: int  # automatic moves in flight or planned in this cycle

    @property
    def left(self) -> int:
        return self.limit - self.done - self.started

    def message(self, window: float) -> str:
        return (
            f"max failovers: {_plural(self.done, 'automatic failover')} in the last "
            f"{human_duration(window)} and {self.started} under way (limit {self.limit}); "
            "automatic moves frozen"
        )


_GUARD_ORDER: tuple[GuardName, ...] = ("mass_failure", "canary", "max_failovers")


def _guard_message(guards: Mapping[str, str]) -> str | None:
    for name in _GUARD_ORDER:
        if name in guards:
            return guards[name]
    return None


# --------------------------------------------------------------------------- target choice


def zone_compatible(server_region: str, block_region: str) -> bool:
    """SPEC §1: a block moves inside its region; GRA, RBX and SBG interoperate."""
    if server_region == block_region:
        return True
    return server_region in EU_WEST and block_region in EU_WEST


def candidates(group: GroupPolicy, current: str | None) -> tuple[str, ...]:
    """The group's other servers in order: the primary first when a standby holds it."""
    if current is None or current == group.primary:
        order = group.standbys if current == group.primary else group.members
    else:
        order = (group.primary, *group.standbys)
    return tuple(s for s in order if s != current)


def _standby_holds(
    state: EngineState,
    policy: Policy,
    routing: Mapping[str, str | None],
    holders: Mapping[str, str | None] | None = None,
) -> dict[str, int]:
    """How many groups each server holds *as a standby*, counting moves in flight."""
    counts: dict[str, int] = {}
    for name, group in policy.groups.items():
        gs = state.groups.get(name)
        current = holders[name] if holders is not None else holder(group, routing)[0]
        taker = gs.moving_to if gs is not None and gs.moving else None
        taker = taker or current
        if taker is not None and taker != group.primary:
            counts[taker] = counts.get(taker, 0) + 1
    return counts


def cannot_take(server: str, blocks: Iterable[Block], obs: Observation) -> str | None:
    """Why `server` could never take these blocks (zone, /32 to a VPS, a known verdict).

    Health and capacity aside: this is what preflight answers for a standby. Facts that are
    not known (no service info, no block regions, no verdict yet) do not disqualify.
    """
    service = obs.services.get(server)
    blocks = tuple(blocks)
    if service is not None:
        for block in blocks:
            regions = obs.block_regions.get(block_str(block), ())
            if regions and not any(zone_compatible(service.region, r) for r in regions):
                return f"in {service.region} cannot take blocks of {', '.join(regions)}"
    for block in blocks:
        key = block_str(block)
        if (
            service is not None
            and service.kind == "vps"
            and block.version == 4
            and block.prefixlen != 32
        ):
            return f"cannot take {key} (/{block.prefixlen} to a VPS)"
        verdict = obs.eligibility.get((server, key))
        if verdict is not None and not verdict.ok:
            return f"cannot take {key} ({verdict.reason})"
    return None


def eligible_standbys(obs: Observation, group: GroupPolicy) -> dict[str, bool]:
    """Standby -> could take over every block of the group (for status and the metric)."""
    return {s: cannot_take(s, group.blocks, obs) is None for s in group.standbys}


def _why_not(
    server: str,
    group: GroupPolicy,
    obs: Observation,
    policy: Policy,
    holds: Mapping[str, int],
    blocks: Sequence[Block] | None = None,
) -> str | None:
    """Why `server` cannot take the group's blocks now, or None when it can."""
    h = obs.health.get(server)
    if h is None or h.health is Health.UNKNOWN:
        return "health unknown"
    if h.health is Health.DOWN:
        return "down"
    sp = policy.servers.get(server)
    if sp is not None and sp.capacity is not None and server != group.primary:
        held = holds.get(server, 0)
        if held >= sp.capacity:
            return f"at capacity ({held} of {sp.capacity} groups)"
    return cannot_take(server, group.blocks if blocks is None else blocks, obs)


def _choose(
    order: Iterable[str],
    group: GroupPolicy,
    obs: Observation,
    policy: Policy,
    holds: Mapping[str, int],
    blocks: Sequence[Block] | None = None,
) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    considered: list[tuple[str, str]] = []
    for server in order:
        why = _why_not(server, group, obs, policy, holds, blocks)
        if why is None:
            considered.append((server, "chosen"))
            return server, tuple(considered)
        considered.append((server, why))
    return None, tuple(considered)


def _skipped(considered: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{s} {why}" for s, why in considered if why != "chosen")


def _blocks_to_move(
    group: GroupPolicy, routing: Mapping[str, str | None], target: str
) -> tuple[str, ...]:
    return tuple(block_str(b) for b in group.blocks if routing.get(block_str(b), None) != target)


def _move_sentence(
    phrase: str, n: int, source: str | None, target: str, considered: Iterable[tuple[str, str]]
) -> str:
    sentence = f"{phrase}; moving {_plural(n, 'block')} "
    sentence += f"from {source} to {target}" if source else f"to {target}"
    skipped = _skipped(considered)
    return f"{sentence}; skipped {skipped}" if skipped else sentence


def _cooldown_message(gs: GroupState, name: str, now: float) -> str:
    left = human_duration(gs.cooldown_until - now)
    if gs.last_move_at is not None:
        return f"{name} in cooldown for {left} after the move at {clock(gs.last_move_at)}"
    return f"{name} in cooldown for {left}"


def _pause_message(gs: GroupState, name: str) -> str:
    until = f" until {clock(gs.pause_until)}" if gs.pause_until is not None else ""
    why = f" ({gs.pause_reason})" if gs.pause_reason else ""
    return f"{name} paused{until}{why}"


# --------------------------------------------------------------------------- decide


def _role(group: GroupPolicy, server: str) -> str:
    return "primary" if server == group.primary else "standby"


def _health(obs: Observation, server: str) -> ServerHealth | None:
    return obs.health.get(server)


def _down_phrase(group: GroupPolicy, server: str, h: ServerHealth) -> str:
    checks = f" for {_plural(h.consecutive_fail, 'check')}" if h.consecutive_fail else ""
    return f"{_role(group, server)} {server} down{checks}"


def _status(gs: GroupState, current: str | None, group: GroupPolicy) -> GroupStatus:
    if gs.moving:
        return GroupStatus.MOVING
    if gs.drift:
        return GroupStatus.DRIFT
    if gs.paused:
        return GroupStatus.PAUSED
    if gs.degraded:
        return GroupStatus.DEGRADED
    if current is not None and current != group.primary:
        return GroupStatus.FAILED_OVER
    return GroupStatus.NOMINAL


def decide(state: EngineState, obs: Observation, policy: Policy) -> Decision:
    """One cycle: guards, pause expiry, triggers, target choice, failback, drift."""
    guards, recent = active_guards(state, obs, policy)
    guard_msg = _guard_message(guards)
    mf = policy.guards.max_failovers
    budget = _Budget(mf.count, len(recent), _auto_in_flight(state))
    held = {name: holder(group, obs.routing) for name, group in policy.groups.items()}
    holds = _standby_holds(state, policy, obs.routing, {n: h for n, (h, _) in held.items()})
    actions: list[Action] = []
    new_groups: dict[str, GroupState] = {}
    statuses: dict[str, GroupStatus] = {}
    for name, group in policy.groups.items():
        gs, mine = _decide_group(
            state.groups.get(name) or GroupState(),
            group,
            held[name],
            obs,
            policy,
            guard_msg,
            holds,
            budget,
        )
        actions += mine
        new_groups[name] = gs
        statuses[name] = _status(gs, held[name][0], group)
    if budget.left <= 0 and "max_failovers" not in guards:
        guards["max_failovers"] = budget.message(mf.window)
    return Decision(
        state=EngineState(
            groups=MappingProxyType(new_groups),
            failovers=recent,
            guards=MappingProxyType(guards),
        ),
        actions=tuple(actions),
        reason=_summary(actions, statuses, guards),
        statuses=MappingProxyType(statuses),
    )


def _decide_group(
    gs: GroupState,
    group: GroupPolicy,
    held: tuple[str | None, str | None],
    obs: Observation,
    policy: Policy,
    guard_msg: str | None,
    holds: dict[str, int],  # updated when a move to a standby is planned in this cycle
    budget: _Budget,  # updated when an automatic move is planned in this cycle
) -> tuple[GroupState, list[Action]]:
    name, now = group.name, obs.now
    actions: list[Action] = []
    notes: list[str] = []
    if gs.paused and gs.pause_until is not None and now >= gs.pause_until:
        notes.append(f"pause of {name} expired at {clock(gs.pause_until)}")
        gs = replace(gs, paused=False, pause_until=None, pause_reason=None)

    current, drift = held
    if drift != gs.drift:
        if drift is not None:
            actions.append(DriftDetected(group=name, message=drift))
        gs = replace(gs, drift=drift)

    blocked: Blocked | None = None
    degraded: str | None = None
    if gs.moving:
        reason = f"move {gs.moving} of {name}"
        reason += f" to {gs.moving_to} in flight" if gs.moving_to else " in flight"
        degraded = gs.degraded  # a retry of a degraded group does not clear it until it ends
    elif drift is not None:
        reason = drift
    elif current is None:
        reason = f"routing of {name} not read yet"
    else:
        reason, want = _want(gs, group, current, obs)
        if want is not None:
            trigger, phrase = want
            if gs.paused:
                blocked = Blocked(
                    name, "paused", f"{phrase}, not moving; {_pause_message(gs, name)}"
                )
            elif guard_msg is not None:
                blocked = Blocked(name, "guard", f"{phrase}, not moving; {guard_msg}")
            elif trigger == "auto" and now < gs.cooldown_until:
                msg = f"{phrase}, not moving; {_cooldown_message(gs, name, now)}"
                blocked = Blocked(name, "cooldown", msg)
            elif trigger == "auto" and budget.left <= 0:
                msg = f"{phrase}, not moving; {budget.message(policy.guards.max_failovers.window)}"
                blocked = Blocked(name, "guard", msg)
            else:
                order = (group.primary,) if trigger == "failback" else candidates(group, current)
                target, considered = _choose(order, group, obs, policy, holds)
                if target is None and trigger == "failback":
                    # The standby is healthy: staying put is safe, so this is no alert.
                    reason = f"{phrase} but cannot take {name} back: {_skipped(considered)}"
                elif target is None:
                    degraded = f"no eligible standby for {name}: {_skipped(considered)}"
                    msg = f"{phrase}, not moving; {degraded}"
                    blocked = Blocked(name, "no_eligible_target", msg)
                else:
                    blocks = _blocks_to_move(group, obs.routing, target)
                    text = _move_sentence(phrase, len(blocks), None, target, considered)
                    dry = policy.daemon.dry_run
                    move = StartMove(
                        group=name,
                        target=target,
                        blocks=blocks,
                        trigger=trigger,
                        reason=f"dry run: {text}" if dry else text,
                        considered=considered,
                        dry_run=dry,
                    )
                    actions.append(move)
                    reason = move.reason
                    if target != group.primary:
                        holds[target] = holds.get(target, 0) + 1
                    if trigger == "auto":
                        budget.started += 1
            if blocked is not None:
                reason = blocked.message
                if trigger == "auto" and blocked.reason in ("guard", "cooldown"):
                    # The holder is down and nothing will be done about it: that pages like a
                    # missing candidate does (a pause is the operator's own choice).
                    degraded = blocked.message
                if blocked.reason != gs.blocked:
                    actions.append(blocked)

    fields = (
        blocked.reason if blocked is not None else None,
        degraded,
        "; ".join([*notes, reason]),
    )
    if fields != (gs.blocked, gs.degraded, gs.reason):
        # Skipped when nothing changed: the steady state is most cycles, for every group.
        gs = replace(gs, blocked=fields[0], degraded=fields[1], reason=fields[2])
    return gs, actions


def _want(
    gs: GroupState, group: GroupPolicy, current: str, obs: Observation
) -> tuple[str, tuple[Trigger, str] | None]:
    """(idle sentence, wanted move as (trigger, phrase) or None) for a group with a holder."""
    name = group.name
    h = _health(obs, current)
    if h is not None and h.health is Health.DOWN:
        return "", ("auto", _down_phrase(group, current, h))
    health = h.health.value if h is not None else "unknown"
    health_note = "health unknown" if health == "unknown" else health
    if current == group.primary:
        return f"{name} on primary {current} ({health_note})", None
    here = f"{name} on standby {current} ({health_note})"
    if group.failback.mode == "manual":
        return f"{here}; failback is manual", None
    p = _health(obs, group.primary)
    if p is None or p.health is not Health.UP:
        state = "down" if p is not None and p.health is Health.DOWN else "health unknown"
        return f"{here}; primary {group.primary} {state}, no failback", None
    up_for = obs.now - p.since
    if up_for < group.failback.after:
        wait = human_duration(group.failback.after - up_for)
        return (
            f"{here}; failback to {group.primary} in {wait} "
            f"(up for {human_duration(up_for)} of {human_duration(group.failback.after)})"
        ), None
    if obs.now < gs.cooldown_until:
        return f"{here}; failback waits: {_cooldown_message(gs, name, obs.now)}", None
    return "", ("failback", f"failback: primary {group.primary} up for {human_duration(up_for)}")


def _summary(
    actions: Iterable[Action], statuses: Mapping[str, GroupStatus], guards: Mapping[str, str]
) -> str:
    parts: list[str] = []
    for action in actions:
        if isinstance(action, StartMove):
            parts.append(f"{action.group}: {action.reason}")
        else:
            parts.append(f"{action.group}: {action.message}")
    if parts:
        return "; ".join(parts)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status.value] = counts.get(status.value, 0) + 1
    text = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
    text = f"no action: {_plural(len(statuses), 'group')}" + (f" ({text})" if text else "")
    guard = _guard_message(guards)
    return f"{text}; {guard}" if guard else text


# --------------------------------------------------------------------------- manual move


def plan_manual_move(
    state: EngineState,
    obs: Observation,
    policy: Policy,
    group: str,
    *,
    to: str | None,
    force: bool,
    dry_run: bool,
) -> StartMove | Refusal:
    """An operator's move through the same safety path; force passes cooldown and guards only."""
    g = policy.groups.get(group)
    if g is None:
        return Refusal(404, f"unknown group {group}")
    gs = state.groups.get(group) or GroupState()
    if gs.moving:
        return Refusal(409, f"move {gs.moving} of {group} already in flight")
    if to is not None and to not in g.members:
        members = f"primary {g.primary}, standbys {', '.join(g.standbys)}"
        return Refusal(404, f"{to} is not a server of group {group} ({members})")

    overridden: list[str] = []
    guards, _ = active_guards(state, obs, policy)
    guard_msg = _guard_message(guards)
    if obs.now < gs.cooldown_until:
        msg = _cooldown_message(gs, group, obs.now)
        if not force:
            return Refusal(409, f"{msg}; use --force to move anyway")
        overridden.append(msg)
    if guard_msg is not None:
        if not force:
            return Refusal(409, f"{guard_msg}; use --force to move anyway")
        overridden.append(guard_msg)

    current, drift = holder(g, obs.routing)
    holds = _standby_holds(state, policy, obs.routing)
    if to is not None:
        if _blocks_to_move(g, obs.routing, to) == ():
            return Refusal(409, f"every block of {group} is already on {to}")
        why = _why_not(to, g, obs, policy, holds)
        if why is not None:
            return Refusal(422, f"cannot move {group} to {to}: {to} {why}")
        target = to
        considered: tuple[tuple[str, str], ...] = ((to, "chosen"),)
    else:
        order = candidates(g, current if drift is None else None)
        chosen, considered = _choose(order, g, obs, policy, holds)
        if chosen is None:
            skipped = _skipped(considered) or "no other server"
            return Refusal(422, f"no eligible standby for {group}: {skipped}")
        target = chosen

    blocks = _blocks_to_move(g, obs.routing, target)
    text = _move_sentence(f"manual move of {group}", len(blocks), current, target, considered)
    if overridden:
        text += f"; forced past: {'; '.join(overridden)}"
    return StartMove(
        group=group,
        target=target,
        blocks=blocks,
        trigger="manual",
        reason=f"dry run: {text}" if dry_run else text,
        considered=considered,
        force=force,
        dry_run=dry_run,
    )


def plan_retry(
    state: EngineState,
    obs: Observation,
    policy: Policy,
    group: str,
    *,
    source: str | None,
    blocks: Sequence[str],
    tried: Sequence[str],
    trigger: Trigger,
    force: bool = False,
    dry_run: bool = False,
) -> StartMove | Blocked:
    """The next candidate for the blocks a move could not place (SPEC §5.4, partial failover).

    `source` is the holder the move started from (it sets the candidate order), `tried` the
    targets already attempted, in order. The retry belongs to a failover that already passed
    the trigger, guards and cooldown, so only health, capacity and eligibility are checked,
    and only for the blocks left.
    """
    g = policy.groups[group]
    left = tuple(b for b in g.blocks if block_str(b) in set(blocks))
    order = [s for s in candidates(g, source) if s not in tried]
    holds = _standby_holds(state, policy, obs.routing)
    target, considered = _choose(order, g, obs, policy, holds, left)
    failed_on = tried[-1] if tried else "the target"
    phrase = f"{failed_on} did not take {_names(block_str(b) for b in left)}"
    if target is None:
        skipped = _skipped(considered) or "no other server"
        return Blocked(
            group,
            "no_eligible_target",
            f"{phrase}; no other eligible standby for {group}: {skipped}",
        )
    text = _move_sentence(phrase, len(left), None, target, considered)
    return StartMove(
        group=group,
        target=target,
        blocks=tuple(block_str(b) for b in left),
        trigger=trigger,
        reason=f"dry run: {text}" if dry_run else text,
        considered=considered,
        force=force,
        dry_run=dry_run,
    )


# --------------------------------------------------------------------------- transitions


def _with_group(state: EngineState, group: str, gs: GroupState) -> EngineState:
    groups = dict(state.groups)
    groups[group] = gs
    return replace(state, groups=MappingProxyType(groups))


def move_started(
    state: EngineState,
    group: str,
    move_id: str,
    now: float,
    target: str | None = None,
    trigger: Trigger | None = None,
) -> EngineState:
    """A move of `group` is in flight: no other StartMove for it until it finishes.

    Pass `target` so capacity counts it and `trigger` so an automatic move counts for
    max_failovers while it runs (the window itself learns of it in move_finished).
    """
    gs = state.groups.get(group) or GroupState()
    return _with_group(
        state, group, replace(gs, moving=move_id, moving_to=target, moving_trigger=trigger)
    )


def move_finished(
    state: EngineState,
    group: str,
    *,
    trigger: Trigger,
    result: MoveResult,
    now: float,
    cooldown: float,
    dry_run: bool = False,
) -> EngineState:
    """The move ended: cooldown starts whatever the result, so a failing move cannot loop.

    A dry run moved nothing, so it never counts for max_failovers. The daemon's own dry run
    (``daemon.dry_run``: an automatic or failback move) still starts the cooldown, so the
    daemon says what it would do once per cooldown instead of at every cycle; an operator's
    rehearsal (manual) does not, so it cannot hold back a real failover afterwards.
    """
    gs = state.groups.get(group) or GroupState()
    if dry_run and trigger == "manual":
        gs = replace(
            gs,
            moving=None,
            moving_to=None,
            moving_trigger=None,
            reason=f"dry run of {group} done; nothing moved, no cooldown",
        )
        return _with_group(state, group, gs)
    gs = replace(
        gs,
        moving=None,
        moving_to=None,
        moving_trigger=None,
        cooldown_until=now + cooldown,
        last_move_at=now,
        blocked=None,
        degraded=None,
    )
    if dry_run:
        gs = replace(
            gs,
            reason=f"dry run of {group} done; nothing moved; "
            f"{group} in cooldown until {clock(now + cooldown)}",
        )
    counted = trigger == "auto" and not dry_run
    failovers = (*state.failovers, now) if counted else state.failovers
    return replace(_with_group(state, group, gs), failovers=failovers)


def move_abandoned(
    state: EngineState, group: str, *, now: float, why: str, retry_after: float = 0.0
) -> EngineState:
    """The move ended with nothing sent to OVH (vetoed, refused before the POST, aborted).

    No cooldown of a real move and nothing counted for max_failovers: the core may choose
    again at once, or, with `retry_after`, not before that long (a veto asked again at the
    next cycle would run the hook at every cycle). A group removed by a reload meanwhile is
    not brought back.
    """
    gs = state.groups.get(group)
    if gs is None:
        return state
    until = gs.cooldown_until
    reason = f"move of {group} ended with nothing moved: {why}"
    if retry_after > 0:
        until = max(until, now + retry_after)
        reason += f"; asked again at {clock(until)}"
    gs = replace(
        gs, moving=None, moving_to=None, moving_trigger=None, cooldown_until=until, reason=reason
    )
    return _with_group(state, group, gs)


def move_vetoed(
    state: EngineState, group: str, *, now: float, retry_after: float, veto: str
) -> EngineState:
    """The pre hook said no: nothing was sent; the group is asked again after `retry_after`."""
    return move_abandoned(
        state, group, now=now, why=f"pre hook vetoed it ({veto})", retry_after=retry_after
    )


def pause(
    state: EngineState, group: str, *, now: float, duration: float | None, reason: str | None
) -> EngineState:
    """Maintenance: observed, never moved automatically; expires by itself with a duration."""
    gs = state.groups.get(group) or GroupState()
    until = now + duration if duration is not None else None
    return _with_group(
        state, group, replace(gs, paused=True, pause_until=until, pause_reason=reason)
    )


def resume(state: EngineState, group: str) -> EngineState:
    gs = state.groups.get(group) or GroupState()
    return _with_group(
        state, group, replace(gs, paused=False, pause_until=None, pause_reason=None, blocked=None)
    )


def apply_policy(state: EngineState, policy: Policy) -> EngineState:
    """On reload: keep the state of groups that remain, add new ones, drop removed ones."""
    groups = {name: state.groups.get(name) or GroupState() for name in policy.groups}
    return replace(state, groups=MappingProxyType(groups))
