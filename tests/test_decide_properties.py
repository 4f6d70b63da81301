"""Properties of the decision core over generated worlds (hypothesis), beside the tables.

Whatever the health, routing, eligibility and group state, the core must never: start two
moves of a group, start one while a move is in flight, paused, guarded, drifting or (for an
automatic move) in cooldown, move to a server that is not up or known ineligible, or repeat
a Blocked / DriftDetected for an unchanged situation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from failoverd.decide import (
    Blocked,
    DriftDetected,
    EngineState,
    GroupState,
    Observation,
    Refusal,
    StartMove,
    active_guards,
    decide,
    holder,
    plan_manual_move,
)
from failoverd.model import Eligibility, Health, ServerHealth
from failoverd.policy import FailbackPolicy, Policy
from tests.test_decide import B1, B2, B3, NOW, group, make_policy

SERVERS = ("ns1", "ns2", "ns3", "ns4", "ns5", "ns6")
BLOCKS = (B1, B2, B3)


@dataclass(frozen=True)
class World:
    state: EngineState
    obs: Observation
    policy: Policy


health_st = st.builds(
    lambda name, health, failing, age, fails: ServerHealth(
        name,
        health,
        failing or health is Health.DOWN,
        NOW - age,
        NOW,
        "x",
        consecutive_fail=fails if health is Health.DOWN else 0,
    ),
    st.just(""),
    st.sampled_from([*[Health.UP] * 6, Health.DOWN, Health.UNKNOWN]),
    st.sampled_from([*[False] * 9, True]),
    st.sampled_from([0, 60, 599, 600, 3600]),
    st.integers(1, 5),
)
group_state_st = st.builds(
    GroupState,
    cooldown_until=st.sampled_from([0.0, 0.0, NOW - 1, NOW, NOW + 1, NOW + 600]),
    paused=st.sampled_from([False, False, True]),
    pause_until=st.sampled_from([None, NOW, NOW + 60]),
    pause_reason=st.sampled_from([None, "maintenance"]),
    moving=st.sampled_from([None, None, None, "m-1"]),
    blocked=st.sampled_from([None, "cooldown", "guard", "paused", "no_eligible_target"]),
    moving_to=st.sampled_from([None, "ns2", "ns3"]),
    moving_trigger=st.sampled_from([None, "auto", "manual"]),
)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    policy = make_policy(
        group(failback=FailbackPolicy(draw(st.sampled_from(["manual", "auto"])), after=600)),
        group("db", primary="ns4", standbys=("ns2", "ns3"), blocks=(B3,)),
        capacity={"ns2": draw(st.sampled_from([1, 2, 5]))},
    )
    health = {name: replace(draw(health_st), name=name) for name in SERVERS}
    for i in range(draw(st.integers(0, 2))):
        health[f"c{i}"] = replace(draw(health_st), name=f"c{i}", canary=True)
    # Mostly one holder per group (the interesting case), sometimes drift, parked or unread.
    routing: dict[str, str | None] = {}
    others = ["ns9", None, "missing"]
    for blocks, members in (((B1, B2), ["ns1", "ns2", "ns3"]), ((B3,), ["ns4", "ns2", "ns3"])):
        route = draw(st.sampled_from([*members, *members, *others, "split"]))
        for block in blocks:
            this = draw(st.sampled_from(members + others)) if route == "split" else route
            if this != "missing":
                routing[block] = this
    holder_of_web = routing.get(B1)
    if holder_of_web in health and draw(st.booleans()):
        # Half the time web's holder is down: the case where the core has to act.
        health[holder_of_web] = replace(health[holder_of_web], health=Health.DOWN, failing=True)
    bad = draw(st.sets(st.tuples(st.sampled_from(SERVERS), st.sampled_from(BLOCKS)), max_size=4))
    state = EngineState(
        groups={"web": draw(group_state_st), "db": draw(group_state_st)},
        failovers=tuple(
            NOW - 700 * i for i in range(draw(st.sampled_from([0, 0, 0, 1, 3, 4, 5, 6])))
        ),
    )
    obs = Observation(
        now=NOW,
        health=health,
        routing=routing,
        eligibility={key: Eligibility(False, "no") for key in bad},
    )
    return World(state, obs, policy)


def _up(obs: Observation, server: str) -> bool:
    h = obs.health.get(server)
    return h is not None and h.health is Health.UP


def _eligible(
    obs: Observation, server: str, blocks: Mapping[str, object] | tuple[str, ...]
) -> bool:
    return all(obs.eligibility.get((server, b), Eligibility(True, "")).ok for b in blocks)


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_automatic_decisions_are_safe(world: World) -> None:
    d = decide(world.state, world.obs, world.policy)
    assert list(d.state.groups) == list(world.policy.groups)
    assert d.reason
    limit = world.policy.guards.max_failovers
    planned = [a for a in d.actions if isinstance(a, StartMove) and a.trigger == "auto"]
    if planned:
        done = [t for t in world.state.failovers if t > world.obs.now - limit.window]
        going = [g for g in world.state.groups.values() if g.moving and g.moving_trigger == "auto"]
        assert len(done) + len(going) + len(planned) <= limit.count
    for name, g in world.policy.groups.items():
        before = world.state.groups[name]
        after = d.state.groups[name]
        assert after.reason
        mine = [a for a in d.actions if a.group == name]
        moves = [a for a in mine if isinstance(a, StartMove)]
        assert len(moves) <= 1
        assert sum(isinstance(a, Blocked) for a in mine) <= 1
        if not moves:
            continue
        (m,) = moves
        current, drift = holder(g, world.obs.routing)
        paused = before.paused and not (
            before.pause_until is not None and world.obs.now >= before.pause_until
        )
        assert before.moving is None
        assert not paused
        assert drift is None
        assert current is not None
        assert "mass_failure" not in d.state.guards
        assert "canary" not in d.state.guards
        window = world.policy.guards.max_failovers
        done = [t for t in world.state.failovers if t > world.obs.now - window.window]
        under_way = [
            s for s in world.state.groups.values() if s.moving and s.moving_trigger == "auto"
        ]
        if m.trigger == "auto":
            assert len(done) + len(under_way) < window.count
        assert m.target in g.members
        assert m.target != current
        assert _up(world.obs, m.target)
        assert _eligible(world.obs, m.target, m.blocks)
        assert m.blocks
        assert set(m.blocks) <= {b.with_prefixlen for b in g.blocks}
        assert all(world.obs.routing.get(b) != m.target for b in m.blocks)
        if m.trigger == "auto":
            h = world.obs.health[current]
            assert h.health is Health.DOWN
            assert world.obs.now >= before.cooldown_until
        else:
            assert m.trigger == "failback"
            assert g.failback.mode == "auto"
            assert current != g.primary
            assert m.target == g.primary
            assert world.obs.now >= before.cooldown_until
            assert world.obs.now - world.obs.health[g.primary].since >= g.failback.after


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_an_unchanged_situation_is_not_reported_twice(world: World) -> None:
    first = decide(world.state, world.obs, world.policy)
    again = decide(first.state, world.obs, world.policy)
    assert not [a for a in again.actions if isinstance(a, Blocked | DriftDetected)]
    assert again.statuses == first.statuses
    assert decide(world.state, world.obs, world.policy) == first  # deterministic


@settings(max_examples=100, deadline=None)
@given(
    worlds(),
    st.sampled_from([None, "ns1", "ns2", "ns3", "ns9"]),
    st.booleans(),
)
def test_manual_moves_are_safe(world: World, to: str | None, force: bool) -> None:
    planned = plan_manual_move(
        world.state, world.obs, world.policy, "web", to=to, force=force, dry_run=False
    )
    web = world.state.groups["web"]
    # The guards as the operator's request meets them: before this cycle's automatic moves
    # (which decide() would also count against max_failovers) are planned.
    guarded = bool(active_guards(world.state, world.obs, world.policy)[0])
    if isinstance(planned, Refusal):
        assert planned.status in (404, 409, 422)
        assert planned.reason
        return
    assert web.moving is None
    assert _up(world.obs, planned.target)
    assert _eligible(world.obs, planned.target, planned.blocks)
    assert planned.trigger == "manual"
    assert planned.force is force
    assert planned.blocks
    if to is not None:
        assert planned.target == to
    if not force:
        assert not guarded
        assert world.obs.now >= web.cooldown_until
