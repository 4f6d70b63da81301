"""Scenarios of SPEC §5 with the real simulator, real adapter, real checks, real journal.

Each asserts the simulator's final routing and its audit log (what OVH would have seen).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from failoverd.model import Health
from tests.engine_world import Grp, Srv, World, make_world

B1, B2 = "203.0.113.8/29", "198.51.100.7/32"


@pytest.fixture
async def worlds() -> AsyncIterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        await w.close()


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
