"""A few thousand malformed requests at the HTTP API: never a 5xx, never a crash.

Seeded, so a failure replays. Raw sockets for garbage that no HTTP client would send
(broken request lines, bad headers, lying Content-Length), aiohttp for well-formed
requests with hostile methods, paths, headers, bodies and content types.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re

import aiohttp

from tests.fixtures.daemon import TOKEN, LiveApi

SEED = 20261203
PATHS = [
    "/",
    "/status",
    "/metrics",
    "/healthz",
    "/history",
    "/history?limit=",
    "/history?group=%00&limit=-1",
    "/history?limit=99999999999999999999999",
    "/groups/web/move",
    "/groups/web/pause",
    "/groups/web/resume",
    "/groups//move",
    "/groups/%2e%2e/move",
    "/groups/web/move/extra",
    "/groups/" + "w" * 5000 + "/move",
    "/groups/\u00e9t\u00e9/pause",
    "/../../etc/passwd",
    "/status?" + "a=1&" * 500,
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    "application/json;;; =",
]


def random_body(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return b""
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 2:
        return json.dumps(rng.choice([[], 1, "x", None, True, 1.5e308])).encode()
    if kind == 3:
        value = rng.choice(
            [None, True, 0, -1, 1e400 if rng.random() < 0.1 else 3, "10m", "", [], {}]
        )
        key = rng.choice(["to", "force", "dry_run", "for", "reason", "x", "", "\u0000"])
        return json.dumps({key: value}, default=str).encode()
    if kind == 4:
        return b'{"to": "' + b"a" * rng.choice([10, 70_000, 200_000]) + b'"}'
    if kind == 5:
        return b"[" * rng.randrange(1, 50_000)
    if kind == 6:
        return (
            b'{"for": "' + rng.choice([b"1e999s", b"-3m", b"NaN", b"99999999999h", b"5x"]) + b'"}'
        )
    if kind == 7:
        return '{"reason": "\ud800"}'.encode("utf-8", "surrogatepass")
    return b'{"force": true, "dry_run": true}'


def random_headers(rng: random.Random) -> dict[str, str]:
    headers: dict[str, str] = {}
    auth = rng.randrange(5)
    if auth == 1:
        headers["Authorization"] = f"Bearer {TOKEN}"
    elif auth == 2:
        headers["Authorization"] = "Bearer " + "x" * rng.randrange(0, 5000)
    elif auth == 3:
        headers["Authorization"] = rng.choice(
            ["Basic Zm9vOmJhcg==", "Bearer", "", "bearer  " + TOKEN]
        )
    ct = rng.choice(CONTENT_TYPES)
    if ct:
        headers["Content-Type"] = ct
    if rng.random() < 0.2:
        headers["X-Junk"] = "y" * rng.randrange(1, 4000)
    return headers


RAW = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /groups/web/move HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    b"POST /groups/web/move HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 20000 + b"\r\n\r\n",
    b"\x00\x01\x02\xff\xfe\r\n\r\n",
    b"POST /groups/web/move HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\x7f\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /groups/web/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",  # short body
]


async def raw_request(host: str, port: int, payload: bytes) -> int | None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        if b"Content-Length: 10\r\n\r\n{" in payload:
            writer.write_eof()  # the client gives up mid-body
        line = await asyncio.wait_for(reader.readline(), timeout=15)
    except (ConnectionError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    m = re.match(rb"HTTP/1\.\d (\d{3})", line)
    return int(m.group(1)) if m else None


async def fuzz(url: str, count: int, seed: int = SEED) -> dict[int, int]:
    """Throw `count` random requests plus the raw garbage at `url`; statuses seen.

    Fails the calling test on any 5xx, naming the request that caused it.
    """
    rng = random.Random(seed)
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    statuses: dict[int, int] = {}
    bad: list[str] = []
    conn = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(i: int) -> None:
            method = rng.choice(METHODS)
            path = rng.choice(PATHS)
            body = random_body(rng)
            headers = random_headers(rng)
            try:
                async with session.request(
                    method,
                    url + path,
                    data=body,
                    headers=headers,
                    skip_auto_headers=["Content-Type"],
                ) as resp:
                    await resp.read()
                    status = resp.status
            except aiohttp.ClientError:
                return  # the server closing a hostile connection is fine
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 500:
                bad.append(f"#{i} {method} {path[:60]} {headers} {body[:80]!r} -> {status}")

        for start in range(0, count, 50):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))

    for payload in RAW * 5:
        status = await raw_request(host, port, payload)
        if status is not None:
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 500:
                bad.append(f"raw {payload[:60]!r} -> {status}")
    assert not bad, "\n".join(bad[:20])
    return statuses


async def test_fuzz_never_5xx(web_api: LiveApi) -> None:
    statuses = await fuzz(web_api.url, 3000)
    assert sum(statuses.values()) > 2500
    assert statuses.get(202, 0) > 0  # authenticated moves got through: the fuzz reached the engine
    # Still healthy and consistent afterwards.
    async with aiohttp.ClientSession() as session, session.get(web_api.url + "/healthz") as resp:
        assert resp.status == 200
    async with aiohttp.ClientSession() as session, session.get(web_api.url + "/status") as resp:
        assert resp.status == 200
        assert len((await resp.json())["groups"]) == 2
