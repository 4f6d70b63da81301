"""OvhClient against the simulator, through the real ovh library over loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog.testing

from failoverd.errors import (
    DeadlineExceeded,
    MoveFailed,
    MoveSubmissionUnknown,
    OvhAuthError,
    OvhNotFound,
    OvhPermanentError,
    OvhTransientError,
)
from failoverd.model import TaskState
from failoverd.ovhapi import OvhClient, Priority, Tuning
from failoverd.policy import ApiPolicy
from failoverd.sim.inventory import Fault, inventory_from_dict
from failoverd.sim.server import RunningSimulator, start_simulator
from tests.fixtures.sim import build_inventory, example_inventory_dict, ovh_client_for, until

NS1 = "ns1001.ip-51-68-100.eu"
NS2 = "ns1002.ip-51-68-100.eu"
VPS = "vps-1a2b3c4d.vps.ovh.net"
BHS = "ns5000.ip-142-44-200.net"
BLOCK29 = ipaddress.ip_network("203.0.113.8/29")
BLOCK32 = ipaddress.ip_network("198.51.100.7/32")
CREDS = {
    "application_key": "demo-app-key",
    "application_secret": "demo-app-secret",
    "consumer_key": "demo-consumer-key",
}
FAST = Tuning(
    backoff_base=0.01,
    backoff_cap=0.05,
    poll_initial=0.01,
    poll_max=0.05,
    read_deadline_factor=4.0,
)


class Recorded:
    """A Recorder that keeps what it is told (only the OVH part is used here)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, float]] = []

    def ovh_request(self, route: str, method: str, code: str, duration: float) -> None:
        self.requests.append((route, method, code, duration))

    def codes(self, route: str) -> list[str]:
        return [c for r, _, c, _ in self.requests if r == route]


def adapter(
    sim: RunningSimulator,
    recorder: Recorded | None = None,
    *,
    timeout: float = 2.0,
    rpm: int = 10_000,
    tuning: Tuning = FAST,
    credentials: dict[str, str] | None = None,
) -> OvhClient:
    api = ApiPolicy(endpoint=sim.base_url, timeout=timeout, requests_per_minute=rpm)
    return OvhClient.from_policy(api, recorder, credentials=credentials or CREDS, tuning=tuning)


@pytest.fixture
def recorder() -> Recorded:
    return Recorded()


@pytest.fixture
async def client(sim: RunningSimulator, recorder: Recorded) -> AsyncIterator[OvhClient]:
    c = adapter(sim, recorder)
    try:
        yield c
    finally:
        await c.close()


def accepted_moves(sim: RunningSimulator) -> list[dict[str, Any]]:
    return [e for e in sim.state.audit() if e["action"] == "move" and e["outcome"] == "accepted"]


def deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def slow_sim(**overrides: Any) -> RunningSimulator:
    """A simulator whose tasks stay pending for a while (doing 30 s unless overridden)."""
    overrides.setdefault("task_durations", {"init": 0, "todo": 0, "doing": 30})
    return await start_simulator(build_inventory(**overrides))


# --------------------------------------------------------------------------- reads


async def test_block_and_service_facts(client: OvhClient) -> None:
    info = await client.block_info(BLOCK29)
    assert info.routed_to == NS1
    assert info.type == "failover"
    assert info.regions == ("eu-west-gra",)

    ns2 = await client.service_info(NS2)
    assert (ns2.kind, ns2.region, ns2.vmac_supported) == ("dedicated", "eu-west-rbx", True)
    vps = await client.service_info(VPS)
    assert (vps.kind, vps.region, vps.vmac_supported) == ("vps", "eu-west-sbg", False)

    spent = len(client.request_log())
    assert await client.service_info(VPS) == vps  # cached: regions and vMAC do not change
    assert len(client.request_log()) == spent

    with pytest.raises(OvhNotFound, match="neither a dedicated server nor a VPS"):
        await client.service_info("ns9999.example")


async def test_eligibility_with_reasons(client: OvhClient) -> None:
    assert (await client.can_move(BLOCK29, NS2)).ok
    cross = await client.can_move(BLOCK29, BHS)
    assert not cross.ok
    assert "eu-west-gra" in cross.reason
    assert "ca-east-bhs" in cross.reason
    assert "only within its region" in cross.reason
    vps29 = await client.can_move(BLOCK29, VPS)
    assert not vps29.ok
    assert vps29.reason == (
        "only a single address (/32) can move to a VPS; 203.0.113.8/29 is a /29"
    )
    assert (await client.can_move(BLOCK32, VPS)).ok
    here = await client.can_move(BLOCK29, NS1)
    assert not here.ok
    assert "already routed" in here.reason


async def test_vmac_block_refused_on_a_server_without_vmac_support() -> None:
    data = example_inventory_dict()
    data["task_durations"] = {"init": 0, "todo": 0, "doing": 0}
    for server in data["servers"]:
        if server["name"] == NS2:
            server["vmac_supported"] = False
    data["blocks"][0]["vmacs"] = ["02:00:00:aa:bb:01"]
    sim = await start_simulator(inventory_from_dict(data))
    client = adapter(sim)
    try:
        verdict = await client.can_move(BLOCK29, NS2)
        assert not verdict.ok
        assert "virtual MAC" in verdict.reason
        assert f"{NS2} does not support virtual MACs" in verdict.reason
        assert verdict.reason.count("does not support") == 1
    finally:
        await client.close()
        await sim.close()


async def test_only_a_refusal_about_vmacs_is_explained_as_one() -> None:
    data = example_inventory_dict()
    for server in data["servers"]:
        if server["name"] == NS2:
            server["vmac_supported"] = False
    sim = await start_simulator(inventory_from_dict(data))
    client = adapter(sim)
    refusals = {
        # "machine" is not about virtual MACs: OVH's words are the whole reason.
        "The destination machine is being reinstalled": "The destination machine is being "
        "reinstalled",
        "This block has a vMAC assigned": f"This block has a vMAC assigned ({NS2} does not "
        "support virtual MACs)",
    }
    try:
        for said, reason in refusals.items():
            sim.state.add_fault(
                Fault(kind="error", status=400, route="*/ipCanBeMovedTo", message=said, count=1)
            )
            verdict = await client.can_move(BLOCK29, NS2)
            assert (verdict.ok, verdict.reason) == (False, reason)
    finally:
        await client.close()
        await sim.close()


# --------------------------------------------------------------------------- moves


async def test_dedicated_move_verified(
    sim: RunningSimulator, client: OvhClient, recorder: Recorded
) -> None:
    ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
    assert (ticket.via, ticket.target, ticket.block) == ("dedicated", NS2, BLOCK29)
    outcome = await client.wait_for_move(ticket, deadline=deadline(5))
    assert outcome.task.state is TaskState.DONE
    assert outcome.task_seconds >= 0
    assert sim.state.routing("203.0.113.8/29") == NS2
    assert [(e["block"], e["to"]) for e in accepted_moves(sim)] == [("203.0.113.8/29", NS2)]
    # Every request reported with its templated route, never a raw block or server name.
    routes = {r for r, _, _, _ in recorder.requests}
    assert {
        "/auth/time",
        "/dedicated/server/{serviceName}",
        "/dedicated/server/{serviceName}/specifications/network",
        "/dedicated/server/{serviceName}/ipMove",
        "/dedicated/server/{serviceName}/task/{taskId}",
        "/ip/{ip}",
    } <= routes
    assert not any("203.0.113" in r or "ns100" in r for r in routes)
    assert ("/dedicated/server/{serviceName}/ipMove", "POST", "200") in {
        r[:3] for r in recorder.requests
    }
    assert all(d >= 0 for _, _, _, d in recorder.requests)


async def test_vps_move_goes_through_ip_move(sim: RunningSimulator, client: OvhClient) -> None:
    ticket = await client.submit_move(BLOCK32, VPS, deadline=deadline(5))
    assert ticket.via == "ip"
    await client.wait_for_move(ticket, deadline=deadline(5))
    assert sim.state.routing("198.51.100.7/32") == VPS


async def test_vps_refuses_a_29_when_submitted(sim: RunningSimulator, client: OvhClient) -> None:
    with pytest.raises(OvhPermanentError, match="Only a single IP") as info:
        await client.submit_move(BLOCK29, VPS, deadline=deadline(5))
    assert info.value.http_status == 400
    assert not isinstance(info.value, OvhTransientError)
    assert accepted_moves(sim) == []


async def test_move_racing_another_is_refused() -> None:
    sim = await slow_sim()
    client = adapter(sim)
    try:
        first = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
        with pytest.raises(OvhPermanentError, match="already pending") as info:
            await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
        assert "TaskAlreadyExists" in (info.value.error_class or "")
        assert info.value.query_id
        assert [e["task_id"] for e in accepted_moves(sim)] == [first.task_id]
    finally:
        await client.close()
        await sim.close()


@pytest.mark.parametrize("ending", ["ovhError", "customerError", "cancelled"])
async def test_task_ending_badly_fails_the_move_with_its_comment(
    sim: RunningSimulator, client: OvhClient, ending: str
) -> None:
    sim.state.add_fault(Fault(kind="task", task_status=ending, comment="Internal error #42"))
    ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
    with pytest.raises(MoveFailed, match="Internal error #42") as info:
        await client.wait_for_move(ticket, deadline=deadline(5))
    assert info.value.task_state == ending
    assert f"ended {ending}" in str(info.value)
    assert sim.state.routing("203.0.113.8/29") == NS1


async def test_wait_for_move_deadline() -> None:
    sim = await slow_sim()
    client = adapter(sim)
    try:
        ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
        with pytest.raises(DeadlineExceeded, match="not verified by its deadline"):
            await client.wait_for_move(ticket, deadline=deadline(0.2))
    finally:
        await client.close()
        await sim.close()


async def test_task_unreadable_right_after_the_post_is_waited_for() -> None:
    sim = await start_simulator(
        build_inventory(task_read_lag=0.15, task_durations={"init": 0, "todo": 0, "doing": 0})
    )
    recorder = Recorded()
    client = adapter(sim, recorder)
    try:
        ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
        outcome = await client.wait_for_move(ticket, deadline=deadline(5))
        assert outcome.task.state is TaskState.DONE
        codes = recorder.codes("/dedicated/server/{serviceName}/task/{taskId}")
        assert codes[0] == "404"
        assert codes[-1] == "200"
    finally:
        await client.close()
        await sim.close()


async def test_find_move_task_finds_moves_posted_by_someone_else() -> None:
    sim = await slow_sim()
    client = adapter(sim)
    raw = ovh_client_for(sim)
    try:
        assert await client.find_move_task(BLOCK29, NS2) is None
        # A move sent with the ovh library directly, as a crashed failoverd would have.
        task = await asyncio.to_thread(
            raw.post, f"/dedicated/server/{NS2}/ipMove", ip="203.0.113.8/29"
        )
        found = await client.find_move_task(BLOCK29, NS2)
        assert found is not None
        assert (found.task_id, found.via, found.target) == (task["taskId"], "dedicated", NS2)
        assert await client.find_move_task(BLOCK29, NS1) is None

        # A second pending ipMove on the same server: each block still finds its own task.
        other = await asyncio.to_thread(
            raw.post, f"/dedicated/server/{NS2}/ipMove", ip="198.51.100.7/32"
        )
        again = await client.find_move_task(BLOCK29, NS2)
        assert again is not None
        assert again.task_id == task["taskId"]
        found_other = await client.find_move_task(BLOCK32, NS2)
        assert found_other is not None
        assert found_other.task_id == other["taskId"]
        assert await client.find_move_task(BLOCK32, VPS) is None

    finally:
        await client.close()
        await sim.close()


async def test_find_move_task_through_ip_move() -> None:
    sim = await slow_sim()
    client = adapter(sim)
    raw = ovh_client_for(sim)
    try:
        task32 = await asyncio.to_thread(raw.post, "/ip/198.51.100.7%2F32/move", to=VPS)
        found32 = await client.find_move_task(BLOCK32, VPS)
        assert found32 is not None
        assert (found32.task_id, found32.via) == (task32["taskId"], "ip")
        status = await client.task_status(found32)
        assert status.state in (TaskState.INIT, TaskState.TODO, TaskState.DOING)
    finally:
        await client.close()
        await sim.close()


# --------------------------------------------------------------------------- faults


async def test_503_burst_is_retried_to_success(
    sim: RunningSimulator, client: OvhClient, recorder: Recorded
) -> None:
    sim.state.add_fault(Fault(kind="error", status=503, route="/ip/{ip}", count=3))
    info = await client.block_info(BLOCK29)
    assert info.routed_to == NS1
    assert recorder.codes("/ip/{ip}") == ["503", "503", "503", "200"]


async def test_503_burst_on_the_move_post_moves_once(
    sim: RunningSimulator, client: OvhClient
) -> None:
    sim.state.add_fault(
        Fault(kind="error", status=503, route="/dedicated/server/*/ipMove", count=2)
    )
    ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
    await client.wait_for_move(ticket, deadline=deadline(5))
    assert [e["task_id"] for e in accepted_moves(sim)] == [ticket.task_id]


async def test_html_502_is_transient(sim: RunningSimulator, client: OvhClient) -> None:
    sim.state.add_fault(Fault(kind="html", status=502, route="/ip/{ip}", count=1))
    assert (await client.block_info(BLOCK29)).routed_to == NS1

    sim.state.add_fault(Fault(kind="html", status=502, route="/ip/{ip}"))
    short = adapter(sim, timeout=0.05)
    try:
        with pytest.raises(OvhTransientError, match="non-JSON body") as info:
            await short.block_info(BLOCK29)
        assert isinstance(info.value, DeadlineExceeded)
        assert info.value.http_status == 502
        assert (info.value.query_id or "").startswith("EU.sim-")
    finally:
        await short.close()


async def test_empty_200_is_transient(sim: RunningSimulator, client: OvhClient) -> None:
    sim.state.add_fault(Fault(kind="empty", route="/ip/{ip}", count=2))
    assert (await client.block_info(BLOCK29)).routed_to == NS1


async def test_slow_answer_past_the_timeout_is_retried(
    sim: RunningSimulator, recorder: Recorded
) -> None:
    client = adapter(sim, recorder, timeout=0.5)
    try:
        await client.block_info(BLOCK32)  # warm up /auth/time
        sim.state.add_fault(Fault(kind="slow", delay=1.5, route="/ip/{ip}", count=1))
        info = await client.block_info(BLOCK29)
        assert info.routed_to == NS1
        assert recorder.codes("/ip/{ip}") == ["200", "error", "200"]
    finally:
        await client.close()


async def test_reset_connection_on_the_move_post_moves_once(
    sim: RunningSimulator, client: OvhClient
) -> None:
    sim.state.add_fault(Fault(kind="reset", route="/dedicated/server/*/ipMove", count=1))
    ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
    await client.wait_for_move(ticket, deadline=deadline(5))
    assert [e["task_id"] for e in accepted_moves(sim)] == [ticket.task_id]


async def test_move_post_answered_too_late_is_not_sent_twice() -> None:
    sim = await slow_sim()
    client = adapter(sim, timeout=0.2)
    try:
        await client.service_info(NS2)
        # The POST is processed after the client gave up waiting for its answer.
        sim.state.add_fault(
            Fault(kind="slow", delay=0.4, route="/dedicated/server/*/ipMove", count=1)
        )
        ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
        posts = sum(1 for r in client.request_log() if r.method == "POST")
        assert posts >= 1
        # The simulator logs a request once it has answered it: wait for every POST.
        await until(lambda: sum(1 for r in sim.state.requests() if r.method == "POST") == posts)
        accepted = accepted_moves(sim)
        assert [e["task_id"] for e in accepted] == [ticket.task_id]
    finally:
        await client.close()
        await sim.close()


async def test_event_loop_keeps_ticking_during_a_slow_answer(sim: RunningSimulator) -> None:
    client = adapter(sim, timeout=2.0)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)  # the cadence being measured, not a sync wait

    try:
        await client.block_info(BLOCK32)
        sim.state.add_fault(Fault(kind="slow", delay=0.5, route="/ip/{ip}", count=1))
        task = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.block_info(BLOCK29)
        took = loop.time() - started
        stop.set()
        await task
        assert took >= 0.5
        # A blocked loop would tick once or twice; a free one about every 10 ms (50 here,
        # fewer on a loaded machine).
        assert ticks >= 10
    finally:
        await client.close()


async def test_errors_keep_the_query_id(client: OvhClient) -> None:
    with pytest.raises(OvhNotFound) as info:
        await client.block_info(ipaddress.ip_network("192.0.2.0/29"))
    err = info.value
    assert err.http_status == 404
    assert err.error_class == "Client::NotFound"
    assert err.route == "/ip/{ip}"
    assert (err.query_id or "").startswith("EU.sim-")
    assert err.query_id in str(err)
    assert "GET /ip/192.0.2.0/29" in str(err)


async def test_wrong_credentials_are_an_auth_error_without_secrets(sim: RunningSimulator) -> None:
    secret = "a-secret-that-must-not-leak"
    client = adapter(
        sim,
        credentials={
            "application_key": "demo-app-key",
            "application_secret": secret,
            "consumer_key": "demo-consumer-key",
        },
    )
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(OvhAuthError) as info:
            await client.block_info(BLOCK29)
        assert info.value.error_class == "INVALID_SIGNATURE"
        assert secret not in str(info.value)
        assert secret not in repr(info.value)
        assert secret not in repr(client)
        assert secret not in repr(logs)
    finally:
        await client.close()


# --------------------------------------------------------------------------- budget


async def test_budget_never_exceeded_against_the_simulator(sim: RunningSimulator) -> None:
    window = 0.25
    client = adapter(sim, rpm=4, tuning=Tuning(budget_window=window, backoff_base=0.01))
    try:
        results = await asyncio.gather(*(client.block_info(BLOCK29) for _ in range(10)))
        assert all(r.routed_to == NS1 for r in results)
        starts = [r.started for r in client.request_log()]
        seen = [r.at for r in sim.state.requests()]
        assert len(seen) == len(starts) == 11  # /auth/time + 10 reads, nothing unaccounted
        # Never a fifth request within one window of the first of four.
        for i in range(len(starts) - 4):
            assert starts[i + 4] - starts[i] >= window
        # One request at a time: the simulator answered each after the budget let it start.
        assert all(s <= t for s, t in zip(starts, seen, strict=True))
        assert seen[-1] - seen[0] >= 2 * window
    finally:
        await client.close()


async def test_move_overtakes_queued_reads_against_the_simulator(sim: RunningSimulator) -> None:
    client = adapter(sim)
    try:
        await client.service_info(NS2)
        sim.state.add_fault(Fault(kind="slow", delay=0.2, route="/ip/{ip}", count=1))
        reads = [asyncio.create_task(client.block_info(BLOCK29))]
        await until(lambda: len(client.request_log()) == 4)  # the slow read occupies the worker
        reads += [asyncio.create_task(client.block_info(BLOCK32)) for _ in range(3)]
        await until(lambda: client.budget_waiting == 3)
        ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
        await asyncio.gather(*reads)
        tail = [(r.method, r.priority) for r in client.request_log()[3:]]
        assert tail == [
            ("GET", Priority.READ),
            ("POST", Priority.MOVE),
            *[("GET", Priority.READ)] * 3,
        ]
        assert ticket.task_id == accepted_moves(sim)[0]["task_id"]
    finally:
        await client.close()


async def test_move_post_unanswered_at_the_deadline_is_unknown_not_refused() -> None:
    sim = await slow_sim()
    client = adapter(sim, timeout=2.0)
    try:
        await client.service_info(NS2)
        sim.state.add_fault(
            Fault(kind="slow", delay=0.4, route="/dedicated/server/*/ipMove", count=1)
        )
        with pytest.raises(MoveSubmissionUnknown, match="follow it with find_move_task"):
            await client.submit_move(BLOCK29, NS2, deadline=deadline(0.2))
        # OVH did act on it: the caller finds the move instead of sending another.
        await until(lambda: len(accepted_moves(sim)) == 1)
        found = await client.find_move_task(BLOCK29, NS2)
        assert found is not None
        assert found.task_id == accepted_moves(sim)[0]["task_id"]
    finally:
        await client.close()
        await sim.close()


async def test_clock_drift_is_corrected_by_reading_ovh_time_again(
    sim: RunningSimulator, client: OvhClient, recorder: Recorded
) -> None:
    await client.block_info(BLOCK29)
    # Simulate months of drift: the library's cached offset is now wrong by an hour. (A
    # private attribute of the ovh library: the only way to make its clock disagree.)
    client._client._time_delta = -3600
    info = await client.block_info(BLOCK29)
    assert info.routed_to == NS1
    assert recorder.codes("/ip/{ip}") == ["200", "400", "200"]
    assert recorder.codes("/auth/time") == ["200", "200"]


async def test_429_waits_as_long_as_ovh_asks(
    sim: RunningSimulator, client: OvhClient, recorder: Recorded
) -> None:
    await client.block_info(BLOCK32)
    sim.state.add_fault(Fault(kind="error", status=429, route="/ip/{ip}", count=1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await client.block_info(BLOCK29)).routed_to == NS1
    assert loop.time() - started >= 1.0  # the simulator answers Retry-After: 1
    assert recorder.codes("/ip/{ip}") == ["200", "429", "200"]


async def test_failed_clock_read_before_a_move_is_not_an_uncertain_move(
    sim: RunningSimulator, client: OvhClient
) -> None:
    sim.state.add_fault(Fault(kind="reset", route="/auth/time", count=1))
    ticket = await client.submit_move(BLOCK29, NS2, deadline=deadline(5))
    routes = [r.route for r in client.request_log()]
    assert routes.count("/auth/time") == 2
    assert routes.count("/dedicated/server/{serviceName}/ipMove") == 1
    assert "/ip/{ip}/task" not in routes  # no look-up for a move that was never sent
    assert [e["task_id"] for e in accepted_moves(sim)] == [ticket.task_id]


async def test_nothing_listening_is_transient_until_the_deadline(recorder: Recorded) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = ApiPolicy(endpoint=f"http://127.0.0.1:{port}/1.0", timeout=0.1)
    client = OvhClient.from_policy(api, recorder, credentials=CREDS, tuning=FAST)
    try:
        with pytest.raises(DeadlineExceeded, match="connection refused"):
            await client.block_info(BLOCK29)
        assert recorder.requests
        assert {r[:3] for r in recorder.requests} == {("/auth/time", "GET", "error")}
    finally:
        await client.close()
