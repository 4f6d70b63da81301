"""The HTTP API against a real aiohttp server on loopback, over an in-test Engine."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from asyncio.subprocess import PIPE
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from failoverd.errors import MoveRefused
from failoverd.metrics import CONTENT_TYPE, Metrics
from failoverd.model import HistoryEntry
from failoverd.web import HttpApi, WebServer
from tests.fixtures.daemon import TOKEN, FakeEngine, LiveApi

AUTH = {"Authorization": "Bearer test-admin-token-5f2b9c"}


async def call(
    method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if body is not None:
            kwargs["json"] = body
        async with session.request(method, url, **kwargs) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


async def test_status_is_the_snapshot_as_json(web_api: LiveApi) -> None:
    status, data = await call("GET", web_api.url + "/status")
    assert status == 200
    assert [g["name"] for g in data["groups"]] == ["web", "db"]
    web = data["groups"][0]
    assert web["status"] == "nominal"
    assert web["routing"] == {
        "203.0.113.8/29": "ns1001.ip-51-68-100.eu",
        "198.51.100.7/32": "ns1001.ip-51-68-100.eu",
    }
    assert web["eligible"]["ns5000.ip-142-44-200.net"] is False
    assert data["servers"][1] == {
        "name": "ns1002.ip-51-68-100.eu",
        "health": "down",
        "failing": True,
        "since": 1_700_000_000.0 - 30,
        "last_check": 1_700_000_000.0 - 1,
        "last_reason": "timeout",
        "canary": False,
    }
    assert [g["name"] for g in data["guards"]] == ["mass_failure", "canary", "max_failovers"]
    assert data["in_flight"] == []


async def test_metrics_exposition(web_api: LiveApi) -> None:
    async with aiohttp.ClientSession() as s, s.get(web_api.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        text = await resp.text()
    assert 'failoverd_group_state{group="db",state="failed_over"} 1.0' in text
    assert 'failoverd_server_up{server="ns1002.ip-51-68-100.eu"} 0.0' in text


async def test_healthz_follows_the_health_function(web_api: LiveApi) -> None:
    assert await call("GET", web_api.url + "/healthz") == (
        200,
        {"ok": True, "reason": "main loop ticked 0.1s ago"},
    )
    web_api.health.append((False, "main loop has not ticked for 42s"))
    assert await call("GET", web_api.url + "/healthz") == (
        503,
        {"ok": False, "reason": "main loop has not ticked for 42s"},
    )


async def test_history_parameters(web_api: LiveApi) -> None:
    status, accepted = await call("POST", web_api.url + "/groups/web/move", body={}, headers=AUTH)
    assert status == 202
    status, rows = await call("GET", web_api.url + "/history?group=web&limit=5")
    assert status == 200
    assert rows[0]["message"] == "manual move of web"
    assert rows[0]["move_id"] == accepted["move_id"]
    assert web_api.engine.calls[-1] == ("history", {"group": "web", "limit": 5})
    assert (await call("GET", web_api.url + "/history"))[0] == 200
    assert web_api.engine.calls[-1] == ("history", {"group": None, "limit": 50})
    for query, message in [
        ("limit=abc", "limit must be an integer, not 'abc'"),
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=100000", "limit must be between 1 and 1000"),
        ("grop=web", "unknown query parameter 'grop'"),
    ]:
        assert await call("GET", f"{web_api.url}/history?{query}") == (400, {"error": message})
    assert await call("GET", web_api.url + "/history?group=nope") == (
        404,
        {"error": "no group 'nope' in the policy"},
    )


async def test_move_accepted(web_api: LiveApi) -> None:
    status, data = await call(
        "POST",
        web_api.url + "/groups/web/move",
        body={"to": "ns1002.ip-51-68-100.eu", "force": True, "dry_run": True},
        headers=AUTH,
    )
    assert status == 202
    assert data == {
        "move_id": "m1",
        "group": "web",
        "target": "ns1002.ip-51-68-100.eu",
        "blocks": ["203.0.113.8/29", "198.51.100.7/32"],
        "dry_run": True,
    }
    assert web_api.engine.calls[-1] == (
        "move",
        {"group": "web", "to": "ns1002.ip-51-68-100.eu", "force": True, "dry_run": True},
    )


@pytest.mark.parametrize("code", [409, 422])
async def test_move_refused_keeps_status_and_reason(web_api: LiveApi, code: int) -> None:
    web_api.engine.refuse = MoveRefused("group web is in cooldown for 7m", status=code)
    status, data = await call("POST", web_api.url + "/groups/web/move", body={}, headers=AUTH)
    assert (status, data) == (code, {"error": "group web is in cooldown for 7m"})


async def test_pause_and_resume(web_api: LiveApi) -> None:
    status, view = await call(
        "POST",
        web_api.url + "/groups/db/pause",
        body={"for": "2h", "reason": "kernel upgrade"},
        headers=AUTH,
    )
    assert status == 200
    assert view["paused"] is True
    assert view["status"] == "paused"
    assert view["pause_reason"] == "kernel upgrade"
    assert web_api.engine.calls[-1] == (
        "pause",
        {"group": "db", "duration": 7200.0, "reason": "kernel upgrade"},
    )
    status, view = await call(
        "POST", web_api.url + "/groups/db/pause", body={"for": 90}, headers=AUTH
    )
    assert status == 200
    assert web_api.engine.calls[-1][1]["duration"] == 90.0
    # No body at all is a pause until resumed.
    async with (
        aiohttp.ClientSession() as s,
        s.post(web_api.url + "/groups/db/pause", headers=AUTH) as r,
    ):
        assert r.status == 200
    assert web_api.engine.calls[-1][1]["duration"] is None
    status, view = await call("POST", web_api.url + "/groups/db/resume", headers=AUTH)
    assert status == 200
    assert view["paused"] is False


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/groups/nope/move", {}, 404, "no group 'nope' in the policy"),
        ("/groups/nope/pause", {}, 404, "no group 'nope' in the policy"),
        ("/groups/nope/resume", {}, 404, "no group 'nope' in the policy"),
        ("/groups/web/move", {"to": 3}, 400, "field 'to' has the wrong type"),
        ("/groups/web/move", {"force": "yes"}, 400, "field 'force' has the wrong type"),
        ("/groups/web/move", {"force": 1}, 400, "field 'force' has the wrong type"),
        (
            "/groups/web/move",
            {"target": "x"},
            400,
            "unknown field 'target' (known: 'to', 'force', 'dry_run')",
        ),
        ("/groups/web/move", [1, 2], 400, "body must be a JSON object"),
        ("/groups/web/pause", {"for": "soon"}, 400, None),
        ("/groups/web/pause", {"for": True}, 400, "field 'for' has the wrong type"),
        ("/groups/web/pause", {"for": -5}, 400, None),
        ("/groups/web/pause", {"reason": "x" * 501}, 400, "'reason' is longer than 500 characters"),
        ("/groups/web/resume", {"force": True}, 400, "unknown field 'force' (known: none)"),
    ],
)
async def test_bad_admin_requests(
    web_api: LiveApi, path: str, body: Any, status: int, message: str | None
) -> None:
    got_status, data = await call("POST", web_api.url + path, body=body, headers=AUTH)
    assert got_status == status
    assert isinstance(data["error"], str)
    assert data["error"]
    if message is not None:
        assert data["error"] == message
    assert web_api.engine.moves == 0


async def test_malformed_bodies(web_api: LiveApi) -> None:
    url = web_api.url + "/groups/web/move"
    async with aiohttp.ClientSession() as s:
        async with s.post(
            url, data=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
        ) as r:
            assert (r.status, await r.json()) == (400, {"error": "body is not valid JSON"})
        async with s.post(
            url, data=b'{"to": "x"}', headers={**AUTH, "Content-Type": "text/plain"}
        ) as r:
            assert (r.status, await r.json()) == (415, {"error": "body must be application/json"})
        big = b'{"to": "' + b"x" * 100_000 + b'"}'
        async with s.post(url, data=big, headers={**AUTH, "Content-Type": "application/json"}) as r:
            assert r.status == 413
            assert "error" in await r.json()
        deep = b"[" * 100_000 + b"]" * 100_000
        async with s.post(
            url, data=deep[:60000], headers={**AUTH, "Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
    assert web_api.engine.moves == 0


async def test_unknown_routes_and_methods_are_json_4xx(web_api: LiveApi) -> None:
    assert await call("GET", web_api.url + "/nope") == (404, {"error": "not found"})
    status, data = await call("DELETE", web_api.url + "/status")
    assert status == 405
    assert data == {"error": "method not allowed"}
    assert (await call("GET", web_api.url + "/groups/web/move"))[0] == 405


async def test_promtool_accepts_live_metrics(web_api: LiveApi) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/install-tools.sh installs it); not checked")
    # Some events so histograms and counters have samples, not only headers.
    web_api.metrics.check_done("ns1001.ip-51-68-100.eu", "http", True, 0.01)
    web_api.metrics.ovh_request("/ip/{ip}/move", "POST", "200", 0.2)
    web_api.metrics.failover_done("web", "auto", "success")
    web_api.metrics.failover_blocked("web", "cooldown")
    web_api.metrics.phase("total", 12.0)
    web_api.metrics.config_reloaded(True, 1_700_000_000.0)
    async with aiohttp.ClientSession() as s, s.get(web_api.url + "/metrics") as resp:
        text = await resp.read()
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    out, err = await proc.communicate(text)
    assert proc.returncode == 0, (out + err).decode()
    assert b"failoverd_failovers_total" in text


async def test_a_slow_body_is_cut_off_and_does_not_block_others() -> None:
    engine = FakeEngine()
    metrics = Metrics(CollectorRegistry(), engine.snapshot)
    api = HttpApi(
        engine, metrics.render, token=TOKEN, healthy=lambda: (True, "ok"), body_timeout=0.3
    )
    server = WebServer(api, "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /groups/web/move HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        # While that client dawdles, others are served.
        assert (await call("GET", server.url + "/healthz"))[0] == 200
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status_line.startswith(b"HTTP/1.1 408")
        writer.close()
    finally:
        await server.stop()
    assert engine.moves == 0


def _server(**kwargs: Any) -> WebServer:
    engine = FakeEngine()
    metrics = Metrics(CollectorRegistry(), engine.snapshot)
    api = HttpApi(engine, metrics.render, token=TOKEN, healthy=lambda: (True, "ok"))
    return WebServer(api, "127.0.0.1", 0, **kwargs)


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, close: bool) -> bytes:
    """One GET /healthz on a raw connection; its status line."""
    connection = b"close" if close else b"keep-alive"
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: " + connection + b"\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().splitlines()
        if line.startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.splitlines()[0]


async def test_unfinished_headers_are_cut_off() -> None:
    # aiohttp itself has no header-read timeout: a client that never finishes its request
    # would hold a connection (a file descriptor the checks need) for its hour of keep-alive.
    server = _server(idle_timeout=0.3)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line, ever
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed by the server
        writer.close()
    finally:
        await server.stop()


async def test_connections_beyond_the_cap_are_refused_and_others_served_again() -> None:
    server = _server(max_connections=3)
    await server.start()
    try:
        # Three keep-alive clients, each served once: the server holds their connections.
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for reader, writer in idle:
            assert await _get(reader, writer, close=False) == b"HTTP/1.1 200 OK"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert answer.endswith(b'{"error":"too many clients"}\n')
        writer.close()
        # One client leaves (the server closes it, so it is gone before we read the EOF):
        # the next one is served.
        reader, writer = idle.pop()
        assert await _get(reader, writer, close=True) == b"HTTP/1.1 200 OK"
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        assert (await call("GET", server.url + "/healthz"))[0] == 200
        for _, w in idle:
            w.close()
    finally:
        await server.stop()


async def test_a_scrape_renders_off_the_loop() -> None:
    # Rendering grows with the fleet (~0.5 s for 1,000 servers); on the loop it would
    # stall every check for that long at each scrape.
    started, release = threading.Event(), threading.Event()
    rendering = False

    def render() -> bytes:
        nonlocal rendering
        rendering = True
        started.set()
        release.wait(5)
        rendering = False
        return b"# rendered\n"

    engine = FakeEngine()
    api = HttpApi(engine, render, token=TOKEN, healthy=lambda: (True, "ok"))
    server = WebServer(api, "127.0.0.1", 0)
    await server.start()
    try:
        scrape = asyncio.create_task(call("GET", server.url + "/metrics"))
        assert await asyncio.to_thread(started.wait, 5)
        assert (await call("GET", server.url + "/healthz"))[0] == 200
        assert rendering  # answered while the scrape was still rendering
        release.set()
        assert await scrape == (200, "# rendered\n")
    finally:
        release.set()
        await server.stop()


async def test_status_and_history_are_encoded_off_the_loop(web_api: LiveApi) -> None:
    # /status grows with the fleet (~0.1 s of CPU per 1,000 servers to encode), and
    # `failoverd move` polls it twice a second: encoded in a thread, not on the loop.
    threads: list[int] = []

    class Probe:
        def __str__(self) -> str:  # to_jsonable renders unknown values with str()
            threads.append(threading.get_ident())
            return "probe"

    snap = web_api.engine.snap
    web_api.engine.snap = replace(snap, taken_at=Probe())  # type: ignore[arg-type]
    status, body = await call("GET", web_api.url + "/status")
    assert (status, body["taken_at"]) == (200, "probe")
    details: Any = {"p": Probe()}
    web_api.engine.entries.append(HistoryEntry(1, 1.0, "web", "decision", "fine", None, details))
    status, body = await call("GET", web_api.url + "/history")
    assert (status, body[0]["details"]) == (200, {"p": "probe"})
    assert len(threads) == 2
    assert threading.get_ident() not in threads
