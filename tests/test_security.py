"""Admin authentication and secrets, against the real HTTP API on loopback."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from failoverd.metrics import Metrics
from failoverd.policy import DaemonPolicy
from failoverd.web import HttpApi, WebServer
from tests.fixtures.daemon import TOKEN, FakeEngine, LiveApi

ADMIN_ROUTES = ["/groups/web/move", "/groups/web/pause", "/groups/web/resume"]


@pytest.mark.parametrize("path", ADMIN_ROUTES)
async def test_admin_routes_need_the_token(web_api: LiveApi, path: str) -> None:
    url = web_api.url + path
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={}) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert await r.json() == {"error": "missing bearer token"}
        for header in [
            "Bearer wrong-token",
            f"Bearer {TOKEN}x",
            f"Bearer {TOKEN[:-1]}",
            f"Basic {TOKEN}",
            "Bearer",
            "Bearer ünïcödé",
            TOKEN,
        ]:
            async with s.post(url, json={}, headers={"Authorization": header}) as r:
                assert r.status == 403, header
                assert await r.json() == {"error": "invalid token"}
        # Unknown group is only revealed to an authenticated client.
        async with s.post(web_api.url + "/groups/secret-group/move", json={}) as r:
            assert r.status == 401
    assert web_api.engine.calls == []


async def test_no_token_configured_disables_the_admin_api() -> None:
    engine = FakeEngine()
    metrics = Metrics(CollectorRegistry(), engine.snapshot)
    server = WebServer(
        HttpApi(engine, metrics.render, token=None, healthy=lambda: (True, "")), "127.0.0.1", 0
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as s:
            for path in ADMIN_ROUTES:
                async with s.post(
                    server.url + path, json={}, headers={"Authorization": "Bearer x"}
                ) as r:
                    assert r.status == 403
                    body = await r.json()
                    assert body["error"].startswith("admin API disabled")
            async with s.get(server.url + "/status") as r:
                assert r.status == 200  # read-only routes stay open
    finally:
        await server.stop()
    assert engine.calls == []


async def test_token_never_echoed(web_api: LiveApi) -> None:
    async with aiohttp.ClientSession() as s:
        bodies = []
        for path in ["/status", "/metrics", "/history", "/healthz", "/nope"]:
            async with s.get(web_api.url + path) as r:
                bodies.append(await r.text())
        async with s.post(
            web_api.url + "/groups/web/move",
            json={"to": TOKEN},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 202
        async with s.post(
            web_api.url + "/groups/web/move", headers={"Authorization": f"Bearer {TOKEN}y"}
        ) as r:
            bodies.append(await r.text())
    for body in bodies:
        assert TOKEN not in body


def test_listener_defaults_to_loopback() -> None:
    assert DaemonPolicy().listen_host == "127.0.0.1"
    assert DaemonPolicy().listen == "127.0.0.1:9877"
