"""Fault injection: what the real ovh library sees for each fault, and how faults are scoped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import ovh
import pytest
import requests

from failoverd.sim.inventory import Fault
from failoverd.sim.server import RunningSimulator, start_simulator
from tests.fixtures.sim import ManualClock, build_inventory, ovh_client_for

NS1 = "ns1001.ip-51-68-100.eu"
NS2 = "ns1002.ip-51-68-100.eu"
BLOCK = "203.0.113.8/29"
BLOCK_PATH = "/ip/203.0.113.8%2F29"
SINGLE_PATH = "/ip/198.51.100.7%2F32"


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_503_then_recovers(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    await call(c.get, "/auth/time", _need_auth=False)  # time delta cached before the burst
    sim.state.add_fault(Fault(kind="error", status=503, count=2))
    for _ in range(2):
        with pytest.raises(ovh.exceptions.APIError, match="temporarily unavailable") as info:
            await call(c.get, BLOCK_PATH)
        assert info.value.response.status_code == 503
        assert info.value.query_id
    assert (await call(c.get, BLOCK_PATH))["ip"] == BLOCK
    assert sim.state.faults() == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [(500, "Server::InternalServerError"), (429, "Client::TooManyRequests")],
)
async def test_error_status_has_ovh_body(sim: RunningSimulator, status: int, cls: str) -> None:
    c = ovh_client_for(sim)
    sim.state.add_fault(Fault(kind="error", status=status, count=1))
    response = await call(c.raw_call, "GET", BLOCK_PATH)
    assert response.status_code == status
    assert response.json()["class"] == cls
    assert response.json()["message"]
    assert response.headers["X-Ovh-Queryid"]
    if status == 429:
        assert response.headers["Retry-After"] == "1"


async def test_html_502_is_an_invalid_response(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    sim.state.add_fault(Fault(kind="html", status=502, count=1))
    with pytest.raises(ovh.exceptions.InvalidResponse):
        await call(c.get, BLOCK_PATH)
    response = await call(c.raw_call, "GET", BLOCK_PATH)
    assert response.status_code == 200  # count 1: only the first request failed


async def test_html_fault_answers_a_page(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    sim.state.add_fault(Fault(kind="html", count=1))
    response = await call(c.raw_call, "GET", BLOCK_PATH)
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text


async def test_empty_200_is_an_invalid_response(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    sim.state.add_fault(Fault(kind="empty", count=1))
    with pytest.raises(ovh.exceptions.InvalidResponse):
        await call(c.get, BLOCK_PATH)


async def test_slow_answer_past_the_client_timeout(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim, timeout=(2, 0.2))
    await call(c.get, "/auth/time", _need_auth=False)
    sim.state.add_fault(Fault(kind="slow", delay=1.0, count=1))
    with pytest.raises(ovh.exceptions.HTTPError) as info:
        await call(c.get, BLOCK_PATH)
    assert isinstance(info.value.args[1], requests.exceptions.ReadTimeout)
    # A slow answer within the timeout is a normal answer.
    sim.state.add_fault(Fault(kind="slow", delay=0.05, count=1))
    assert (await call(c.get, BLOCK_PATH))["ip"] == BLOCK


async def test_connection_reset(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    await call(c.get, "/auth/time", _need_auth=False)
    sim.state.add_fault(Fault(kind="reset", count=1))
    with pytest.raises(ovh.exceptions.HTTPError) as info:
        await call(c.get, BLOCK_PATH)
    assert isinstance(info.value.args[1], requests.exceptions.ConnectionError)
    assert (await call(c.get, BLOCK_PATH))["ip"] == BLOCK  # the server keeps serving
    assert [r.status for r in sim.state.requests()][-2:] == [0, 200]


@pytest.mark.parametrize("state", ["ovhError", "customerError", "cancelled"])
async def test_task_ends_in_error_with_comment(state: str) -> None:
    clock = ManualClock()
    inventory = build_inventory(task_durations={"init": 1, "todo": 1, "doing": 1})
    async with await start_simulator(inventory, clock=clock) as sim:
        c = ovh_client_for(sim)
        sim.state.add_fault(
            Fault(kind="task", task_status=state, comment="Routing failure on rbx-a9", count=1)
        )
        task = await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=BLOCK)
        assert task["status"] == "init"
        clock.advance(2)
        path = f"/dedicated/server/{NS2}/task/{task['taskId']}"
        assert (await call(c.get, path))["status"] == "doing"
        clock.advance(1)
        ended = await call(c.get, path)
        assert ended["status"] == state
        assert ended["comment"] == "Routing failure on rbx-a9"
        assert ended["doneDate"] is not None
        assert sim.state.routing(BLOCK) == NS1  # never flipped
        assert sim.state.audit()[-1]["outcome"] == f"{state}: Routing failure on rbx-a9"
        # count 1: the next move succeeds.
        retry = await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=BLOCK)
        clock.advance(3)
        assert (await call(c.get, f"/dedicated/server/{NS2}/task/{retry['taskId']}"))[
            "status"
        ] == "done"
        assert sim.state.routing(BLOCK) == NS2


async def test_fault_scoped_by_block_method_and_route(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    sim.state.add_fault(Fault(kind="error", status=500, block=BLOCK))
    with pytest.raises(ovh.exceptions.APIError):
        await call(c.get, BLOCK_PATH)
    with pytest.raises(ovh.exceptions.APIError):
        await call(c.get, f"/dedicated/server/{NS2}/ipCanBeMovedTo", ip=BLOCK)
    assert (await call(c.get, SINGLE_PATH))["ip"] == "198.51.100.7/32"
    sim.state.clear_faults()

    sim.state.add_fault(Fault(kind="error", status=503, method="POST"))
    assert (await call(c.get, BLOCK_PATH))["ip"] == BLOCK
    with pytest.raises(ovh.exceptions.APIError, match="unavailable"):
        await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=BLOCK)
    sim.state.clear_faults()

    # Route patterns match the template, the raw path or the decoded path.
    for pattern in ("/ip/{ip}", "/ip/203.0.113.8%2F29", "/ip/203.0.113.8/29"):
        fault_id = sim.state.add_fault(Fault(kind="error", status=500, route=pattern))
        with pytest.raises(ovh.exceptions.APIError):
            await call(c.get, BLOCK_PATH)
        assert (await call(c.get, "/dedicated/server")) != []
        assert sim.state.remove_fault(fault_id)
    assert (await call(c.get, BLOCK_PATH))["ip"] == BLOCK


async def test_default_scope_spares_auth_time(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    sim.state.add_fault(Fault(kind="error", status=503))
    assert isinstance(await call(c.get, "/auth/time", _need_auth=False), int)
    with pytest.raises(ovh.exceptions.APIError):
        await call(c.get, "/dedicated/server")


async def test_faults_from_the_inventory() -> None:
    inventory = build_inventory(faults=[{"kind": "error", "status": 503, "count": 1}])
    async with await start_simulator(inventory) as sim:
        c = ovh_client_for(sim)
        with pytest.raises(ovh.exceptions.APIError, match="unavailable"):
            await call(c.get, "/dedicated/server")
        assert NS1 in await call(c.get, "/dedicated/server")


async def test_control_routes(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    async with aiohttp.ClientSession(sim.root_url) as http:
        async with http.post("/_sim/faults", json={"kind": "error", "status": 503}) as resp:
            assert resp.status == 200
            fault_id = (await resp.json())["id"]
        async with http.get("/_sim/faults") as resp:
            listed = await resp.json()
            assert [(f["id"], f["kind"], f["status"]) for f in listed] == [(fault_id, "error", 503)]
        with pytest.raises(ovh.exceptions.APIError):
            await call(c.get, BLOCK_PATH)
        async with http.delete("/_sim/faults") as resp:
            assert await resp.json() == []
        assert (await call(c.get, BLOCK_PATH))["ip"] == BLOCK

        async with http.post("/_sim/faults", json={"kind": "bogus", "count": 0}) as resp:
            assert resp.status == 400
            message = (await resp.json())["message"]
            assert "fault.kind" in message
            assert "fault.count" in message  # every problem at once

        async with http.post("/_sim/routing", json={"block": BLOCK, "to": NS2}) as resp:
            assert (await resp.json())[BLOCK] == NS2
        assert sim.state.routing(BLOCK) == NS2
        async with http.post("/_sim/routing", json={"block": BLOCK, "to": "nobody"}) as resp:
            assert resp.status == 404

        await call(c.post, f"/dedicated/server/{NS1}/ipMove", ip=BLOCK)
        async with http.get("/_sim/state") as resp:
            state = await resp.json()
        assert state["routing"][BLOCK] in (NS1, NS2)
        assert state["tasks"][0]["function"] == "ipMove"
        async with http.get("/_sim/audit") as resp:
            audit = await resp.json()
        assert [e["seq"] for e in audit] == list(range(1, len(audit) + 1))
        assert {"seq", "at", "action", "block", "from", "to", "task_id", "outcome"} <= set(audit[0])
        assert [e["action"] for e in audit][:4] == [
            "fault_added",
            "faults_cleared",
            "route",
            "move",
        ]
        async with http.get("/_sim/requests") as resp:
            requests_seen = await resp.json()
        assert {
            "method": "POST",
            "route": "/dedicated/server/{sn}/ipMove",
            "status": 200,
        }.items() <= (requests_seen[-1].items())

        async with http.post("/_sim/reset") as resp:
            reset = await resp.json()
        assert reset["routing"][BLOCK] == NS1
        assert reset["tasks"] == []
        assert [e["action"] for e in sim.state.audit()] == ["reset"]
        async with http.get("/_sim/nothing") as resp:
            assert resp.status == 404
        async with http.post("/_sim/faults", data="{not json") as resp:
            assert resp.status == 400
            assert json.loads(await resp.text())["message"]


async def test_4xx_fault_refuses_like_ovh(sim: RunningSimulator) -> None:
    # e.g. a standby that preflight must report ineligible, whatever the rules say
    c = ovh_client_for(sim)
    sim.state.add_fault(
        Fault(
            kind="error",
            status=400,
            route="/dedicated/server/ns1002*/ipCanBeMovedTo*",
            message="Server is in maintenance",
        )
    )
    with pytest.raises(ovh.exceptions.BadParametersError, match="Server is in maintenance"):
        await call(c.get, f"/dedicated/server/{NS2}/ipCanBeMovedTo", ip=BLOCK)
    response = await call(c.raw_call, "GET", f"/dedicated/server/{NS2}/ipCanBeMovedTo?ip=x")
    assert response.json() == {"class": "Client::BadRequest", "message": "Server is in maintenance"}
    # Other servers' eligibility is untouched.
    with pytest.raises(ovh.exceptions.BadParametersError, match="already routed"):
        await call(c.get, f"/dedicated/server/{NS1}/ipCanBeMovedTo", ip=BLOCK)


async def test_fair_use_rate_limit_per_consumer_key() -> None:
    clock = ManualClock()
    inventory = build_inventory(rate_limit={"requests": 3, "window": "60s"})
    async with await start_simulator(inventory, clock=clock) as sim:
        c = ovh_client_for(sim)
        for _ in range(3):
            await call(c.get, "/dedicated/server")
        with pytest.raises(ovh.exceptions.APIError, match="Too many requests") as info:
            await call(c.get, "/dedicated/server")
        assert info.value.response.status_code == 429
        assert isinstance(await call(c.get, "/auth/time", _need_auth=False), int)  # unsigned
        clock.advance(60)
        assert await call(c.get, "/dedicated/server")
        statuses = [(r.route, r.status) for r in sim.state.requests() if r.route != "/auth/time"]
        assert statuses == [("/dedicated/server", 200)] * 3 + [
            ("/dedicated/server", 429),
            ("/dedicated/server", 200),
        ]
        assert {r.application_key for r in sim.state.requests()} == {"demo-app-key"}
