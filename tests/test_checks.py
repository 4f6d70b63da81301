"""Probes against real loopback listeners: every kind, every reason."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from failoverd.checks import Prober, format_seconds
from failoverd.icmp import IcmpUnavailable, checksum, open_icmp_socket
from failoverd.policy import CheckTiming, ExecCheck, HttpCheck, IcmpCheck, TcpCheck
from tests.fixtures.servers import SwitchableHttpServer

FAST = CheckTiming(interval=1.0, timeout=0.3, fall=1, rise=1)


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    p = Prober()
    yield p
    await p.close()


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (1, 1.0, 0.5, 0.25, 2.0, 0.001)] == [
        "1.0",
        "1.0",
        "0.5",
        "0.25",
        "2.0",
        "0.001",
    ]


# --------------------------------------------------------------------------- tcp


async def test_tcp_refused(prober: Prober, refused_port: int) -> None:
    r = await prober.probe(TcpCheck("127.0.0.1", refused_port, FAST))
    assert (r.ok, r.reason, r.kind) == (False, "connection refused", "tcp")


async def test_tcp_accepting(prober: Prober, hanging_tcp: int) -> None:
    r = await prober.probe(TcpCheck("127.0.0.1", hanging_tcp, FAST))
    assert (r.ok, r.reason) == (True, "ok")
    assert 0 <= r.duration < 0.3


async def test_tcp_by_name(prober: Prober, hanging_tcp: int) -> None:
    r = await prober.probe(TcpCheck("localhost", hanging_tcp, FAST))
    assert (r.ok, r.reason) == (True, "ok")


async def test_tcp_timeout(prober: Prober, blackhole_tcp: int) -> None:
    timing = CheckTiming(interval=1.0, timeout=0.2)
    r = await prober.probe(TcpCheck("127.0.0.1", blackhole_tcp, timing))
    assert (r.ok, r.reason) == (False, "timeout after 0.2s")
    assert 0.2 <= r.duration < 0.5


async def test_tcp_unresolvable(prober: Prober) -> None:
    r = await prober.probe(TcpCheck("no-such-host.invalid", 80, FAST))
    assert not r.ok
    assert r.reason in ("cannot resolve no-such-host.invalid", "timeout after 0.3s")


# --------------------------------------------------------------------------- http


async def test_http_ok_and_status(prober: Prober, http_server: SwitchableHttpServer) -> None:
    check = HttpCheck(http_server.url, timing=FAST)
    r = await prober.probe(check)
    assert (r.ok, r.reason, r.kind) == (True, "ok", "http")
    http_server.answer(503)
    r = await prober.probe(check)
    assert (r.ok, r.reason) == (False, "status 503")
    http_server.answer(204)
    assert (await prober.probe(check)).ok  # any 2xx by default
    http_server.answer(301)
    assert (await prober.probe(check)).reason == "status 301"  # redirects are not followed


async def test_http_expect_status(prober: Prober, http_server: SwitchableHttpServer) -> None:
    http_server.answer(503)
    assert (await prober.probe(HttpCheck(http_server.url, expect_status=(503,), timing=FAST))).ok
    http_server.answer(200)
    r = await prober.probe(HttpCheck(http_server.url, expect_status=(503, 418), timing=FAST))
    assert (r.ok, r.reason) == (False, "status 200")


async def test_http_body(prober: Prober, http_server: SwitchableHttpServer) -> None:
    check = HttpCheck(http_server.url, expect_body=r"^healthy \d+$", timing=FAST)
    http_server.answer(200, "healthy 42")
    assert (await prober.probe(check)).ok
    http_server.answer(200, "wrong body")
    r = await prober.probe(check)
    assert (r.ok, r.reason) == (False, "body did not match")


async def test_http_method_and_headers(prober: Prober, http_server: SwitchableHttpServer) -> None:
    check = HttpCheck(
        http_server.url + "healthz",
        method="POST",
        headers=(("Host", "app.example"), ("X-Check", "1")),
        timing=FAST,
    )
    assert (await prober.probe(check)).ok
    seen = http_server.requests[-1]
    assert (seen.method, seen.path) == ("POST", "/healthz")
    assert seen.headers["Host"] == "app.example"
    assert seen.headers["X-Check"] == "1"
    assert seen.headers["User-Agent"].startswith("failoverd/")


async def test_http_slow_times_out(prober: Prober, http_server: SwitchableHttpServer) -> None:
    http_server.hang()
    r = await prober.probe(HttpCheck(http_server.url, timing=FAST))
    assert (r.ok, r.reason) == (False, "timeout after 0.3s")
    assert 0.3 <= r.duration < 0.6
    http_server.answer(200)


async def test_http_hanging_socket(prober: Prober, hanging_tcp: int) -> None:
    r = await prober.probe(HttpCheck(f"http://127.0.0.1:{hanging_tcp}/", timing=FAST))
    assert (r.ok, r.reason) == (False, "timeout after 0.3s")


async def test_http_stop_and_restart_same_port(
    prober: Prober, http_server: SwitchableHttpServer
) -> None:
    check = HttpCheck(http_server.url, timing=FAST)
    port = http_server.port
    await http_server.stop()
    r = await prober.probe(check)
    assert (r.ok, r.reason) == (False, "connection refused")
    await http_server.start()
    assert http_server.port == port
    assert (await prober.probe(check)).ok


async def test_tls_verification(prober: Prober, tls_server: SwitchableHttpServer) -> None:
    assert tls_server.url.startswith("https://")
    r = await prober.probe(HttpCheck(tls_server.url, timing=FAST))
    assert not r.ok
    assert r.reason.startswith("certificate verify failed"), r.reason
    r = await prober.probe(HttpCheck(tls_server.url, tls_verify=False, timing=FAST))
    assert (r.ok, r.reason) == (True, "ok")


async def test_http_connections_do_not_pile_up(
    prober: Prober, http_server: SwitchableHttpServer
) -> None:
    check = HttpCheck(http_server.url, timing=FAST)
    before = _open_fds()
    for _ in range(20):
        assert (await prober.probe(check)).ok
    # The session itself may hold a few fds (resolver, selector); probes must not add one each.
    assert _open_fds() - before < 5


# --------------------------------------------------------------------------- exec


async def test_exec_pass_and_exit_code(prober: Prober) -> None:
    r = await prober.probe(ExecCheck(("true",), FAST))
    assert (r.ok, r.reason, r.kind) == (True, "ok", "exec")
    r = await prober.probe(ExecCheck(("sh", "-c", "exit 2"), FAST))
    assert (r.ok, r.reason) == (False, "exit 2")
    r = await prober.probe(ExecCheck(("sh", "-c", "echo 'disk full' >&2; exit 1"), FAST))
    assert (r.ok, r.reason) == (False, "exit 1: disk full")


async def test_exec_not_found(prober: Prober, tmp_path: Path) -> None:
    r = await prober.probe(ExecCheck((str(tmp_path / "nope"),), FAST))
    assert (r.ok, r.reason) == (False, f"command not found: {tmp_path / 'nope'}")


async def test_exec_no_shell(prober: Prober, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    r = await prober.probe(ExecCheck(("echo", f"; touch {marker}"), FAST))
    assert r.ok
    assert not marker.exists()


async def test_exec_hang_is_killed_with_group_and_reaped(prober: Prober, tmp_path: Path) -> None:
    pidfile, childfile = tmp_path / "pid", tmp_path / "child"
    script = f"echo $$ > {pidfile}; sleep 60 & echo $! > {childfile}; wait"
    r = await prober.probe(ExecCheck(("sh", "-c", script), FAST))
    assert (r.ok, r.reason) == (False, "timeout after 0.3s")
    assert r.duration < 1.0
    pid = int(pidfile.read_text())
    # Reaped: a zombie would still answer kill(pid, 0).
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # The grandchild in the same process group was killed too (gone, or a zombie of init).
    child = int(childfile.read_text())
    assert _state(child) in (None, "Z")
    assert prober._children == set()


async def test_exec_output_is_bounded(prober: Prober) -> None:
    code = "import sys; sys.stdout.write('x' * 2_000_000); sys.stdout.flush(); sys.exit(3)"
    r = await prober.probe(ExecCheck((sys.executable, "-c", code), CheckTiming(timeout=5.0)))
    assert not r.ok
    assert r.reason.startswith("exit 3: xxx")
    assert len(r.reason) <= 120


async def test_prober_close_kills_running_children(tmp_path: Path) -> None:
    prober = Prober()
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    check = ExecCheck(("sh", "-c", f"echo $$ > {fifo}; exec sleep 60"), CheckTiming(timeout=30))
    task = asyncio.create_task(prober.probe(check))
    # Opening a FIFO for reading blocks until the child opens it for writing: no polling.
    pid = int(await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 10))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await prober.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --------------------------------------------------------------------------- icmp


def _icmp_available() -> str | None:
    try:
        sock, _raw = open_icmp_socket(socket.AF_INET)
    except IcmpUnavailable as exc:
        return exc.reason
    sock.close()
    return None


async def test_icmp_loopback(prober: Prober) -> None:
    why = _icmp_available()
    if why is not None:
        pytest.skip(f"kernel refuses ICMP sockets here: {why}")
    r = await prober.probe(IcmpCheck("127.0.0.1", FAST))
    assert (r.ok, r.reason, r.kind) == (True, "ok", "icmp")
    # Many at once: replies are matched to their own request.
    results = await asyncio.gather(*(prober.probe(IcmpCheck("127.0.0.1", FAST)) for _ in range(50)))
    assert all(x.ok for x in results)


def test_icmp_checksum() -> None:
    # RFC 1071 example bytes
    data = bytes([0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7])
    assert checksum(data) == 0x220D
    assert checksum(data + checksum(data).to_bytes(2, "big")) == 0


# --------------------------------------------------------------------------- helpers


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
