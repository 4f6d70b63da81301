"""Nothing a client sends breaks the simulator: every answer is OVH-shaped, never a crash."""

from __future__ import annotations

import json
import random

import aiohttp
from yarl import URL

from failoverd.sim.server import RunningSimulator
from tests.test_sim_auth import signed_headers

SEGMENTS = [
    "ip",
    "dedicated",
    "server",
    "vps",
    "task",
    "move",
    "park",
    "ipMove",
    "ipCanBeMovedTo",
    "specifications",
    "network",
    "ips",
    "auth",
    "time",
    "203.0.113.8%2F29",
    "203.0.113.8",
    "198.51.100.7",
    "203.0.113.9%2F30",
    "999.1.1.1",
    "%2F",
    "",
    "4200001",
    "-1",
    "ns1001.ip-51-68-100.eu",
    "ns1002.ip-51-68-100.eu",
    "vps-1a2b3c4d.vps.ovh.net",
    "%00",
    "..",
    "%C3%A9",
]
BODIES = [
    "",
    "{}",
    "null",
    "[]",
    "{not json",
    '"text"',
    json.dumps({"ip": "203.0.113.8/29"}),
    json.dumps({"ip": 42}),
    json.dumps({"ip": "x"}),
    json.dumps({"to": "ns1002.ip-51-68-100.eu"}),
    json.dumps({"to": None}),
    json.dumps({"to": ["a"]}),
    json.dumps({"ip": "198.51.100.7", "to": "vps-1a2b3c4d.vps.ovh.net"}),
]
TEMPLATES = [
    "/auth/time",
    "/dedicated/server",
    "/dedicated/server/{sn}",
    "/dedicated/server/{sn}/specifications/network",
    "/dedicated/server/{sn}/ipCanBeMovedTo",
    "/dedicated/server/{sn}/ipMove",
    "/dedicated/server/{sn}/task",
    "/dedicated/server/{sn}/task/{id}",
    "/ip",
    "/ip/{ip}",
    "/ip/{ip}/move",
    "/ip/{ip}/park",
    "/ip/{ip}/task",
    "/ip/{ip}/task/{id}",
    "/vps",
    "/vps/{sn}",
    "/vps/{sn}/ips",
]
QUERIES = ["", "?ip=203.0.113.8%2F29", "?ip=", "?status=done&function=ipMove", "?ip=1&ip=2"]


async def test_random_signed_requests_get_ovh_shaped_answers(sim: RunningSimulator) -> None:
    rng = random.Random(20261203)  # fixed: a failure is reproducible
    creds = sim.state.inventory.credentials[0]
    seen_statuses: set[int] = set()
    async with aiohttp.ClientSession() as session:
        for _ in range(250):
            if rng.random() < 0.7:  # a real route with random parameters
                path = rng.choice(TEMPLATES)
                for name in ("{ip}", "{sn}", "{id}"):
                    path = path.replace(name, rng.choice(SEGMENTS))
            else:  # anything at all
                path = "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 5)))
            url = sim.base_url + path + rng.choice(QUERIES)
            method = rng.choice(["GET", "POST", "PUT", "DELETE"])
            if path.endswith(("/ipMove", "/move", "/park")) and rng.random() < 0.7:
                method = "POST"  # reach the move handlers often, not once in a while
            body = rng.choice(BODIES)
            headers = signed_headers(creds, method, url, body)
            async with session.request(
                method, URL(url, encoded=True), headers=headers, data=body.encode()
            ) as resp:
                text = await resp.text()
                assert resp.headers["X-Ovh-Queryid"], url
                assert resp.status in (200, 400, 404, 405), (method, url, body, text)
                answer = json.loads(text)
                if resp.status != 200:
                    assert answer["message"], (method, url, body, text)
                    assert "simulator bug" not in answer["message"]
                seen_statuses.add(resp.status)
    # The generator reached the handlers, not just the router.
    assert seen_statuses >= {200, 400, 404}
    assert len(sim.state.audit()) >= 5, "generated moves should have been accepted or refused"
