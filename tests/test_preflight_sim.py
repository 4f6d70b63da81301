"""``check-config --online`` and the preflight against the OVH API simulator, through the
real adapter and the real ovh library over loopback.

The simulator runs on the test's event loop; check-config runs its own loop
(asyncio.run), so it is called in a worker thread, in-process, with OVH_* variables in
the environment exactly as a user would set them.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from failoverd import checkconfig
from failoverd.config import load_policy
from failoverd.ovhapi import OvhClient
from failoverd.policy import Policy
from failoverd.preflight import run_preflight
from failoverd.sim.inventory import inventory_from_dict
from failoverd.sim.server import RunningSimulator, start_simulator
from tests.fixtures.sim import FAST_TASKS, build_inventory, example_inventory_dict

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config" / "failoverd.example.yaml"
NS1 = "ns1001.ip-51-68-100.eu"
NS2 = "ns1002.ip-51-68-100.eu"
NS3 = "ns1003.ip-51-68-100.eu"  # GRA, no vMAC support (added below)
VPS = "vps-1a2b3c4d.vps.ovh.net"
BHS = "ns5000.ip-142-44-200.net"
SECRET = "demo-app-secret"


@pytest.fixture
def ovh_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The simulator's credentials in the environment, and no ovh.conf to find."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("OVH_APPLICATION_KEY", "demo-app-key")
    monkeypatch.setenv("OVH_APPLICATION_SECRET", SECRET)
    monkeypatch.setenv("OVH_CONSUMER_KEY", "demo-consumer-key")


def policy_for(
    sim: RunningSimulator | str, tmp_path: Path, text: str | None = None, timeout: str = "2s"
) -> Path:
    """The example policy (or `text`) pointed at the simulator, as a file."""
    url = sim if isinstance(sim, str) else sim.base_url
    body = text if text is not None else EXAMPLE.read_text(encoding="utf-8")
    body = body.replace("endpoint: ovh-eu", f"endpoint: {url}")
    body = body.replace("config_file: /etc/failoverd/ovh.conf", f"timeout: {timeout}")
    body = body.replace("  timeout: 10s                # one API request\n", "")
    path = tmp_path / "failoverd.yaml"
    path.write_text(body, encoding="utf-8")
    return path


async def check_online(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = await asyncio.to_thread(checkconfig.main, path, online=True)
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(group, candidate, block) -> (verdict, reason) from the printed table."""
    rows: dict[tuple[str, str, str], tuple[str, str]] = {}
    lines = out.split("eligibility:\n", 1)[1].splitlines()
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        group, server, block, verdict, *reason = line.split()
        rows[(group, server, block)] = (verdict, " ".join(reason))
    return rows


def findings(out: str) -> list[tuple[str, str, str]]:
    """(ok|FAIL, subject, message) from the printed inventory section."""
    lines = out.split("inventory:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    out_rows = []
    for line in lines:
        match = re.match(r"^  (ok  |FAIL)  (\S+ \S+)\s+(.*)$", line)
        assert match, line
        out_rows.append((match[1].strip(), match[2], match[3]))
    return out_rows


async def test_healthy_inventory_passes(
    ovh_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with await start_simulator(build_inventory()) as sim:
        path = policy_for(sim, tmp_path)
        code, out, err = await check_online(path, capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"ok: 2 groups, 4 servers, 2 blocks ({path})\n")
    assert ("ok", f"server {NS1}", "dedicated server in eu-west-gra (gra2), vMAC supported") in (
        findings(out)
    )
    assert (
        "ok",
        "block 203.0.113.8/29",
        f"failover IP (eu-west-gra) routed to {NS1} (primary)",
    ) in (findings(out))
    assert all(ok == "ok" for ok, _, _ in findings(out))
    assert table(out) == {
        ("web", NS2, "203.0.113.8/29"): ("eligible", "eligible"),
        ("mail", VPS, "198.51.100.7/32"): ("eligible", "eligible"),
        ("mail", NS2, "198.51.100.7/32"): ("eligible", "eligible"),
    }
    assert out.endswith("preflight: 3 of 3 group candidates can take over every block\n")


BROKEN_WORLD = """\
servers:
  ns1001.ip-51-68-100.eu: {check: {tcp: "51.68.100.10:22"}}
  ns1002.ip-51-68-100.eu: {check: {tcp: "51.68.100.11:22"}}
  ns1003.ip-51-68-100.eu: {check: {tcp: "51.68.100.12:22"}}
  vps-1a2b3c4d.vps.ovh.net: {check: {icmp: 51.68.102.20}}
  ns5000.ip-142-44-200.net: {check: {tcp: "142.44.200.10:22"}}
api:
  endpoint: ovh-eu
groups:
  web:                    # a standby in another region, a VPS for a /29
    primary: ns1001.ip-51-68-100.eu
    standbys: [ns5000.ip-142-44-200.net, vps-1a2b3c4d.vps.ovh.net, ns1002.ip-51-68-100.eu]
    blocks: [203.0.113.8/29]
  mac:                    # a vMAC block towards a server without vMAC support
    primary: ns1001.ip-51-68-100.eu
    standbys: [ns1003.ip-51-68-100.eu, ns1002.ip-51-68-100.eu]
    blocks: [198.51.100.16/30]
  mail:                   # its block is routed to a server outside the group
    primary: ns1001.ip-51-68-100.eu
    standbys: [ns1002.ip-51-68-100.eu]
    blocks: [198.51.100.7/32]
"""


def broken_inventory() -> dict[str, Any]:
    data = example_inventory_dict()
    data["task_durations"] = dict(FAST_TASKS)
    data["servers"].append(
        {
            "name": NS3,
            "kind": "dedicated",
            "region": "eu-west-gra",
            "datacenter": "GRA3",
            "ip": "51.68.100.12",
            "vmac_supported": False,
        }
    )
    data["blocks"] = [
        {"cidr": "203.0.113.8/29", "routed_to": NS1},
        {"cidr": "198.51.100.16/30", "routed_to": NS1, "vmacs": ["02:00:00:aa:bb:01"]},
        {"cidr": "198.51.100.7/32", "routed_to": NS3},
    ]
    return data


async def test_each_reason_is_reported(
    ovh_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with await start_simulator(inventory_from_dict(broken_inventory())) as sim:
        path = policy_for(sim, tmp_path, BROKEN_WORLD)
        code, out, err = await check_online(path, capsys)
    assert code == 1
    rows = table(out)
    verdict, reason = rows[("web", BHS, "203.0.113.8/29")]
    assert verdict == "REFUSED"
    assert "eu-west-gra" in reason
    assert "ca-east-bhs" in reason
    assert "moves only within its region" in reason
    verdict, reason = rows[("web", VPS, "203.0.113.8/29")]
    assert verdict == "REFUSED"
    assert "only a single address (/32) can move to a VPS" in reason
    assert rows[("web", NS2, "203.0.113.8/29")] == ("eligible", "eligible")
    verdict, reason = rows[("mac", NS3, "198.51.100.16/30")]
    assert verdict == "REFUSED"
    assert "virtual MACs" in reason
    assert f"{NS3} does not support virtual MACs" in reason
    assert rows[("mac", NS2, "198.51.100.16/30")] == ("eligible", "eligible")
    assert (
        "FAIL",
        "block 198.51.100.7/32",
        f"is routed to {NS3}, outside group mail ({NS1}, {NS2})",
    ) in findings(out)
    # The blocks of mail are away from its primary: failing back is checked too.
    assert rows[("mail", NS1, "198.51.100.7/32")] == ("eligible", "eligible")
    assert out.endswith("preflight: 4 of 7 group candidates can take over every block\n")
    assert err.startswith("failoverd: preflight found 4 problem(s); first: block 198.51.100.7/32")
    assert "Traceback" not in out + err


async def test_bad_credentials_one_line(
    ovh_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OVH_CONSUMER_KEY", "revoked-consumer-key")
    async with await start_simulator(build_inventory()) as sim:
        path = policy_for(sim, tmp_path)
        code, out, err = await check_online(path, capsys)
    assert code == 1
    assert out == f"ok: 2 groups, 4 servers, 2 blocks ({path})\n"
    assert len(err.splitlines()) == 1
    assert err.startswith("failoverd: check-config --online: ")
    assert "403" in err or "credential" in err.lower()
    assert SECRET not in err
    assert "revoked-consumer-key" not in err


async def test_missing_credentials_say_where_they_go(
    ovh_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OVH_APPLICATION_KEY", "OVH_APPLICATION_SECRET", "OVH_CONSUMER_KEY"):
        monkeypatch.delenv(name)
    path = policy_for("http://127.0.0.1:9/1.0", tmp_path)
    code, _, err = await check_online(path, capsys)
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "OVH_APPLICATION_KEY" in err


async def test_unreachable_api_one_line(
    ovh_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        path = policy_for(f"http://127.0.0.1:{port}/1.0", tmp_path, timeout="200ms")
        code, out, err = await check_online(path, capsys)
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("failoverd: check-config --online: cannot reach the OVH API: ")
    assert "Traceback" not in err
    assert "eligibility" not in out


async def test_endpoint_without_the_api_path_is_one_line_not_missing_servers(
    ovh_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base URL without its /1.0: every path answers 404, /auth/time first. That is a
    wrong endpoint, not servers and blocks missing from the account."""
    async with await start_simulator(build_inventory()) as sim:
        path = policy_for(sim.root_url, tmp_path)
        code, out, err = await check_online(path, capsys)
    assert code == 1
    assert "eligibility" not in out
    assert len(err.splitlines()) == 1
    assert err.startswith("failoverd: check-config --online: GET /auth/time: ")
    assert f"api.endpoint ({sim.root_url}) does not look like the API's base URL" in err


class CountingRecorder:
    """The Recorder part the adapter uses: one line per OVH request."""

    def __init__(self) -> None:
        self.routes: Counter[str] = Counter()

    def ovh_request(self, route: str, method: str, code: str, duration: float) -> None:
        self.routes[f"{method} {route}"] += 1


def big_world(groups: int = 20, standbys: int = 3) -> tuple[dict[str, Any], str]:
    """`groups` groups, each with its own primary, `standbys` standbys and two blocks."""
    servers: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    policy = ["api:\n  endpoint: ovh-eu\n  timeout: 5s\n  requests_per_minute: 100000\n"]
    policy.append("servers:\n")
    lines = ["groups:\n"]
    for g in range(groups):
        names = [f"ns{g:02d}{i}.example.net" for i in range(standbys + 1)]
        for i, name in enumerate(names):
            ip = f"10.{g}.{i}.1"
            servers.append(
                {
                    "name": name,
                    "kind": "dedicated",
                    "region": "eu-west-gra" if i % 2 == 0 else "eu-west-rbx",
                    "datacenter": "GRA1",
                    "ip": ip,
                    "vmac_supported": True,
                }
            )
            policy.append(f"  {name}: {{check: {{tcp: '{ip}:22'}}}}\n")
        cidrs = [f"198.18.{g}.0/29", f"198.18.{g}.100/32"]
        blocks += [{"cidr": c, "routed_to": names[0]} for c in cidrs]
        lines.append(
            f"  g{g}: {{primary: {names[0]}, standbys: [{', '.join(names[1:])}], "
            f"blocks: [{', '.join(cidrs)}]}}\n"
        )
    data = example_inventory_dict()
    data.update(servers=servers, blocks=blocks, task_durations=dict(FAST_TASKS))
    return data, "".join(policy + lines)


async def test_20_groups_x_3_standbys_x_2_blocks_within_the_budget(tmp_path: Path) -> None:
    inventory, text = big_world()
    async with await start_simulator(inventory_from_dict(inventory)) as sim:
        policy: Policy = load_policy(policy_for(sim, tmp_path, text))
        recorder = CountingRecorder()
        client = OvhClient.from_policy(
            policy.api,
            recorder,  # type: ignore[arg-type]  # only ovh_request is called by the adapter
            credentials={
                "application_key": "demo-app-key",
                "application_secret": SECRET,
                "consumer_key": "demo-consumer-key",
            },
        )
        try:
            full = await run_preflight(policy, client)
            first = sum(recorder.routes.values())
            recorder.routes.clear()
            periodic = await run_preflight(policy, client, check_inventory=False)
            again = dict(recorder.routes)
        finally:
            await client.close()
    assert full.ok
    assert len(full.verdicts) == 20 * 3 * 2
    assert all(periodic.standby_eligible().values())
    # Cached: every server read once (+ its network spec), every block once, one
    # eligibility question per standby x block, and the clock once.
    assert first == 80 * 2 + 40 + 120 + 1
    # With requests_per_minute 60 and a 15-minute preflight interval the budget is 900
    # requests: the first, full preflight uses about a third of it...
    budget = 60 * policy.daemon.preflight_interval / 60
    assert first <= budget / 2
    # ...and the periodic form, reusing the adapter's cache, only reads the routing of the
    # 40 blocks (it decides the candidates) and asks the 120 questions: under three
    # minutes' worth of budget every fifteen.
    assert again == {
        "GET /ip/{ip}": 40,
        "GET /dedicated/server/{serviceName}/ipCanBeMovedTo": 120,
    }


async def check_online_process(path: Path, tmp_path: Path) -> tuple[int | None, str, str]:
    """As an operator runs it: `failoverd check-config --online`, credentials from OVH_*."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "OVH_APPLICATION_KEY": "demo-app-key",
        "OVH_APPLICATION_SECRET": SECRET,
        "OVH_CONSUMER_KEY": "demo-consumer-key",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "failoverd",
        "check-config",
        "--online",
        "-c",
        str(path),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, raw_out.decode(), raw_err.decode()


async def test_periodic_form_after_a_failover(tmp_path: Path) -> None:
    """The daemon's periodic preflight once web has failed over to its standby: the holder
    is not refused for holding the block ("already routed"), the primary is checked for
    failing back, as in the full form."""
    async with await start_simulator(build_inventory()) as sim:
        policy = load_policy(policy_for(sim, tmp_path))
        client = OvhClient.from_policy(
            policy.api,
            credentials={
                "application_key": "demo-app-key",
                "application_secret": SECRET,
                "consumer_key": "demo-consumer-key",
            },
        )
        try:
            sim.state.set_routing("203.0.113.8/29", NS2)
            full = await run_preflight(policy, client)
            periodic = await run_preflight(policy, client, check_inventory=False)
        finally:
            await client.close()
    web = {(v.server, v.block): (v.eligible, v.reason) for v in periodic.verdicts}
    assert web[(NS2, "203.0.113.8/29")] == (True, f"{NS2} holds 203.0.113.8/29 now")
    assert web[(NS1, "203.0.113.8/29")] == (True, "eligible")
    assert periodic.verdicts == full.verdicts
    assert all(periodic.standby_eligible().values())


async def test_online_through_a_real_process(tmp_path: Path) -> None:
    async with await start_simulator(inventory_from_dict(broken_inventory())) as sim:
        path = policy_for(sim, tmp_path, BROKEN_WORLD)
        code, out, err = await check_online_process(path, tmp_path)
    assert code == 1
    assert rows_refused(out) == {
        ("web", BHS, "203.0.113.8/29"),
        ("web", VPS, "203.0.113.8/29"),
        ("mac", NS3, "198.51.100.16/30"),
    }
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert SECRET not in out + err


def rows_refused(out: str) -> set[tuple[str, str, str]]:
    return {key for key, (verdict, _) in table(out).items() if verdict == "REFUSED"}


async def test_unreachable_api_keeps_retries_off_the_report(tmp_path: Path) -> None:
    """A real process (logging as the CLI sets it up): the adapter's retries while the API
    is unreachable are not printed into the report on stdout; stderr has the one line."""
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        path = policy_for(f"http://127.0.0.1:{port}/1.0", tmp_path, timeout="200ms")
        code, out, err = await check_online_process(path, tmp_path)
    assert code == 1
    assert out == f"ok: 2 groups, 4 servers, 2 blocks ({path})\n"
    assert err.count("\n") == 1
    assert err.startswith("failoverd: check-config --online: cannot reach the OVH API: ")
