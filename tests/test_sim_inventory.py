"""Inventory parsing: shipped files are valid; every problem is reported at once, with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from failoverd.errors import ConfigError, FailoverdError
from failoverd.sim.inventory import (
    Fault,
    SimBlock,
    SimServer,
    TaskDurations,
    fault_from_dict,
    inventory_from_dict,
    load_inventory,
    parse_duration,
)
from failoverd.sim.server import default_inventory, parse_listen, zones_compatible

REPO = Path(__file__).resolve().parents[1]


def test_example_inventory_matches_the_example_policy_world(example_inventory_path: Path) -> None:
    inv = load_inventory(example_inventory_path)
    assert inv.server("ns1001.ip-51-68-100.eu") == SimServer(
        "ns1001.ip-51-68-100.eu", "dedicated", "eu-west-gra", "GRA2", "51.68.100.10", True
    )
    assert inv.server("ns1002.ip-51-68-100.eu") is not None
    assert inv.server("ns1002.ip-51-68-100.eu").region == "eu-west-rbx"  # type: ignore[union-attr]
    vps = inv.server("vps-1a2b3c4d.vps.ovh.net")
    assert vps is not None
    assert (vps.kind, vps.region) == ("vps", "eu-west-sbg")
    bhs = inv.server("ns5000.ip-142-44-200.net")
    assert bhs is not None
    assert (bhs.region, bhs.datacenter) == ("ca-east-bhs", "BHS3")
    assert inv.blocks == (
        SimBlock("203.0.113.8/29", "ns1001.ip-51-68-100.eu", (), "eu-west-gra"),
        SimBlock("198.51.100.7/32", "ns1001.ip-51-68-100.eu", (), "eu-west-gra"),
    )
    creds = inv.credentials[0]
    assert (creds.application_key, creds.application_secret, creds.consumer_key) == (
        "demo-app-key",
        "demo-app-secret",
        "demo-consumer-key",
    )
    assert inv.task_durations == TaskDurations(0.2, 0.3, 1.5)


def test_packaged_default_is_the_example(example_inventory_path: Path) -> None:
    packaged = REPO / "failoverd" / "sim" / "default_inventory.yaml"
    assert packaged.read_text() == example_inventory_path.read_text()
    assert default_inventory() == load_inventory(example_inventory_path)


def test_every_problem_at_once_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(
        "servers:\n"  # 1
        "  - name: a\n"  # 2
        "    kind: bare-metal\n"  # 3
        "    region: eu-west-gra\n"  # 4
        "    ip: 10.0.0.300\n"  # 5
        "    colour: red\n"  # 6
        "blocks:\n"  # 7
        "  - cidr: 203.0.113.9/29\n"  # 8
        "    routed_to: b\n"  # 9
        "  - cidr: 198.51.100.0/24\n"  # 10
        "  - {cidr: 198.51.100.8/29, routed_to: a, vmacs: [nope]}\n"  # 11
        "credentials: []\n"  # 12
        "task_durations: {init: soon}\n"  # 13
        "faults:\n"  # 14
        "  - {kind: error}\n"  # 15
        "colour: blue\n"  # 16
    )
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    rendered = [str(p) for p in info.value.problems]
    expected = [
        f"{path}:3: servers[0].kind: must be dedicated or vps",
        f"{path}:5: servers[0].ip: '10.0.0.300' is not an IP address",
        f"{path}:6: servers[0].colour: unknown key",
        f"{path}:8: blocks[0].cidr: '203.0.113.9/29' is not a valid block",
        f"{path}:9: blocks[0].routed_to: unknown server 'b'",
        f"{path}:10: blocks[1].region: is required for a block that is parked",
        f"{path}:11: blocks[2].cidr: overlaps block 198.51.100.0/24",
        f"{path}:11: blocks[2].vmacs: 'nope' is not a MAC address",
        f"{path}:12: credentials: must be a non-empty list",
        f"{path}:13: task_durations.init: must be a duration",
        f"{path}:15: faults[0].status: is required for an error fault",
        f"{path}:16: colour: unknown key",
    ]
    # In file order, as check-config prints a policy's problems.
    assert len(rendered) == len(expected)
    for want, line in zip(expected, rendered, strict=True):
        assert line.startswith(want), (want, rendered)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(FailoverdError, match="cannot read inventory"):
        load_inventory(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_inventory(bad)


def test_inventory_from_dict_defaults() -> None:
    inv = inventory_from_dict(
        {
            "servers": [{"name": "s", "kind": "vps", "region": "eu-west-gra", "ip": "192.0.2.1"}],
            "blocks": [{"cidr": "192.0.2.10", "routed_to": "s"}],
            "credentials": [
                {"application_key": "k", "application_secret": "x", "consumer_key": "c"}
            ],
            "listing_lag": "500ms",
        }
    )
    assert inv.blocks[0].cidr == "192.0.2.10/32"
    assert inv.servers[0].vmac_supported is False
    assert inv.task_durations.total == 0
    assert inv.listing_lag == 0.5
    assert inv.max_time_skew == 180


def test_fault_from_dict() -> None:
    assert fault_from_dict({"kind": "html"}) == Fault(kind="html", status=502)
    assert fault_from_dict(
        {"kind": "slow", "delay": "250ms", "method": "get", "block": "203.0.113.8/29", "count": 3}
    ) == Fault(kind="slow", delay=0.25, method="GET", block="203.0.113.8/29", count=3)
    with pytest.raises(ConfigError, match="task_status"):
        fault_from_dict({"kind": "task", "task_status": "exploded"})
    with pytest.raises(ConfigError, match="delay"):
        fault_from_dict({"kind": "slow"})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(2, 2.0), (0.5, 0.5), ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("-1", None), (True, None)],
)
def test_parse_duration(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("block", "server", "ok"),
    [
        ("eu-west-gra", "eu-west-gra", True),
        ("eu-west-gra", "eu-west-rbx", True),
        ("eu-west-sbg", "eu-west-gra", True),
        ("eu-west-sbg", "ca-east-bhs", False),
        ("ca-east-bhs", "eu-west-rbx", False),
        ("ca-east-bhs", "ca-east-bhs", True),
        ("eu-central-waw", "eu-west-gra", False),
    ],
)
def test_zones(block: str, server: str, ok: bool) -> None:
    assert zones_compatible(block, server) is ok


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8999") == ("127.0.0.1", 8999)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8999", "host:", "host:port", ":80", "h:70000"):
        with pytest.raises(FailoverdError, match="HOST:PORT"):
            parse_listen(bad)


def test_rehearsal_inventory_is_valid() -> None:
    inv = load_inventory(REPO / "config" / "sim" / "rehearsal.yaml")
    assert inv.task_durations.total == 35
    assert (inv.listing_lag, inv.task_read_lag) == (3, 2)
    assert (inv.rate_limit, inv.rate_window) == (60, 60)
    assert [f.kind for f in inv.faults] == ["error", "html", "slow"]
    assert inv.blocks == load_inventory(REPO / "config" / "sim" / "example.yaml").blocks


def test_rate_limit_problems() -> None:
    with pytest.raises(ConfigError) as info:
        inventory_from_dict(
            {
                "servers": [{"name": "s", "kind": "vps", "region": "r", "ip": "192.0.2.1"}],
                "credentials": [
                    {"application_key": "k", "application_secret": "x", "consumer_key": "c"}
                ],
                "rate_limit": {"requests": -1, "window": 0, "burst": 3},
            }
        )
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["rate_limit.burst", "rate_limit.requests", "rate_limit.window"]
