"""Routes, business rules and task lifecycles, through the real ovh library over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import ovh
import pytest

from failoverd.sim.inventory import inventory_from_dict
from failoverd.sim.server import RunningSimulator, start_simulator
from tests.fixtures.sim import ManualClock, build_inventory, example_inventory_dict, ovh_client_for

NS1 = "ns1001.ip-51-68-100.eu"
NS2 = "ns1002.ip-51-68-100.eu"
BHS = "ns5000.ip-142-44-200.net"
VPS = "vps-1a2b3c4d.vps.ovh.net"
BLOCK = "203.0.113.8/29"
BLOCK_PATH = "/ip/203.0.113.8%2F29"
SINGLE = "198.51.100.7/32"


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking ovh call off the loop, so the in-process simulator can answer."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def slow_sim(clock: ManualClock) -> AsyncIterator[RunningSimulator]:
    """Tasks take 1 s in each of init, todo, doing on a clock the test steps."""
    inventory = build_inventory(task_durations={"init": 1, "todo": 1, "doing": 1})
    sim = await start_simulator(inventory, clock=clock)
    try:
        yield sim
    finally:
        await sim.close()


async def test_dedicated_server_routes(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    assert await call(c.get, "/dedicated/server") == [NS1, NS2, BHS]
    info = await call(c.get, f"/dedicated/server/{NS2}")
    assert info["name"] == NS2
    assert info["region"] == "eu-west-rbx"
    assert info["datacenter"] == "rbx8"
    assert info["ip"] == "51.68.100.11"
    assert info["state"] == "ok"
    assert "commercialRange" in info
    net = await call(c.get, f"/dedicated/server/{NS2}/specifications/network")
    assert net["vmac"]["supported"] is True
    with pytest.raises(ovh.exceptions.ResourceNotFoundError, match="does not exist"):
        await call(c.get, "/dedicated/server/ns9999.example")
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.get, f"/dedicated/server/{VPS}")  # a VPS is no dedicated server


async def test_ip_routes(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    assert await call(c.get, "/ip") == [BLOCK, SINGLE]
    assert await call(c.get, "/ip", type="failover") == [BLOCK, SINGLE]
    assert await call(c.get, "/ip", type="vps") == []
    assert await call(c.get, "/ip", **{"routedTo.serviceName": NS1}) == [BLOCK, SINGLE]
    assert await call(c.get, "/ip", **{"routedTo.serviceName": NS2}) == []
    info = await call(c.get, BLOCK_PATH)
    assert info["ip"] == BLOCK
    assert info["routedTo"] == {"serviceName": NS1}
    assert info["type"] == "failover"
    assert info["regions"] == ["eu-west-gra"]
    assert info["campus"] == "GRA"
    # A bare address is its /32.
    assert (await call(c.get, "/ip/198.51.100.7"))["ip"] == SINGLE


async def test_vps_routes(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    assert await call(c.get, "/vps") == [VPS]
    assert (await call(c.get, f"/vps/{VPS}"))["name"] == VPS
    assert await call(c.get, f"/vps/{VPS}/ips") == ["51.68.102.20"]
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.get, f"/vps/{NS1}")


async def test_ip_errors(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    with pytest.raises(ovh.exceptions.ResourceNotFoundError, match="does not exist"):
        await call(c.get, "/ip/192.0.2.0%2F28")
    with pytest.raises(ovh.exceptions.BadParametersError, match="not valid for type ipBlock"):
        await call(c.get, "/ip/300.1.2.3")
    with pytest.raises(ovh.exceptions.BadParametersError, match="not valid for type ipBlock"):
        await call(c.get, "/ip/203.0.113.9%2F29")  # host bits set
    with pytest.raises(ovh.exceptions.BadParametersError, match="only whole blocks"):
        await call(c.get, "/ip/203.0.113.9")  # one address inside the /29
    with pytest.raises(ovh.exceptions.BadParametersError, match="only whole blocks"):
        await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip="203.0.113.8/30")
    # An unencoded slash is another path, as on OVH: no such route.
    with pytest.raises(ovh.exceptions.ResourceNotFoundError, match="invalid"):
        await call(c.get, "/ip/203.0.113.8/29/move")


async def test_can_be_moved_to(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    assert await call(c.get, f"/dedicated/server/{NS2}/ipCanBeMovedTo", ip=BLOCK) is None
    with pytest.raises(ovh.exceptions.BadParametersError, match="ca-east-bhs"):
        await call(c.get, f"/dedicated/server/{BHS}/ipCanBeMovedTo", ip=BLOCK)
    with pytest.raises(ovh.exceptions.BadParametersError, match="already routed to"):
        await call(c.get, f"/dedicated/server/{NS1}/ipCanBeMovedTo", ip=BLOCK)
    with pytest.raises(ovh.exceptions.BadParametersError, match="mandatory"):
        await call(c.get, f"/dedicated/server/{NS2}/ipCanBeMovedTo")


async def test_destinations_list_only_eligible_services(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    block = await call(c.get, f"{BLOCK_PATH}/move")
    assert block["dedicatedServer"] == [{"service": NS2, "nexthop": None}]
    assert block["vps"] == []  # a /29 cannot go to a VPS
    single = await call(c.get, "/ip/198.51.100.7%2F32/move")
    assert [d["service"] for d in single["dedicatedServer"]] == [NS2]
    assert single["vps"] == [{"service": VPS, "nexthop": ["51.68.102.20"]}]
    assert set(single) >= {"dedicatedServer", "vps", "dedicatedCloud", "cloudProject"}


async def test_ipmove_lifecycle_flips_routing_only_at_done(
    slow_sim: RunningSimulator, clock: ManualClock
) -> None:
    c = ovh_client_for(slow_sim)
    task = await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=BLOCK)
    assert task["function"] == "ipMove"
    assert set(task) == {
        "taskId",
        "function",
        "status",
        "comment",
        "startDate",
        "doneDate",
        "lastUpdate",
    }
    path = f"/dedicated/server/{NS2}/task/{task['taskId']}"
    seen = []
    for _ in range(4):
        current = await call(c.get, path)
        routed = (await call(c.get, BLOCK_PATH))["routedTo"]["serviceName"]
        seen.append((current["status"], routed, current["doneDate"] is not None))
        clock.advance(1)
    assert seen == [
        ("init", NS1, False),
        ("todo", NS1, False),
        ("doing", NS1, False),
        ("done", NS2, True),
    ]
    assert await call(c.get, f"/dedicated/server/{NS2}/task", function="ipMove") == [task["taskId"]]
    assert await call(c.get, f"/dedicated/server/{NS2}/task", status="todo") == []
    assert await call(c.get, f"/dedicated/server/{NS1}/task") == []
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.get, f"/dedicated/server/{NS1}/task/{task['taskId']}")
    actions = [(e["action"], e["from"], e["to"], e["outcome"]) for e in slow_sim.state.audit()]
    assert actions == [("move", NS1, NS2, "accepted"), ("task_end", NS1, NS2, "done")]


async def test_generic_move_of_a_single_ip_to_a_vps(
    slow_sim: RunningSimulator, clock: ManualClock
) -> None:
    c = ovh_client_for(slow_sim)
    task = await call(c.post, "/ip/198.51.100.7%2F32/move", to=VPS)
    assert task["function"] == "genericMoveFloatingIp"
    assert task["destination"] == {"serviceName": VPS}
    assert task["status"] == "init"
    assert await call(c.get, "/ip/198.51.100.7%2F32/task") == [task["taskId"]]
    listing = "/ip/198.51.100.7%2F32/task"
    assert await call(c.get, listing, function="genericMoveFloatingIp", status="init") == [
        task["taskId"]
    ]
    assert await call(c.get, listing, status="done") == []
    assert await call(c.get, listing, function="parkFloatingIp") == []
    clock.advance(3)
    done = await call(c.get, f"/ip/198.51.100.7%2F32/task/{task['taskId']}")
    assert done["status"] == "done"
    assert slow_sim.state.routing(SINGLE) == VPS
    assert await call(c.get, f"/vps/{VPS}/ips") == ["51.68.102.20", "198.51.100.7"]


async def test_park(slow_sim: RunningSimulator, clock: ManualClock) -> None:
    c = ovh_client_for(slow_sim)
    task = await call(c.post, f"{BLOCK_PATH}/park")
    assert task["function"] == "parkFloatingIp"
    clock.advance(3)
    assert (await call(c.get, BLOCK_PATH))["routedTo"] is None
    with pytest.raises(ovh.exceptions.BadParametersError, match="already parked"):
        await call(c.post, f"{BLOCK_PATH}/park")
    # A parked block can be routed again.
    await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=BLOCK)
    clock.advance(3)
    assert slow_sim.state.routing(BLOCK) == NS2


async def test_move_racing_another_is_refused(
    slow_sim: RunningSimulator, clock: ManualClock
) -> None:
    c = ovh_client_for(slow_sim)
    first = await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=BLOCK)
    with pytest.raises(ovh.exceptions.BadParametersError, match="already pending") as info:
        await call(c.post, f"{BLOCK_PATH}/move", to=NS2)
    assert str(first["taskId"]) in str(info.value)
    with pytest.raises(ovh.exceptions.BadParametersError, match="already pending"):
        await call(c.get, f"/dedicated/server/{NS2}/ipCanBeMovedTo", ip=BLOCK)
    with pytest.raises(ovh.exceptions.BadParametersError, match="already pending"):
        await call(c.post, f"{BLOCK_PATH}/park")
    # The other block is not affected.
    await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=SINGLE)
    clock.advance(3)
    # Once the first task is done, the block may move again (back).
    second = await call(c.post, f"/dedicated/server/{NS1}/ipMove", ip=BLOCK)
    assert second["taskId"] != first["taskId"]
    moves = [e for e in slow_sim.state.audit() if e["action"] == "move"]
    assert [m["outcome"].split(":")[0] for m in moves] == [
        "accepted",
        "refused",
        "accepted",
        "accepted",
    ]


async def test_cross_zone_move_refused(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    with pytest.raises(ovh.exceptions.BadParametersError, match="region") as info:
        await call(c.post, f"/dedicated/server/{BHS}/ipMove", ip=BLOCK)
    assert info.value.query_id
    with pytest.raises(ovh.exceptions.BadParametersError, match="region"):
        await call(c.post, f"{BLOCK_PATH}/move", to=BHS)
    assert sim.state.routing(BLOCK) == NS1
    assert sim.state.audit()[-1]["outcome"].startswith("refused: ")


async def test_gra_rbx_sbg_interoperate_but_not_bhs() -> None:
    data = example_inventory_dict()
    data["blocks"] = [
        {"cidr": "192.0.2.1/32", "routed_to": VPS},  # an SBG block
        {"cidr": "192.0.2.64/26", "routed_to": BHS},  # a BHS block
    ]
    data["task_durations"] = {"init": 0, "todo": 0, "doing": 0}
    async with await start_simulator(inventory_from_dict(data)) as sim:
        c = ovh_client_for(sim)
        for target in (NS1, NS2):
            assert (
                await call(c.get, f"/dedicated/server/{target}/ipCanBeMovedTo", ip="192.0.2.1")
                is None
            )
        with pytest.raises(ovh.exceptions.BadParametersError, match="region"):
            await call(c.get, f"/dedicated/server/{BHS}/ipCanBeMovedTo", ip="192.0.2.1")
        for target in (NS1, NS2):
            with pytest.raises(ovh.exceptions.BadParametersError, match="region"):
                await call(c.post, f"/dedicated/server/{target}/ipMove", ip="192.0.2.64/26")


async def test_vps_refuses_a_block_bigger_than_32(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    with pytest.raises(ovh.exceptions.BadParametersError, match="VPS"):
        await call(c.post, f"{BLOCK_PATH}/move", to=VPS)
    # ipMove only targets dedicated servers: a VPS there is an unknown server.
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.post, f"/dedicated/server/{VPS}/ipMove", ip=SINGLE)
    assert sim.state.routing(BLOCK) == NS1


async def test_already_routed_to_the_target_is_refused(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    with pytest.raises(ovh.exceptions.BadParametersError, match=f"already routed to {NS1}"):
        await call(c.post, f"/dedicated/server/{NS1}/ipMove", ip=BLOCK)


async def test_unknown_target_and_block_are_not_found(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.post, "/dedicated/server/ns0.example/ipMove", ip=BLOCK)
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.post, f"{BLOCK_PATH}/move", to="ns0.example")
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip="192.0.2.0/24")
    with pytest.raises(ovh.exceptions.BadParametersError, match="mandatory"):
        await call(c.post, f"/dedicated/server/{NS2}/ipMove")
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.get, f"{BLOCK_PATH}/task/12345")
    with pytest.raises(ovh.exceptions.BadParametersError):
        await call(c.get, f"{BLOCK_PATH}/task/not-a-number")


async def test_vmac_blocks_need_vmac_support_and_unique_vmacs() -> None:
    data = example_inventory_dict()
    for server in data["servers"]:
        if server["name"] == NS2:
            server["vmac_supported"] = False
    data["blocks"] = [
        {"cidr": "192.0.2.8/29", "routed_to": NS1, "vmacs": ["02:00:00:aa:bb:01"]},
        {"cidr": "192.0.2.16/29", "routed_to": NS2, "vmacs": ["02:00:00:aa:bb:02"] * 2},
        {"cidr": "192.0.2.24/29", "routed_to": NS1, "vmacs": []},
    ]
    async with await start_simulator(inventory_from_dict(data)) as sim:
        c = ovh_client_for(sim)
        net = await call(c.get, f"/dedicated/server/{NS2}/specifications/network")
        assert net["vmac"]["supported"] is False
        with pytest.raises(ovh.exceptions.BadParametersError, match="virtual MAC"):
            await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip="192.0.2.8/29")
        with pytest.raises(ovh.exceptions.BadParametersError, match="duplicate virtual MACs"):
            await call(c.post, "/ip/192.0.2.16%2F29/move", to=NS1)
        # Without vMACs the same target is fine; with a vMAC-capable target, so is the vMAC block.
        assert await call(c.get, f"/dedicated/server/{NS2}/ipCanBeMovedTo", ip="192.0.2.24/29") is (
            None
        )
        sim.state.set_routing("192.0.2.8/29", NS2)
        assert await call(c.get, f"/dedicated/server/{NS1}/ipCanBeMovedTo", ip="192.0.2.8/29") is (
            None
        )


async def test_listing_lag_and_read_lag(clock: ManualClock) -> None:
    inventory = build_inventory(listing_lag=2, task_read_lag=1)
    async with await start_simulator(inventory, clock=clock) as sim:
        c = ovh_client_for(sim)
        task = await call(c.post, f"/dedicated/server/{NS2}/ipMove", ip=BLOCK)
        path = f"/dedicated/server/{NS2}/task"
        assert await call(c.get, path) == []
        with pytest.raises(ovh.exceptions.ResourceNotFoundError):
            await call(c.get, f"{path}/{task['taskId']}")
        clock.advance(1)
        assert (await call(c.get, f"{path}/{task['taskId']}"))["taskId"] == task["taskId"]
        assert await call(c.get, path) == []
        clock.advance(1)
        assert await call(c.get, path) == [task["taskId"]]


async def test_unknown_route_and_method(sim: RunningSimulator) -> None:
    c = ovh_client_for(sim)
    with pytest.raises(ovh.exceptions.ResourceNotFoundError):
        await call(c.get, "/me/bill")
    with pytest.raises(ovh.exceptions.APIError, match="not described"):
        await call(c.delete, BLOCK_PATH)
