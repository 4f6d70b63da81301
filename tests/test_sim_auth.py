"""The simulator authenticates like OVH: /auth/time unsigned, everything else signed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import aiohttp
import ovh
import pytest
from yarl import URL

from failoverd.sim.inventory import Credentials
from failoverd.sim.server import RunningSimulator
from tests.fixtures.sim import ovh_client_for

BLOCK_PATH = "/ip/203.0.113.8%2F29"


def signed_headers(
    creds: Credentials, method: str, url: str, body: str, timestamp: int | None = None
) -> dict[str, str]:
    """The headers the ovh library would send (computed independently of it)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    payload = "+".join(
        [creds.application_secret, creds.consumer_key, method, url, body, ts]
    ).encode()
    return {
        "X-Ovh-Application": creds.application_key,
        "X-Ovh-Consumer": creds.consumer_key,
        "X-Ovh-Timestamp": ts,
        "X-Ovh-Signature": "$1$" + hashlib.sha1(payload).hexdigest(),  # noqa: S324 - OVH scheme
        "Content-Type": "application/json",
    }


async def raw(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: str = ""
) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, URL(url, encoded=True), headers=headers or {}, data=body.encode()
        ) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, dict(resp.headers)


async def test_auth_time_is_unsigned_and_close_to_now(sim: RunningSimulator) -> None:
    status, body, headers = await raw("GET", sim.base_url + "/auth/time")
    assert status == 200
    assert isinstance(body, int)
    assert abs(body - time.time()) < 5
    assert headers["X-Ovh-Queryid"]


async def test_real_ovh_client_signs_and_gets_answers(sim: RunningSimulator) -> None:
    client = ovh_client_for(sim)
    servers = await asyncio.to_thread(client.get, "/dedicated/server")
    assert "ns1001.ip-51-68-100.eu" in servers
    response = await asyncio.to_thread(client.raw_call, "GET", BLOCK_PATH)
    assert response.status_code == 200
    assert response.headers["X-Ovh-Queryid"].startswith("EU.")


async def test_unsigned_call_is_refused(sim: RunningSimulator) -> None:
    status, body, headers = await raw("GET", sim.base_url + "/dedicated/server")
    assert status == 403
    assert body["errorCode"] == "INVALID_KEY"
    assert headers["X-Ovh-Queryid"]


async def test_tampered_body_fails_the_signature(sim: RunningSimulator) -> None:
    creds = sim.state.inventory.credentials[0]
    url = sim.base_url + "/dedicated/server/ns1002.ip-51-68-100.eu/ipMove"
    signed_body = json.dumps({"ip": "198.51.100.7/32"}, separators=(",", ":"))
    sent_body = json.dumps({"ip": "203.0.113.8/29"}, separators=(",", ":"))
    headers = signed_headers(creds, "POST", url, signed_body)

    status, body, _ = await raw("POST", url, headers=headers, body=sent_body)
    assert (status, body["errorCode"]) == (400, "INVALID_SIGNATURE")
    assert sim.state.routing("203.0.113.8/29") == "ns1001.ip-51-68-100.eu"
    assert [e for e in sim.state.audit() if e["action"] == "move"] == []

    # The same request, untampered, is accepted: the check above is not refusing everything.
    status, body, _ = await raw("POST", url, headers=headers, body=signed_body)
    assert status == 200, body
    assert body["function"] == "ipMove"


async def test_tampered_path_fails_the_signature(sim: RunningSimulator) -> None:
    creds = sim.state.inventory.credentials[0]
    signed_url = sim.base_url + "/ip/198.51.100.7%2F32"
    headers = signed_headers(creds, "GET", signed_url, "")
    status, body, _ = await raw("GET", sim.base_url + BLOCK_PATH, headers=headers)
    assert (status, body["errorCode"]) == (400, "INVALID_SIGNATURE")
    status, body, _ = await raw("GET", signed_url, headers=headers)
    assert status == 200


async def test_stale_timestamp_is_refused(sim: RunningSimulator) -> None:
    creds = sim.state.inventory.credentials[0]
    url = sim.base_url + "/dedicated/server"
    old = int(time.time()) - 3600
    status, body, _ = await raw("GET", url, headers=signed_headers(creds, "GET", url, "", old))
    assert (status, body["errorCode"]) == (400, "QUERY_TIME_OUT")


async def test_unknown_application_key_is_invalid_key(sim: RunningSimulator) -> None:
    client = ovh_client_for(sim, Credentials("nope", "demo-app-secret", "demo-consumer-key"))
    with pytest.raises(ovh.exceptions.InvalidKey):
        await asyncio.to_thread(client.get, "/dedicated/server")


async def test_unknown_consumer_key_is_invalid_credential(sim: RunningSimulator) -> None:
    client = ovh_client_for(sim, Credentials("demo-app-key", "demo-app-secret", "other-ck"))
    with pytest.raises(ovh.exceptions.InvalidCredential) as info:
        await asyncio.to_thread(client.get, "/dedicated/server")
    assert info.value.query_id


async def test_wrong_secret_is_invalid_signature(sim: RunningSimulator) -> None:
    client = ovh_client_for(sim, Credentials("demo-app-key", "wrong-secret", "demo-consumer-key"))
    with pytest.raises(ovh.exceptions.BadParametersError, match="Invalid signature"):
        await asyncio.to_thread(client.get, "/dedicated/server")


async def test_every_answer_has_a_query_id(sim: RunningSimulator) -> None:
    for path in ("/1.0/auth/time", "/1.0/nowhere", "/_sim/state", "/elsewhere"):
        _, _, headers = await raw("GET", sim.root_url + path)
        assert headers.get("X-Ovh-Queryid"), path
