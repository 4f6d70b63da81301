"""Nothing a client sends breaks the simulator: every answer is OVH-shaped, never a crash."""

from __future__ import annotations

import json
import random
from urllib.parse import unquote

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
IPS = ["203.0.113.8%2F29", "198.51.100.7", "198.51.100.7%2F32", "203.0.113.9", "999.1.1.1"]
NAMES = ["ns1001.ip-51-68-100.eu", "ns1002.ip-51-68-100.eu", "vps-1a2b3c4d.vps.ovh.net", "x"]
IDS = ["4200001", "4200002", "0", "-1", "abc"]
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
                for name, pool in (("{ip}", IPS), ("{sn}", NAMES), ("{id}", IDS)):
                    # mostly plausible values, sometimes anything
                    path = path.replace(name, rng.choice(pool if rng.random() < 0.8 else SEGMENTS))
            else:  # anything at all
                path = "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 5)))
            url = sim.base_url + path + rng.choice(QUERIES)
            # Mostly the route's own method, so the handlers (not only the router) are reached.
            method = "POST" if path.endswith(("/ipMove", "/park")) else "GET"
            if path.endswith("/move"):
                method = rng.choice(["GET", "POST"])
            if rng.random() < 0.15:
                method = rng.choice(["GET", "POST", "PUT", "DELETE"])
            body = rng.choice(BODIES)
            if rng.random() < 0.6 and path.endswith("/ipMove"):
                body = json.dumps({"ip": unquote(rng.choice(IPS))})
            elif rng.random() < 0.6 and path.endswith("/move"):
                body = json.dumps({"to": rng.choice(NAMES)})
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
    assert seen_statuses >= {200, 400, 404, 405}
    moves = [e for e in sim.state.audit() if e["action"] in ("move", "park")]
    assert len(moves) >= 5, "generated moves should have been accepted or refused"
