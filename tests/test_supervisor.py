"""The engine's own API and its edges: manual moves, pause/resume, dry run, hooks, stop,
restart, reload — against the real simulator, checks and journal (tests/engine_world.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from failoverd.errors import MoveRefused, UnknownGroup
from failoverd.model import GroupStatus, JournaledMove
from failoverd.policy import HooksPolicy
from failoverd.sim.inventory import Fault
from failoverd.supervisor import Supervisor
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
SERVERS = [Srv("ns1"), Srv("ns2", "eu-west-rbx"), Srv("ns3", "eu-west-sbg"), Srv("ns4")]
WEB = Grp("web", "ns1", ("ns2", "ns3"), (B1, B2))

Factory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def worlds() -> AsyncIterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        await w.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for an async condition with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)  # polling a condition with a deadline


async def world(
    tmp_path: Path, factory: Factory, worlds: list[World], group: Grp = WEB, **kw: Any
) -> World:
    w = await make_world(tmp_path, factory, SERVERS, [group], **kw)
    worlds.append(w)
    await w.settled()
    return w


async def test_manual_move_goes_through_the_safety_path(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    sup = w.supervisor

    with pytest.raises(UnknownGroup, match="unknown group nope"):
        await sup.request_move("nope", to=None, force=False, dry_run=False)
    with pytest.raises(MoveRefused) as refused:
        await sup.request_move("web", to="ns9", force=False, dry_run=False)
    assert refused.value.status == 404
    w.kill("ns3")
    await w.until(lambda: w.health_of("ns3").value == "down")
    with pytest.raises(MoveRefused) as refused:
        await sup.request_move("web", to="ns3", force=True, dry_run=False)
    assert refused.value.status == 422
    assert str(refused.value) == "cannot move web to ns3: ns3 down"

    accepted = await sup.request_move("web", to=None, force=False, dry_run=False)
    assert (accepted.group, accepted.target, accepted.dry_run) == ("web", "ns2", False)
    assert set(accepted.blocks) == {B1, B2}
    with pytest.raises(MoveRefused) as refused:
        await sup.request_move("web", to=None, force=False, dry_run=False)
    assert refused.value.status == 409  # in flight
    await w.until(lambda: w.routing(B1) == "ns2" and w.routing(B2) == "ns2" and w.idle())

    move = await w.journal.get_move(accepted.move_id)
    assert move is not None
    assert (move.trigger, move.result, move.force) == ("manual", "success", False)
    # Manual: the primary is up, yet nothing moves back by itself.
    with pytest.raises(MoveRefused) as refused:
        await sup.request_move("web", to="ns1", force=False, dry_run=False)
    assert refused.value.status == 409
    assert "in cooldown" in str(refused.value)
    forced = await sup.request_move("web", to="ns1", force=True, dry_run=False)
    await w.until(lambda: w.routing(B1) == "ns1" and w.idle())
    forced_move = await w.journal.get_move(forced.move_id)
    assert forced_move is not None
    assert (forced_move.result, forced_move.force) == ("success", True)  # journaled as forced
    assert [m["to"] for m in w.moves(B1)] == ["ns2", "ns1"]
    assert (
        w.metric("failoverd_failovers_total", group="web", trigger="manual", result="success") == 2
    )


async def test_a_paused_group_is_observed_not_moved_until_resumed(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    view = await w.supervisor.pause("web", duration=None, reason="kernel update")
    assert view.paused
    assert view.status is GroupStatus.PAUSED
    assert view.pause_reason == "kernel update"

    w.kill("ns1")
    await w.until(
        lambda: w.metric("failoverd_failovers_blocked_total", group="web", reason="paused") >= 1
    )
    assert w.moves() == []
    assert "paused" in w.supervisor.snapshot().groups[0].reason

    view = await w.supervisor.resume("web")
    assert not view.paused
    await w.until(lambda: w.routing(B1) == "ns2" and w.idle())
    kinds = [e.kind for e in await w.supervisor.history("web", 100)]
    assert kinds.index("pause") < kinds.index("blocked") < kinds.index("resume")


async def test_a_pause_expires_by_itself(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    view = await w.supervisor.pause("web", duration=0.8, reason=None)
    assert view.pause_until is not None
    w.kill("ns1")
    await w.until(lambda: w.routing(B1) == "ns2" and w.idle())
    (move,) = await w.journal.moves("web")
    assert move.created >= view.pause_until


async def test_dry_run_decides_and_journals_but_never_posts(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds, dry_run=True)
    assert w.supervisor.snapshot().dry_run
    w.kill("ns1")

    async def dry_run_done() -> bool:
        return any(m.result == "dry_run" for m in await w.journal.moves("web"))

    await eventually(dry_run_done)
    await w.until(w.idle)
    moves = await w.journal.moves("web")
    assert [(m.dry_run, m.result) for m in moves] == [(True, "dry_run")]
    assert moves[0].reason.startswith("dry run: primary ns1 down")
    assert {s.step for s in moves[0].steps} == {"dry_run"}
    assert w.moves() == []
    assert w.routing(B1) == "ns1"
    assert not any(r.method == "POST" for r in w.sim.state.requests())


async def test_pre_hook_veto_blocks_the_move_and_says_why(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    veto = (sys.executable, "-c", "import sys; sys.stderr.write('change freeze\\n'); sys.exit(1)")
    group = replace(WEB, hooks=HooksPolicy(pre=veto))
    w = await world(tmp_path, http_server_factory, worlds, group=group)
    w.kill("ns1")
    await w.until(
        lambda: w.metric("failoverd_failovers_blocked_total", group="web", reason="veto") >= 1
    )
    await w.until(w.idle)
    assert w.moves() == []
    (move,) = await w.journal.moves("web")
    assert move.result == "vetoed"
    assert {s.step for s in move.steps} == {"abandoned"}
    history = await w.supervisor.history("web", 50)
    assert any(
        e.kind == "blocked" and e.message == "pre hook vetoed the move of web to ns2: change freeze"
        for e in history
    )


async def test_post_hook_gets_the_move_in_its_environment(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    out = tmp_path / "post.json"
    code = (
        "import json, os; "
        f"open({str(out)!r}, 'w').write(json.dumps({{k: v for k, v in os.environ.items() "
        "if k.startswith('FAILOVERD_')}))"
    )
    ok = (sys.executable, "-c", "pass")
    group = replace(WEB, hooks=HooksPolicy(pre=ok, post=(sys.executable, "-c", code)))
    w = await world(tmp_path, http_server_factory, worlds, group=group)
    w.kill("ns1")
    await w.until(lambda: out.exists() and out.read_text() != "")
    env = json.loads(out.read_text())
    (move,) = await w.journal.moves("web")
    assert env == {
        "FAILOVERD_GROUP": "web",
        "FAILOVERD_TARGET": "ns2",
        "FAILOVERD_FROM": "ns1",
        "FAILOVERD_BLOCKS": f"{B1} {B2}",
        "FAILOVERD_TRIGGER": "auto",
        "FAILOVERD_RESULT": "success",
        "FAILOVERD_MOVE_ID": move.move_id,
    }


async def test_stop_lets_a_submission_reach_its_task_id_then_a_restart_follows_it(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    # The POST takes a while to answer; the task then takes a while to run.
    w.sim.state.add_fault(Fault(kind="slow", delay=0.5, method="POST", count=2))
    w.kill("ns1")

    async def submitting() -> bool:
        # Both POSTs under way: stopping earlier would rightly leave the second one unsent.
        steps = [s for m in await w.journal.moves("web") for s in m.steps]
        return {s.block for s in steps if s.step == "submitting"} == {B1, B2}

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await submitting():
        assert loop.time() < deadline
        await asyncio.sleep(0.01)  # polling a condition with a deadline
    w.stop.set()
    assert w.task is not None
    await asyncio.wait_for(w.task, 10)

    (move,) = await w.journal.unfinished_moves()
    # Both POSTs reached their task id before the exit. The adapter sends one request at a
    # time, so the first block's task may even have finished while the second POST was slow.
    submitted = {
        s.block: s.task_id for s in move.steps if s.step in ("submitted", "task_done", "verified")
    }
    assert set(submitted) == {B1, B2}
    assert all(isinstance(t, int) for t in submitted.values())

    # A new engine on the same journal follows the tasks; nothing is sent again.
    again = Supervisor(w.policy, api=w.api, health=w.health, journal=w.journal, recorder=w.metrics)
    w.supervisor = again
    await w.start_supervisor()

    async def finished() -> bool:
        return not await w.journal.unfinished_moves()

    await eventually(finished)
    assert w.routing(B1) == "ns2"
    assert w.routing(B2) == "ns2"
    assert len(w.moves()) == 2
    (done,) = await w.journal.moves("web")
    assert done.result == "success"


async def test_cooldown_and_pause_survive_a_restart(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    w.kill("ns1")
    await w.until(lambda: w.routing(B1) == "ns2" and w.idle())
    await w.supervisor.pause("web", duration=None, reason="investigating")
    w.stop.set()
    assert w.task is not None
    await w.task

    again = Supervisor(w.policy, api=w.api, health=w.health, journal=w.journal, recorder=w.metrics)
    w.supervisor = again
    await w.start_supervisor()
    await w.until(lambda: again.last_tick > 0)
    view = again.snapshot().groups[0]
    assert view.paused
    assert view.pause_reason == "investigating"
    assert 590 < view.cooldown_remaining <= 600


async def test_reload_adds_a_group_and_keeps_health_and_state(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    await w.supervisor.pause("web", duration=None, reason="kept")
    api_group = replace(
        w.policy.groups["web"], name="api", blocks=(), primary="ns4", standbys=("ns2",)
    )
    policy = replace(w.policy, groups={**w.policy.groups, "api": api_group})
    w.supervisor.apply_policy(policy)
    await w.until(lambda: len(w.supervisor.snapshot().groups) == 2)
    web = w.supervisor.snapshot().groups[0]
    assert web.paused  # state of the groups that remain is kept
    assert any(e.kind == "reload" for e in await w.supervisor.history(None, 50))
    tick = w.supervisor.last_tick
    await w.until(lambda: w.supervisor.last_tick > tick)  # the loop keeps ticking


async def test_a_target_refused_at_move_time_gives_way_to_the_next_candidate(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    assert w.supervisor.snapshot().groups[0].eligible["ns2"]  # the preflight said yes
    # ...but when the move comes, OVH says no for ns2.
    w.sim.state.add_fault(
        Fault(
            kind="error",
            status=400,
            route="/dedicated/server/ns2/ipCanBeMovedTo*",
            message="ns2 cannot receive this block right now",
        )
    )
    w.kill("ns1")
    await w.until(lambda: w.routing(B1) == "ns3" and w.routing(B2) == "ns3" and w.idle())
    assert [m["to"] for m in w.moves()] == ["ns3", "ns3"]  # nothing was sent to ns2
    (move,) = await w.journal.moves("web")
    assert move.result == "success"
    refused = [s for s in move.steps if s.target == "ns2"]
    assert {s.step for s in refused} == {"failed"}
    assert all("cannot receive this block" in (s.reason or "") for s in refused)
    assert not w.supervisor.snapshot().groups[0].eligible["ns2"]


async def test_a_manual_dry_run_rehearses_without_holding_back_a_real_failover(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await world(tmp_path, http_server_factory, worlds)
    accepted = await w.supervisor.request_move("web", to="ns3", force=False, dry_run=True)
    assert accepted.dry_run

    async def rehearsed() -> bool:
        move = await w.journal.get_move(accepted.move_id)
        return move is not None and move.result == "dry_run"

    await eventually(rehearsed)
    await w.until(w.idle)
    assert w.supervisor.snapshot().groups[0].cooldown_remaining == 0
    assert w.moves() == []
    w.kill("ns1")  # a real failure right after the rehearsal is handled at once
    await w.until(lambda: w.routing(B1) == "ns2" and w.idle())


async def test_an_automatic_move_followed_after_a_restart_counts_for_max_failovers(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await make_world(
        tmp_path,
        http_server_factory,
        SERVERS,
        [Grp("web", "ns1", ("ns2",), (B1,))],
        start=False,
        guards=ONE_FAILOVER,
        inventory_extra=SLOW_TASKS,
    )
    worlds.append(w)
    # The last run submitted an automatic move and died; its task is still running at OVH.
    state = w.sim.state
    task = state.submit(state.block(B1), state.dedicated("ns2"), "dedicated", "ipMove")
    now = time.time()
    move = JournaledMove("m-1", "web", "auto", "ns2", (B1,), False, now, "primary ns1 down")
    await w.journal.create_move(move)
    await w.journal.step(
        "m-1", B1, "ns2", "submitted", at=now, task_id=task.task_id, via="dedicated"
    )

    await w.start_supervisor()
    await w.until(lambda: not w.idle(), what="the journaled move followed")
    await w.until(lambda: w.supervisor.state.guards.get("max_failovers") is not None or w.idle())
    assert not w.idle(), "the replayed move ended before the check: the test proves nothing"
    assert w.supervisor.state.guards["max_failovers"] == ONE_UNDER_WAY
    await w.until(lambda: w.routing(B1) == "ns2" and w.idle())
    (done,) = await w.journal.moves("web")
    assert done.result == "success"
    assert len(w.moves(B1)) == 1, "followed, never submitted again"


async def test_a_forced_move_followed_after_a_restart_stays_forced(
    tmp_path: Path, http_server_factory: Factory, worlds: list[World]
) -> None:
    w = await make_world(tmp_path, http_server_factory, SERVERS, [WEB], start=False)
    worlds.append(w)
    # The last run submitted B1 of an operator's forced move and died before sending B2.
    state = w.sim.state
    task = state.submit(state.block(B1), state.dedicated("ns3"), "dedicated", "ipMove")
    now = time.time()
    move = JournaledMove(
        "m-1", "web", "manual", "ns3", (B1, B2), False, now, "operator: move web to ns3", force=True
    )
    await w.journal.create_move(move)
    await w.journal.step(
        "m-1", B1, "ns3", "submitted", at=now, task_id=task.task_id, via="dedicated"
    )

    await w.start_supervisor()
    await w.until(lambda: w.routing(B1) == "ns3" and w.routing(B2) == "ns3" and w.idle())
    done = await w.journal.get_move("m-1")
    assert done is not None
    assert (done.result, done.force) == ("success", True)
    assert len(w.moves(B1)) == 1, "followed, never submitted again"
    # The replayed flight took its force from the journal: its retries are forced too.
    (replay,) = [e for e in await w.supervisor.history("web", 50) if e.kind == "replay"]
    assert replay.details == {"force": True}
