"""Scenarios of SPEC §5 with the real simulator, real adapter, real checks, real journal.

Each asserts the simulator's final routing and its audit log (what OVH would have seen).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from failoverd.model import Health
from failoverd.policy import FailbackPolicy
from failoverd.sim.inventory import Fault
from tests.engine_world import (
    ONE_FAILOVER,
    ONE_UNDER_WAY,
    SLOW_TASKS,
    Grp,
    Srv,
    World,
    make_world,
)

B1, B2 = "203.0.113.8/29", "198.51.100.7/32"


@pytest.fixture
async def worlds() -> AsyncIterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        await w.close()


async def web_world(
    tmp_path: Path,
    http_server_factory: Callable[..., Awaitable[Any]],
    worlds: list[World],
    *faults: Fault,
) -> World:
    """ns1…ns4; group web: primary ns1, standbys ns2 then ns3, blocks B1 and B2.

    `faults` are in place before the engine's first look (its preflight included).
    """
    servers = [Srv("ns1"), Srv("ns2"), Srv("ns3"), Srv("ns4")]
    w = await make_world(
        tmp_path, http_server_factory, servers, [Grp("web", "ns1", ("ns2", "ns3"), (B1, B2))]
    )
    worlds.append(w)
    for fault in faults:
        w.sim.state.add_fault(fault)
    await w.settled()
    return w


async def test_primary_down_moves_to_the_first_eligible_standby(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    servers = [
        Srv("ns1", "eu-west-gra"),
        Srv("bhs1", "ca-east-bhs"),  # another region: cannot take GRA blocks
        Srv("ns2", "eu-west-rbx", healthy=False),  # down
        Srv("ns3", "eu-west-sbg"),  # the first eligible one
    ]
    group = Grp("web", "ns1", ("bhs1", "ns2", "ns3"), (B1, B2))
    w = await make_world(tmp_path, http_server_factory, servers, [group])
    worlds.append(w)
    await w.settled()
    assert w.health_of("ns2") is Health.DOWN

    w.kill("ns1")
    await w.until(lambda: w.routing(B1) == "ns3" and w.routing(B2) == "ns3" and w.idle())

    moves = w.moves()
    assert sorted((m["block"], m["from"], m["to"]) for m in moves) == sorted(
        [(B1, "ns1", "ns3"), (B2, "ns1", "ns3")]
    )
    assert len(moves) == 2
    (move,) = await w.journal.moves("web")
    assert move.result == "success"
    assert move.trigger == "auto"
    assert {(s.block, s.target, s.step) for s in move.steps} == {
        (B1, "ns3", "verified"),
        (B2, "ns3", "verified"),
    }
    assert "primary ns1 down" in move.reason
    assert w.metric("failoverd_failovers_total", group="web", trigger="auto", result="success") == 1
    view = w.supervisor.snapshot().groups[0]
    assert view.holder == "ns3"
    assert view.eligible == {"bhs1": False, "ns2": True, "ns3": True}
    assert w.metric("failoverd_standby_eligible", group="web", server="bhs1") == 0
    # Every phase of the failover was timed (SPEC §7): once per move, or once per block.
    counts = {
        phase: w.metric("failoverd_failover_phase_seconds_count", phase=phase)
        for phase in ("detect", "decide", "submit", "task", "verify", "total")
    }
    assert counts == {"detect": 1, "decide": 1, "submit": 2, "task": 2, "verify": 2, "total": 1}
    detect = w.metric("failoverd_failover_phase_seconds_sum", phase="detect")
    assert 0 < detect < 2.0  # fall 2 at 0.2 s: about one interval between the two rounds


async def test_flapping_primary_moves_at_most_once_per_cooldown(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    cooldown = 1.2
    servers = [Srv("ns1"), Srv("ns2"), Srv("ns3"), Srv("ns4")]
    group = Grp(
        "web", "ns1", ("ns2",), (B1,), cooldown=cooldown, failback=FailbackPolicy("auto", 0.1)
    )
    w = await make_world(tmp_path, http_server_factory, servers, [group])
    worlds.append(w)
    await w.settled()

    async def flap() -> None:
        # The stimulus: down for ~2.5 check intervals, up as long, three times over.
        for _ in range(3):
            w.kill("ns1")
            await asyncio.sleep(0.5)
            w.revive("ns1")
            await asyncio.sleep(0.5)

    await flap()
    await w.until(w.idle)

    moves = await w.journal.moves("web")
    assert moves, "the flapping primary never triggered a move"
    for before, after in itertools.pairwise(moves):
        assert before.finished is not None
        assert after.created >= before.finished + cooldown - 0.01, (before, after)
    # One POST per journaled move, no more: nothing was sent twice.
    assert len(w.moves(B1)) == len(moves)
    assert len(moves) <= 3  # 3 s of flapping with a 1.2 s cooldown


async def test_half_the_fleet_down_freezes_moves_until_it_clears(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    servers = [Srv(n) for n in ("p1", "p2", "p3", "s1", "s2", "s3")]
    groups = [
        Grp("g1", "p1", ("s1",), ("203.0.113.8/29",)),
        Grp("g2", "p2", ("s2",), ("203.0.113.16/29",)),
        Grp("g3", "p3", ("s3",), ("203.0.113.24/29",)),
    ]
    w = await make_world(tmp_path, http_server_factory, servers, groups)
    worlds.append(w)
    await w.settled()

    w.kill("p1", "p2", "p3")
    await w.until(lambda: all(w.health_of(p) is Health.DOWN for p in ("p1", "p2", "p3")))

    def guard_active() -> bool:
        return any(g.name == "mass_failure" and g.active for g in w.supervisor.snapshot().guards)

    await w.until(guard_active)
    # Several more rounds of checks go by while the guard holds: still nothing sent.
    rounds = w.health.current()["p1"].consecutive_fail
    await w.until(lambda: w.health.current()["p1"].consecutive_fail >= rounds + 6)
    assert w.moves() == []
    assert w.metric("failoverd_guard_active", guard="mass_failure") == 1
    assert w.metric("failoverd_failovers_blocked_total", group="g1", reason="guard") >= 1
    history = await w.supervisor.history("g1", 20)
    assert any(
        e.kind == "blocked" and "mass failure: 3 of 6 servers failing" in e.message for e in history
    )

    w.revive("p3")  # 2 of 6 failing: below min_servers, the guard clears
    await w.until(lambda: w.routing("203.0.113.8/29") == "s1")
    await w.until(lambda: w.routing("203.0.113.16/29") == "s2" and w.idle())
    assert not guard_active()
    assert w.routing("203.0.113.24/29") == "p3"
    assert sorted((m["block"], m["to"]) for m in w.moves()) == [
        ("203.0.113.16/29", "s2"),
        ("203.0.113.8/29", "s1"),
    ]


async def test_a_503_burst_during_a_move_still_moves_once(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    w = await web_world(tmp_path, http_server_factory, worlds)

    # Every API request answers 503 for the next 8 requests: submissions and task polls alike.
    w.sim.state.add_fault(Fault(kind="error", status=503, count=8))
    w.kill("ns1")
    await w.until(lambda: w.routing(B1) == "ns2" and w.routing(B2) == "ns2" and w.idle())

    assert any(r.status == 503 for r in w.sim.state.requests())
    assert sorted(m["block"] for m in w.moves()) == sorted([B1, B2])  # once each
    (move,) = await w.journal.moves("web")
    assert move.result == "success"


async def test_a_task_ending_in_ovh_error_goes_to_the_next_standby(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    w = await web_world(tmp_path, http_server_factory, worlds)

    w.sim.state.add_fault(
        Fault(kind="task", block=B2, count=1, task_status="ovhError", comment="router unreachable")
    )
    w.kill("ns1")
    await w.until(lambda: w.routing(B2) == "ns3" and w.idle())

    assert w.routing(B1) == "ns2"
    assert [(m["block"], m["to"]) for m in w.moves(B2)] == [(B2, "ns2"), (B2, "ns3")]
    assert [(m["block"], m["to"]) for m in w.moves(B1)] == [(B1, "ns2")]
    ends = [e for e in w.sim.state.audit() if e["action"] == "task_end" and e["block"] == B2]
    assert [e["outcome"] for e in ends] == ["ovhError: router unreachable", "done"]

    (move,) = await w.journal.moves("web")
    assert move.result == "partial"
    story = [(s.block, s.target, s.step) for s in await w.journal.all_steps(move.move_id)]
    assert (B2, "ns2", "failed") in story
    assert story.index((B2, "ns2", "failed")) < story.index((B2, "ns3", "submitting"))
    failed = next(s for s in move.steps if (s.block, s.target) == (B2, "ns2"))
    assert failed.reason is not None
    assert "ovhError: router unreachable" in failed.reason
    history = await w.supervisor.history("web", 50)
    finish = [e for e in history if e.kind == "move" and e.details.get("result") == "partial"]
    assert len(finish) == 1
    assert "failed on ns2" in finish[0].message
    assert w.metric("failoverd_failovers_total", group="web", trigger="auto", result="partial") == 1
    # Blocks now split between ns2 and ns3: drift, reported and left alone.
    await w.until(lambda: w.supervisor.snapshot().groups[0].status.value == "drift")


async def test_failback_auto_returns_after_the_hold_time_manual_stays(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    servers = [Srv("p1"), Srv("s1"), Srv("p2"), Srv("s2"), Srv("x1"), Srv("x2")]
    groups = [
        Grp(
            "auto",
            "p1",
            ("s1",),
            ("203.0.113.8/29",),
            cooldown=0.3,
            failback=FailbackPolicy("auto", 0.5),
        ),
        Grp("manual", "p2", ("s2",), ("203.0.113.16/29",), cooldown=0.3),
    ]
    w = await make_world(tmp_path, http_server_factory, servers, groups)
    worlds.append(w)
    await w.settled()

    w.kill("p1", "p2")
    await w.until(
        lambda: w.routing("203.0.113.8/29") == "s1" and w.routing("203.0.113.16/29") == "s2"
    )
    await w.until(w.idle)
    w.revive("p1", "p2")
    await w.until(lambda: w.health_of("p1") is Health.UP and w.health_of("p2") is Health.UP)
    up_at = asyncio.get_running_loop().time()

    await w.until(lambda: w.routing("203.0.113.8/29") == "p1" and w.idle())
    assert asyncio.get_running_loop().time() - up_at >= 0.5 - 0.1  # held for `after`
    assert w.routing("203.0.113.16/29") == "s2"  # manual: stays on the standby
    assert [(m["to"]) for m in w.moves("203.0.113.8/29")] == ["s1", "p1"]
    assert [(m["to"]) for m in w.moves("203.0.113.16/29")] == ["s2"]
    triggers = [m.trigger for m in await w.journal.moves("auto")]
    assert triggers == ["auto", "failback"]
    view = {g.name: g for g in w.supervisor.snapshot().groups}
    assert view["manual"].reason == "manual on standby s2 (up); failback is manual"


def _guard(w: World, name: str) -> str | None:
    """The reason of guard `name` when it is active, else None."""
    views = [g for g in w.supervisor.snapshot().guards if g.name == name and g.active]
    return views[0].reason if views else None


async def test_an_automatic_move_in_flight_counts_for_max_failovers(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    # The window learns of a failover when it ends; until then the move in flight must count,
    # or a second primary falling during a long task would be moved past the limit.
    servers = [Srv(n) for n in ("p1", "p2", "s1", "s2", "x1", "x2")]
    groups = [
        Grp("g1", "p1", ("s1",), ("203.0.113.8/29",)),
        Grp("g2", "p2", ("s2",), ("203.0.113.16/29",)),
    ]
    w = await make_world(
        tmp_path,
        http_server_factory,
        servers,
        groups,
        guards=ONE_FAILOVER,
        inventory_extra=SLOW_TASKS,
    )
    worlds.append(w)
    await w.settled()

    w.kill("p1")
    await w.until(
        lambda: _guard(w, "max_failovers") is not None or w.routing("203.0.113.8/29") == "s1"
    )
    assert not w.idle(), "the move of g1 ended before the check: the test proves nothing"
    assert _guard(w, "max_failovers") == ONE_UNDER_WAY

    w.kill("p2")
    blocked = "failoverd_failovers_blocked_total"
    await w.until(
        lambda: (
            w.metric(blocked, group="g2", reason="guard") >= 1 or bool(w.moves("203.0.113.16/29"))
        )
    )
    assert not w.idle()
    assert w.moves("203.0.113.16/29") == []
    await w.until(lambda: w.routing("203.0.113.8/29") == "s1" and w.idle())
    assert w.routing("203.0.113.16/29") == "p2"


async def test_a_failed_block_goes_to_a_standby_that_only_needs_to_take_that_block(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    # ns3 cannot take B1, but B1 stays on ns2 where it moved: only B2, whose task failed on
    # ns2, needs a home, and ns3 can take B2.
    w = await web_world(
        tmp_path,
        http_server_factory,
        worlds,
        Fault(
            kind="error",
            status=400,
            route="/dedicated/server/ns3/ipCanBeMovedTo*",
            block=B1,
            message="ns3 cannot receive this block",
        ),
        Fault(kind="task", block=B2, count=1, task_status="ovhError", comment="router unreachable"),
    )
    assert w.supervisor.snapshot().groups[0].eligible == {"ns2": True, "ns3": False}

    w.kill("ns1")
    await w.until(lambda: bool(w.moves(B2)) and w.idle())

    assert (w.routing(B1), w.routing(B2)) == ("ns2", "ns3")
    assert [(m["block"], m["to"]) for m in w.moves(B2)] == [(B2, "ns2"), (B2, "ns3")]
    assert [(m["block"], m["to"]) for m in w.moves(B1)] == [(B1, "ns2")]
    (move,) = await w.journal.moves("web")
    assert move.result == "partial"
    story = [(s.block, s.target, s.step, s.reason) for s in await w.journal.all_steps(move.move_id)]
    steps = [(b, t, step) for b, t, step, _ in story]
    assert (B1, "ns2", "verified") in steps
    assert (B1, "ns3", "planned") not in steps  # B1 is not moved again
    assert steps.index((B2, "ns2", "failed")) < steps.index((B2, "ns3", "planned"))
    assert steps.index((B2, "ns3", "planned")) < steps.index((B2, "ns3", "verified"))
    (replanned,) = [r for b, t, step, r in story if (b, t, step) == (B2, "ns3", "planned")]
    assert replanned == f"ns2 did not take {B2}; moving 1 block to ns3"
    assert move.reason is not None
    history = await w.supervisor.history("web", 50)
    (finish,) = [e for e in history if e.kind == "move" and e.details.get("result") == "partial"]
    assert f"({B1} to ns2, {B2} to ns3)" in finish.message
    assert f"{B2} failed on ns2: " in finish.message


async def test_a_block_no_standby_could_take_is_told_in_the_history(
    tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]], worlds: list[World]
) -> None:
    # B2's task fails on ns2, then on ns3: no standby is left for it.
    w = await web_world(
        tmp_path,
        http_server_factory,
        worlds,
        Fault(kind="task", block=B2, count=2, task_status="ovhError", comment="router unreachable"),
    )
    w.kill("ns1")
    await w.until(lambda: len(w.moves(B2)) == 2 and w.idle())

    assert (w.routing(B1), w.routing(B2)) == ("ns2", "ns1")
    assert [m["to"] for m in w.moves(B2)] == ["ns2", "ns3"]
    (move,) = await w.journal.moves("web")
    assert move.result == "partial"
    history = await w.supervisor.history("web", 50)
    (blocked,) = [e for e in history if e.kind == "blocked"]
    assert blocked.message == (
        f"ns3 did not take {B2}; no other eligible standby for web: no other server"
    )
    assert (blocked.move_id, blocked.details) == (move.move_id, {"reason": "no_eligible_target"})
    # Told before the move's end, where `failoverd history` reads it in order.
    (finish,) = [e for e in history if e.kind == "move" and e.details.get("result") == "partial"]
    assert blocked.id < finish.id
    # ...and counted, so the "no eligible target" alert sees it too.
    blocked_total = "failoverd_failovers_blocked_total"
    assert w.metric(blocked_total, group="web", reason="no_eligible_target") == 1
