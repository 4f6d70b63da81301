"""`failoverd fake-api` as a user runs it: a subprocess that curl and the ovh library can use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import ovh
import pytest

from failoverd.sim.inventory import load_inventory
from failoverd.sim.server import RunningSimulator

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "sim" / "example.yaml"
pytestmark = pytest.mark.slow


async def read_until(stream: asyncio.StreamReader, pattern: str, deadline: float) -> re.Match[str]:
    """Read lines until one matches `pattern`, or fail when the deadline (loop time) passes."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    while True:
        line = await asyncio.wait_for(stream.readline(), max(0.0, deadline - loop.time()))
        if not line:
            raise AssertionError(f"output ended without {pattern!r}: {seen}")
        seen.append(line.decode())
        if match := re.search(pattern, seen[-1]):
            return match


@contextlib.asynccontextmanager
async def fake_api(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "failoverd",
        "fake-api",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def curl(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback http only
        return resp.status, resp.read().decode(), resp.headers["X-Ovh-Queryid"]


async def test_fake_api_serves_curl_and_the_ovh_library() -> None:
    loop = asyncio.get_running_loop()
    async with fake_api("--inventory", str(EXAMPLE), "--listen", "127.0.0.1:0") as proc:
        assert proc.stdout is not None
        match = await read_until(proc.stdout, r"listening on (http://\S+/1\.0)", loop.time() + 20)
        base_url = match.group(1)
        exports = {}
        for _ in range(3):
            m = await read_until(proc.stdout, r"export (OVH_\w+)=(\S+)", loop.time() + 5)
            exports[m.group(1)] = m.group(2)
        assert exports == {
            "OVH_APPLICATION_KEY": "demo-app-key",
            "OVH_APPLICATION_SECRET": "demo-app-secret",
            "OVH_CONSUMER_KEY": "demo-consumer-key",
        }

        status, body, query_id = await asyncio.to_thread(curl, base_url + "/auth/time")
        assert status == 200
        assert int(body) > 0
        assert query_id

        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        ovh.client.ENDPOINTS[f"failoverd-sim-cli-{port}"] = base_url
        client = ovh.Client(
            endpoint=f"failoverd-sim-cli-{port}",
            application_key=exports["OVH_APPLICATION_KEY"],
            application_secret=exports["OVH_APPLICATION_SECRET"],
            consumer_key=exports["OVH_CONSUMER_KEY"],
            timeout=5,
        )
        info = await asyncio.to_thread(client.get, "/ip/203.0.113.8%2F29")
        assert info["routedTo"] == {"serviceName": "ns1001.ip-51-68-100.eu"}

        task = await asyncio.to_thread(
            client.post, "/dedicated/server/ns1002.ip-51-68-100.eu/ipMove", ip="198.51.100.7/32"
        )
        status, body, _ = await asyncio.to_thread(curl, base_url[: -len("/1.0")] + "/_sim/state")
        state = json.loads(body)
        assert state["routing"]["203.0.113.8/29"] == "ns1001.ip-51-68-100.eu"
        assert [t["taskId"] for t in state["tasks"]] == [task["taskId"]]

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert "Traceback" not in log
        assert '"GET /1.0/ip/203.0.113.8%2F29 HTTP/1.1" 200' in log  # one access line a request
        assert '"action": "move", "block": "198.51.100.7/32"' in log  # and each mutation
        assert "demo-app-secret" not in log
        assert "stopped" in (await proc.stdout.read()).decode()


async def test_fake_api_without_inventory_uses_the_packaged_default() -> None:
    loop = asyncio.get_running_loop()
    async with fake_api("--listen", "127.0.0.1:0") as proc:
        assert proc.stdout is not None
        match = await read_until(proc.stdout, r"servers: (\d+), blocks: (\d+)", loop.time() + 20)
        example = load_inventory(EXAMPLE)
        assert (int(match.group(1)), int(match.group(2))) == (
            len(example.servers),
            len(example.blocks),
        )
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_bad_inventory_exits_78_with_lines(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yaml"
    bad.write_text("servers: []\nblocks: 3\ncredentials: []\n")
    async with fake_api("--inventory", str(bad), "--listen", "127.0.0.1:0") as proc:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 78
    text = err.decode()
    assert f"{bad}:1: servers: must be a non-empty list" in text
    assert f"{bad}:2: blocks: must be a list" in text
    assert "Traceback" not in text


async def test_busy_port_is_a_clear_error(sim: RunningSimulator) -> None:
    async with fake_api("--listen", f"127.0.0.1:{sim.port}") as proc:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{sim.port}" in err.decode()
    assert "Traceback" not in err.decode()
