"""The daemon's main loop in-process: root task supervision, watchdog only while healthy."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from failoverd import app
from failoverd.app import Daemon, UnavailableApi, read_admin_token
from failoverd.config import load_policy
from failoverd.errors import OvhAuthError
from failoverd.logs import configure_logging, reset_logging
from failoverd.metrics import Metrics
from failoverd.policy import ApiPolicy, DaemonPolicy, GuardsPolicy, Policy
from failoverd.sdnotify import Notifier


class StubSupervisor:
    def __init__(self, last_tick: float) -> None:
        self.last_tick = last_tick


class CountingDaemon(Daemon):
    """Signals every main loop iteration (each one asks health() before pinging)."""

    iterations = 0
    tick: asyncio.Condition | None = None

    def health(self) -> tuple[bool, str]:
        result = super().health()
        self.iterations += 1
        if self.tick is not None:
            asyncio.get_running_loop().create_task(self._notify())
        return result

    async def _notify(self) -> None:
        assert self.tick is not None
        async with self.tick:
            self.tick.notify_all()

    async def ticks(self, n: int) -> None:
        assert self.tick is not None
        target = self.iterations + n
        async with self.tick:
            await asyncio.wait_for(self.tick.wait_for(lambda: self.iterations >= target), 10)


def make_daemon(notifier: Notifier | None = None) -> CountingDaemon:
    policy = Policy(ApiPolicy(), DaemonPolicy(), GuardsPolicy(), {}, {})
    return CountingDaemon(Path("/nonexistent.yaml"), policy, notifier or Notifier(None), environ={})


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    yield stream
    reset_logging()


async def test_a_dead_root_task_stops_the_daemon_with_one_clear_line(
    log_lines: io.StringIO,
) -> None:
    daemon = make_daemon()
    daemon._main_tick = daemon._started_at = asyncio.get_running_loop().time()

    async def engine() -> None:
        raise RuntimeError("journal table vanished")

    task = asyncio.create_task(engine(), name="supervisor")
    task.add_done_callback(lambda _: daemon._wake.set())
    assert await daemon._main_loop(task) == 1
    (line,) = [json.loads(x) for x in log_lines.getvalue().splitlines()]
    assert line["level"] == "error"
    assert (
        line["event"] == "root task supervisor died: RuntimeError: journal table vanished; exiting"
    )
    assert "journal table vanished" in line["exception"]


async def test_a_root_task_that_returns_is_also_fatal(log_lines: io.StringIO) -> None:
    daemon = make_daemon()

    async def engine() -> None:
        return None

    task = asyncio.create_task(engine(), name="supervisor")
    task.add_done_callback(lambda _: daemon._wake.set())
    assert await daemon._main_loop(task) == 1
    assert "returned although no stop was requested" in log_lines.getvalue()


async def test_stop_request_ends_the_loop_cleanly(log_lines: io.StringIO) -> None:
    daemon = make_daemon()
    forever = asyncio.create_task(asyncio.Event().wait(), name="supervisor")
    asyncio.get_running_loop().call_soon(daemon.request_stop, "SIGTERM")
    assert await daemon._main_loop(forever) == 0
    forever.cancel()
    assert '"reason": "SIGTERM received"' in log_lines.getvalue()


async def test_watchdog_pings_only_while_the_supervisor_cycles(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = Notifier(path, watchdog_usec=40_000)  # a ping every 20 ms while healthy
    daemon = make_daemon(notifier)
    daemon._started_at = daemon._main_tick = loop.time()
    stub = StubSupervisor(last_tick=loop.time())
    daemon.supervisor = stub  # type: ignore[assignment]
    daemon.tick = asyncio.Condition()
    ticks = daemon.ticks
    forever = asyncio.create_task(asyncio.Event().wait(), name="supervisor")
    main = asyncio.create_task(daemon._main_loop(forever))

    def drain() -> list[bytes]:
        out = []
        while True:
            try:
                out.append(sock.recv(100))
            except BlockingIOError:
                return out

    try:
        for _ in range(3):
            stub.last_tick = loop.time()
            await ticks(1)
        assert drain().count(b"WATCHDOG=1") >= 2
        stub.last_tick = loop.time() - app.SUPERVISOR_STALE - 1  # the engine is wedged
        assert daemon.health()[0] is False
        await ticks(1)
        drain()
        await ticks(5)
        assert drain() == []  # systemd will restart us: exactly the point
        stub.last_tick = loop.time()
        await ticks(2)
        assert b"WATCHDOG=1" in drain()
    finally:
        daemon.request_stop()
        assert await main == 0
        forever.cancel()
        sock.close()


async def test_health_reasons() -> None:
    daemon = make_daemon()
    now = asyncio.get_running_loop().time()
    daemon._started_at = daemon._main_tick = now
    daemon.supervisor = StubSupervisor(0.0)  # type: ignore[assignment]
    assert daemon.health() == (
        True,
        "starting: the supervisor has not completed its first cycle yet",
    )
    daemon._started_at = now - app.STARTUP_GRACE - 5
    ok, reason = daemon.health()
    assert not ok
    assert reason.startswith("the supervisor has not completed a cycle in ")
    daemon._main_tick = now - app.MAIN_STALE - 5
    ok, reason = daemon.health()
    assert not ok
    assert reason.startswith("main loop has not ticked for ")


async def test_unavailable_api_fails_every_call_with_the_reason() -> None:
    api = UnavailableApi("no usable OVH credentials: set OVH_APPLICATION_KEY")
    with pytest.raises(OvhAuthError, match="no usable OVH credentials"):
        await api.service_info("ns1")
    await api.close()


def test_admin_token_sources(tmp_path: Path, log_lines: io.StringIO) -> None:
    token = tmp_path / "t"
    token.write_text("  abc-token-123\n")
    assert (
        read_admin_token(DaemonPolicy(admin_token_file=token), {"FAILOVERD_TOKEN": "env"})
        == "abc-token-123"
    )
    assert read_admin_token(DaemonPolicy(), {"FAILOVERD_TOKEN": "env-token-1"}) == "env-token-1"
    assert read_admin_token(DaemonPolicy(), {}) is None
    token.write_text("\n")
    assert read_admin_token(DaemonPolicy(admin_token_file=token), {}) is None
    assert read_admin_token(DaemonPolicy(admin_token_file=tmp_path / "missing"), {}) is None
    text = log_lines.getvalue()
    assert "admin token file is empty; admin API disabled" in text
    assert "cannot read the admin token file; admin API disabled" in text


async def test_shutdown_is_bounded_even_when_parts_hang(log_lines: io.StringIO) -> None:
    daemon = make_daemon()
    daemon.stop_budget, daemon.shutdown_grace, daemon.cancel_grace = 1.0, 0.3, 0.1
    loop = asyncio.get_running_loop()
    released = asyncio.Event()

    async def stubborn_engine(stop: asyncio.Event) -> None:
        await stop.wait()
        try:
            await asyncio.Event().wait()  # ignores the stop request...
        finally:
            released.set()  # ...but cancellation gets through

    closed: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def closes() -> None:
        closed.append("web")

    stop = asyncio.Event()
    task = asyncio.create_task(stubborn_engine(stop), name="supervisor")
    began = loop.time()
    await daemon._shutdown(
        task, stop, [("journal", closes), ("OVH client", hangs), ("HTTP API", closes)]
    )
    took = loop.time() - began
    assert released.is_set()
    assert closed == ["web", "web"]  # the hanging part did not keep the others open
    assert took < 2.5
    text = log_lines.getvalue()
    assert "supervisor did not stop in time; cancelling it" in text
    assert "closing the OVH client failed" in text


async def test_restart_only_warning_compares_with_what_runs(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    """listen/state_dir/api are read at start: a reload that changes them says so, and a
    later reload that puts them back to what actually runs does not (nor a live key)."""
    config = tmp_path / "failoverd.yaml"
    base = (
        "api: {endpoint: 'http://127.0.0.1:1/1.0', move_timeout: 5m}\n"
        f"daemon: {{listen: '127.0.0.1:9877', state_dir: '{tmp_path}'}}\n"
        "guards: {canaries: []}\n"
        "servers: {a: {check: {tcp: '127.0.0.1:1'}}, b: {check: {tcp: '127.0.0.1:2'}}}\n"
        "groups: {g: {primary: a, standbys: [b], blocks: [192.0.2.8/29]}}\n"
    )
    config.write_text(base)
    daemon = Daemon(config, load_policy(config), Notifier(None), environ={})
    daemon.metrics = Metrics(CollectorRegistry())

    def warnings() -> list[str]:
        lines = [json.loads(x) for x in log_lines.getvalue().splitlines()]
        log_lines.truncate(0)
        log_lines.seek(0)
        return [
            r["reason"] for r in lines if r["event"] == "some settings only take effect on restart"
        ]

    config.write_text(base.replace("9877", "9878").replace("5m", "6m"))
    assert await daemon.reload()
    assert warnings() == ["daemon.listen changed; restart failoverd to apply"]
    config.write_text(base.replace("5m", "6m"))  # back to the address the daemon listens on
    assert await daemon.reload()
    assert warnings() == []
    config.write_text(base.replace("127.0.0.1:1/", "127.0.0.1:2/"))
    assert await daemon.reload()
    assert warnings() == ["api.endpoint changed; restart failoverd to apply"]


async def test_start_up_heap_frozen_once_the_supervisor_cycled_and_thawed_on_exit() -> None:
    loop = asyncio.get_running_loop()
    daemon = make_daemon(Notifier(None, watchdog_usec=40_000))  # a main loop tick every 20 ms
    daemon._started_at = daemon._main_tick = loop.time()
    stub = StubSupervisor(last_tick=0.0)
    daemon.supervisor = stub  # type: ignore[assignment]
    daemon.tick = asyncio.Condition()
    forever = asyncio.create_task(asyncio.Event().wait(), name="supervisor")
    main = asyncio.create_task(daemon._main_loop(forever))
    try:
        await daemon.ticks(3)
        assert not daemon.heap_frozen  # still starting: its objects are not all there yet
        assert gc.get_freeze_count() == 0
        stub.last_tick = loop.time()
        await daemon.ticks(2)
        assert daemon.heap_frozen
        assert gc.get_freeze_count() > 0
    finally:
        daemon.request_stop()
        assert await main == 0
        forever.cancel()
    assert gc.get_freeze_count() == 0  # the process (here: the test run) is left as it was


async def test_on_loop_runs_the_function_on_the_loop_thread_from_any_thread() -> None:
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    def snapshot() -> str:
        seen.append(threading.get_ident())
        return "snapshot"

    def broken() -> str:
        raise RuntimeError("engine bug")

    get = app.on_loop(snapshot, loop)
    assert await asyncio.to_thread(get) == "snapshot"  # as a scrape in a worker thread
    assert get() == "snapshot"  # and directly on the loop
    assert seen == [threading.get_ident()] * 2
    with pytest.raises(RuntimeError, match="engine bug"):
        await asyncio.to_thread(app.on_loop(broken, loop))
