"""The preflight against a fake OvhApi: what it asks (once), what it concludes, and how it
fails. The simulator-backed tests are in test_preflight_sim.py."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from failoverd.config import parse_policy
from failoverd.errors import (
    DeadlineExceeded,
    OvhAuthError,
    OvhNotFound,
    OvhTransientError,
)
from failoverd.model import BlockInfo, Eligibility, ServiceInfo
from failoverd.policy import Block, Policy
from failoverd.preflight import Finding, Verdict, run_preflight

B29 = ipaddress.ip_network("203.0.113.8/29")
B32 = ipaddress.ip_network("198.51.100.7/32")
B30 = ipaddress.ip_network("198.51.100.16/30")

POLICY = """\
servers:
  ns1: {check: {tcp: "10.0.0.1:22"}}
  ns2: {check: {tcp: "10.0.0.2:22"}}
  ns3: {check: {tcp: "10.0.0.3:22"}}
  vps: {check: {icmp: 10.0.0.4}}
groups:
  web:
    primary: ns1
    standbys: [ns2, vps]
    blocks: [203.0.113.8/29, 198.51.100.7/32]
  api:
    primary: ns3
    standbys: [ns2]
    blocks: [198.51.100.16/30]
"""


def policy(text: str = POLICY) -> Policy:
    return parse_policy(text, "p.yaml")


class FakeApi:
    """An OvhApi whose answers are tables; it counts every question."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.services: dict[str, ServiceInfo | Exception] = {
            "ns1": ServiceInfo("ns1", "dedicated", "eu-west-gra", "GRA2", True),
            "ns2": ServiceInfo("ns2", "dedicated", "eu-west-rbx", "RBX8", True),
            "ns3": ServiceInfo("ns3", "dedicated", "eu-west-gra", None, False),
            "vps": ServiceInfo("vps", "vps", "eu-west-sbg", "SBG5", False),
        }
        self.blocks: dict[Block, BlockInfo | Exception] = {
            B29: BlockInfo(B29, "ns1", "failover", ("eu-west-gra",)),
            B32: BlockInfo(B32, "ns1", "failover", ("eu-west-gra",)),
            B30: BlockInfo(B30, "ns3", "failover", ("eu-west-gra",)),
        }
        self.refusals: dict[tuple[Block, str], Eligibility | Exception] = {
            (B29, "vps"): Eligibility(False, "only a single address (/32) can move to a VPS"),
        }
        # Exceptions to raise once, then answer normally (keyed like `calls`).
        self.flaky: dict[tuple[str, str], list[Exception]] = {}

    def _ask(self, kind: str, key: str) -> None:
        self.calls[(kind, key)] += 1
        pending = self.flaky.get((kind, key))
        if pending:
            raise pending.pop(0)

    async def service_info(self, name: str) -> ServiceInfo:
        self._ask("service", name)
        answer = self.services.get(name, OvhNotFound(f"{name} not found", http_status=404))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def block_info(self, block: Block) -> BlockInfo:
        self._ask("block", block.with_prefixlen)
        answer = self.blocks.get(block, OvhNotFound("no such block", http_status=404))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def can_move(self, block: Block, target: str) -> Eligibility:
        self._ask("can_move", f"{block.with_prefixlen}>{target}")
        answer = self.refusals.get((block, target), Eligibility(True, "eligible"))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def kinds(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (kind, _), n in self.calls.items():
            out[kind] += n
        return out


async def test_asks_each_question_once() -> None:
    api = FakeApi()
    report = await run_preflight(policy(), api)
    # ns2 is a standby of two groups, ns1..ns3 and vps are named once each: 4 reads.
    assert all(n == 1 for n in api.calls.values()), api.calls
    assert api.kinds() == Counter(service=4, block=3, can_move=5)
    assert report.verdicts == (
        Verdict("web", "ns2", "203.0.113.8/29", True, "eligible"),
        Verdict("web", "ns2", "198.51.100.7/32", True, "eligible"),
        Verdict(
            "web", "vps", "203.0.113.8/29", False, "only a single address (/32) can move to a VPS"
        ),
        Verdict("web", "vps", "198.51.100.7/32", True, "eligible"),
        Verdict("api", "ns2", "198.51.100.16/30", True, "eligible"),
    )
    assert report.standby_eligible() == {
        ("web", "ns2"): True,
        ("web", "vps"): False,
        ("api", "ns2"): True,
    }
    assert not report.ok
    assert report.problems() == [
        "group web: vps cannot take 203.0.113.8/29: only a single address (/32) can move to a VPS"
    ]


async def test_inventory_findings_in_plain_words() -> None:
    api = FakeApi()
    report = await run_preflight(policy(), api)
    assert report.findings == (
        Finding("server ns1", True, "dedicated server in eu-west-gra (GRA2), vMAC supported"),
        Finding("server ns2", True, "dedicated server in eu-west-rbx (RBX8), vMAC supported"),
        Finding("server vps", True, "VPS in eu-west-sbg (SBG5), no vMAC support"),
        Finding("server ns3", True, "dedicated server in eu-west-gra, no vMAC support"),
        Finding("block 203.0.113.8/29", True, "failover IP (eu-west-gra) routed to ns1 (primary)"),
        Finding("block 198.51.100.7/32", True, "failover IP (eu-west-gra) routed to ns1 (primary)"),
        Finding(
            "block 198.51.100.16/30", True, "failover IP (eu-west-gra) routed to ns3 (primary)"
        ),
    )


async def test_blocks_outside_the_group_parked_split_or_not_failover() -> None:
    api = FakeApi()
    api.blocks[B29] = BlockInfo(B29, "ns2", "failover", ("eu-west-gra",))
    api.blocks[B32] = BlockInfo(B32, None, "failover", ())
    api.blocks[B30] = BlockInfo(B30, "ns1", "dedicated", ())
    report = await run_preflight(policy(), api)
    bad = [f for f in report.findings if not f.ok]
    assert bad == [
        Finding(
            "block 198.51.100.7/32",
            False,
            "is parked (routed to no service); group web expects it on ns1 or a standby",
        ),
        Finding(
            "block 198.51.100.16/30",
            False,
            "is a 'dedicated' IP, not an Additional (failover) IP; only those move",
        ),
    ]
    # Failed over to ns2: the primary is a candidate again (failback), ns2 holds the /29.
    web = [v for v in report.verdicts if v.group == "web"]
    assert [(v.server, v.block, v.eligible, v.reason) for v in web] == [
        ("ns1", "203.0.113.8/29", True, "eligible"),
        ("ns1", "198.51.100.7/32", True, "eligible"),
        ("ns2", "203.0.113.8/29", True, "ns2 holds 203.0.113.8/29 now"),
        ("ns2", "198.51.100.7/32", True, "eligible"),
        ("vps", "203.0.113.8/29", False, "only a single address (/32) can move to a VPS"),
        ("vps", "198.51.100.7/32", True, "eligible"),
    ]
    api_group = [v for v in report.verdicts if v.group == "api"]
    assert api_group == [
        Verdict("api", "ns3", "198.51.100.16/30", False, "198.51.100.16/30 is not a failover IP"),
        Verdict("api", "ns2", "198.51.100.16/30", False, "198.51.100.16/30 is not a failover IP"),
    ]
    # Nothing was asked about a block that cannot move.
    assert not [k for k in api.calls if k[0] == "can_move" and k[1].startswith("198.51.100.16")]


async def test_a_group_split_over_two_servers_is_drift() -> None:
    api = FakeApi()
    api.blocks[B32] = BlockInfo(B32, "ns2", "failover", ("eu-west-gra",))
    report = await run_preflight(policy(), api)
    assert (
        Finding(
            "group web",
            False,
            "its blocks are routed to different servers "
            "(203.0.113.8/29 on ns1, 198.51.100.7/32 on ns2); they move together",
        )
        in report.findings
    )


async def test_outside_the_group() -> None:
    api = FakeApi()
    api.blocks[B29] = BlockInfo(B29, "ns3", "failover", ("eu-west-gra",))
    report = await run_preflight(policy(), api)
    assert (
        Finding(
            "block 203.0.113.8/29", False, "is routed to ns3, outside group web (ns1, ns2, vps)"
        )
        in report.findings
    )


async def test_missing_server_and_block_are_not_asked_about() -> None:
    api = FakeApi()
    del api.services["vps"]
    del api.blocks[B32]
    report = await run_preflight(policy(), api)
    assert Finding("server vps", False, "no such dedicated server or VPS in this OVH account") in (
        report.findings
    )
    assert Finding("block 198.51.100.7/32", False, "no such IP block in this OVH account") in (
        report.findings
    )
    web = {(v.server, v.block): (v.eligible, v.reason) for v in report.verdicts if v.group == "web"}
    assert web[("vps", "203.0.113.8/29")] == (False, "vps does not exist in this OVH account")
    assert web[("ns2", "198.51.100.7/32")] == (
        False,
        "198.51.100.7/32 does not exist in this OVH account",
    )
    assert api.kinds()["can_move"] == 2  # ns2 for the /29, ns2 for api's /30


async def test_bad_credentials_stop_at_the_first_request() -> None:
    api = FakeApi()
    api.services["ns1"] = OvhAuthError("This credential does not exist", http_status=403)
    with pytest.raises(OvhAuthError):
        await run_preflight(policy(), api)
    assert sum(api.calls.values()) == 1


async def test_unreachable_api_stops_at_the_first_request() -> None:
    api = FakeApi()
    api.services["ns1"] = OvhTransientError("connection refused")
    with pytest.raises(OvhTransientError):
        await run_preflight(policy(), api)
    assert sum(api.calls.values()) == 1


async def test_later_errors_become_verdicts_and_budget_timeouts_are_asked_again() -> None:
    api = FakeApi()
    api.refusals[(B32, "ns2")] = OvhTransientError("HTTP 503", http_status=503)
    budget = DeadlineExceeded("deadline passed while waiting for the API request budget")
    api.flaky[("can_move", "198.51.100.7/32>vps")] = [budget, budget]
    report = await run_preflight(policy(), api)
    web = {(v.server, v.block): (v.eligible, v.reason) for v in report.verdicts if v.group == "web"}
    assert web[("ns2", "198.51.100.7/32")] == (False, "could not check: HTTP 503 (HTTP 503)")
    assert web[("vps", "198.51.100.7/32")] == (True, "eligible")
    assert api.calls[("can_move", "198.51.100.7/32>vps")] == 3


async def test_cheap_form_asks_routing_and_can_move() -> None:
    api = FakeApi()
    report = await run_preflight(policy(), api, check_inventory=False)
    assert report.findings == ()
    assert api.kinds() == Counter(block=3, can_move=5)
    assert report.standby_eligible() == {
        ("web", "ns2"): True,
        ("web", "vps"): False,
        ("api", "ns2"): True,
    }


async def test_cheap_form_after_a_failover_checks_the_primary_not_the_holder() -> None:
    api = FakeApi()
    for b in (B29, B32):
        api.blocks[b] = BlockInfo(b, "ns2", "failover", ("eu-west-gra",))
    report = await run_preflight(policy(), api, check_inventory=False)
    assert ("can_move", "203.0.113.8/29>ns2") not in api.calls
    assert api.calls[("can_move", "203.0.113.8/29>ns1")] == 1
    assert Verdict("web", "ns2", "203.0.113.8/29", True, "ns2 holds 203.0.113.8/29 now") in (
        report.verdicts
    )
    assert report.standby_eligible() == {
        ("web", "ns1"): True,
        ("web", "ns2"): True,
        ("web", "vps"): False,
        ("api", "ns2"): True,
    }


async def test_cheap_form_raises_when_the_api_is_down() -> None:
    api = FakeApi()
    api.blocks[B29] = OvhAuthError("invalid key", http_status=403)
    with pytest.raises(OvhAuthError):
        await run_preflight(policy(), api, check_inventory=False)
    assert sum(api.calls.values()) == 1
