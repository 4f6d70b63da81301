"""The request budget and the single worker, against a hand-driven fake ovh.Client.

A fake (not a mock) stands in for the signing client here so the test decides exactly
when each answer comes; the same properties are shown against the simulator in
tests/test_ovhapi_sim.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from failoverd.errors import DeadlineExceeded, MoveFailed, OvhPermanentError
from failoverd.model import MoveTicket
from failoverd.ovhapi import OvhClient, Priority, Tuning
from failoverd.policy import ApiPolicy
from tests.fixtures.sim import until

BLOCK = ipaddress.ip_network("203.0.113.8/29")


@dataclass
class FakeResponse:
    status_code: int
    content: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"X-Ovh-Queryid": "EU.fake.1"})


class FakeOvh:
    """Answers like OVH; `gate` (when set) holds every answer until the test opens it."""

    def __init__(self) -> None:
        self.gate: threading.Event | None = None
        self.calls: list[tuple[str, str]] = []
        self.time_delta = 0

    def raw_call(
        self, method: str, path: str, data: Any = None, need_auth: bool = True
    ) -> FakeResponse:
        self.calls.append((method, path))
        if self.gate is not None:
            self.gate.wait(10)
        if path.startswith("/dedicated/server/") and path.count("/") == 3:
            body: Any = {"name": path.rsplit("/", 1)[1], "region": "eu-west-gra"}
        elif path.endswith("/specifications/network"):
            body = {"vmac": {"supported": True}}
        elif "/task/" in path:
            body = {"taskId": 42, "function": "ipMove", "status": "done", "comment": None}
        elif path.endswith("/ipMove"):
            body = {"taskId": 42, "function": "ipMove", "status": "init"}
        else:
            body = {"ip": "203.0.113.8/29", "routedTo": {"serviceName": "ns1"}, "type": "failover"}
        return FakeResponse(200, json.dumps(body).encode())


class Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, float]] = []

    def ovh_request(self, route: str, method: str, code: str, duration: float) -> None:
        self.requests.append((route, method, code, duration))


def make(
    fake: FakeOvh, *, rpm: int = 1000, window: float = 60.0, recorder: Recorded | None = None
) -> OvhClient:
    api = ApiPolicy(endpoint="ovh-eu", timeout=2.0, requests_per_minute=rpm)
    return OvhClient(
        fake, api=api, recorder=recorder, signed=False, tuning=Tuning(budget_window=window)
    )


async def test_move_submission_overtakes_queued_reads() -> None:
    fake = FakeOvh()
    client = make(fake)
    try:
        await client.service_info("ns2")  # cached: the move needs only its POST
        fake.gate = threading.Event()
        first = asyncio.create_task(client.block_info(BLOCK))
        await until(lambda: len(fake.calls) == 3)  # the worker is now busy with `first`
        reads = [asyncio.create_task(client.block_info(BLOCK)) for _ in range(4)]
        await until(lambda: client.budget_waiting == 4)
        move = asyncio.create_task(client.submit_move(BLOCK, "ns2", deadline=1e12))
        await until(lambda: client.budget_waiting == 5)
        fake.gate.set()
        ticket = await move
        await asyncio.gather(first, *reads)
        assert ticket.task_id == 42
        assert ticket.via == "dedicated"
        order = [(r.method, r.priority) for r in client.request_log()[2:]]
        assert order == [
            ("GET", Priority.READ),  # `first`, already running
            ("POST", Priority.MOVE),  # overtook the four reads queued before it
            *[("GET", Priority.READ)] * 4,
        ]
    finally:
        if fake.gate is not None:
            fake.gate.set()
        await client.close()


async def test_budget_is_never_exceeded_and_spent_is_visible() -> None:
    fake = FakeOvh()
    recorder = Recorded()
    client = make(fake, rpm=5, window=0.3, recorder=recorder)
    try:
        results = await asyncio.gather(*(client.block_info(BLOCK) for _ in range(17)))
        assert len(results) == 17
        starts = [r.started for r in client.request_log()]
        assert len(starts) == 17
        # Any 5 + 1 consecutive starts span at least one window: never 6 in 0.3 s.
        for i in range(len(starts) - 5):
            assert starts[i + 5] - starts[i] >= 0.3
        assert 1 <= client.budget_spent <= 5
        await until(lambda: len(recorder.requests) == 17)
        assert {r[:3] for r in recorder.requests} == {("/ip/{ip}", "GET", "200")}
    finally:
        await client.close()


async def test_deadline_while_queued_for_budget() -> None:
    fake = FakeOvh()
    client = make(fake, rpm=1, window=60.0)
    try:
        await client.block_info(BLOCK)
        loop = asyncio.get_running_loop()
        with pytest.raises(DeadlineExceeded, match="request budget"):
            await client.submit_move(BLOCK, "ns2", deadline=loop.time() + 0.1)
        assert client.budget_waiting == 0
        assert len(fake.calls) == 1
    finally:
        await client.close()


async def test_done_task_with_routing_elsewhere_is_a_failed_move() -> None:
    fake = FakeOvh()  # says every task is done and every block is routed to ns1
    client = make(fake)
    try:
        ticket = MoveTicket(block=BLOCK, target="ns2", via="dedicated", task_id=42)
        with pytest.raises(
            MoveFailed, match=re.escape("task done but 203.0.113.8/29 is routed to ns1")
        ):
            await client.wait_for_move(ticket, deadline=1e12)
        reads = [r.route for r in client.request_log()]
        assert reads.count("/ip/{ip}") == Tuning().verify_attempts
    finally:
        await client.close()


async def test_closed_client_refuses_calls() -> None:
    fake = FakeOvh()
    client = make(fake)
    await client.block_info(BLOCK)
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(OvhPermanentError, match="closed"):
        await client.block_info(BLOCK)
    assert len(fake.calls) == 1


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class ContextReadingOvh(FakeOvh):
    """Records the context variable seen on the worker thread."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def raw_call(
        self, method: str, path: str, data: Any = None, need_auth: bool = True
    ) -> FakeResponse:
        self.seen.append(REQUEST_ID.get())
        return super().raw_call(method, path, data, need_auth)


async def test_context_variables_reach_the_worker_thread() -> None:
    fake = ContextReadingOvh()
    client = make(fake)
    try:
        REQUEST_ID.set("move-123")
        await client.block_info(BLOCK)
        assert fake.seen == ["move-123"]
    finally:
        await client.close()
