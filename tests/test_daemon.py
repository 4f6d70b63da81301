"""End to end: `failoverd run` as a subprocess against the simulator and loopback servers.

The simulator and the "servers" run in the test's event loop, so every blocking wait on
the daemon (its log lines, its notify socket, HTTP calls) runs in a thread.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import (
    BLOCK,
    PRIMARY,
    SIM_ENV,
    STANDBY,
    TOKEN,
    Daemon,
    NotifySocket,
    World,
    free_port,
    get_json,
    http,
    in_thread,
    make_world,
    wait_routed,
)
from tests.fixtures.sim import ManualClock

pytestmark = pytest.mark.slow


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_ready_watchdog_status_and_clean_stop(
    world: World, start_daemon: Callable[..., Daemon], notify_socket: NotifySocket
) -> None:
    d = start_daemon(world.policy, env=SIM_ENV, notify=notify_socket, watchdog_usec=400_000)
    await in_thread(d.wait_ready)
    # Pings every 200 ms while the supervisor cycles: wait for a few, never sleep.
    assert await in_thread(
        notify_socket.wait_for, lambda ms: sum(m == "WATCHDOG=1" for m in ms) >= 3, 30.0
    ), notify_socket.messages
    assert (await in_thread(http, "GET", world.url + "/healthz"))[0] == 200
    await in_thread(d.wait_event, "decision", 30.0)
    status = await in_thread(get_json, world.url + "/status")
    assert status["groups"][0]["name"] == "web"
    assert await in_thread(
        d.wait_log, lambda r: r.get("event") == "server up" and r.get("server") == PRIMARY
    )
    _, _, body = await in_thread(http, "GET", world.url + "/metrics")
    assert metric(body.decode(), "failoverd_config_last_reload_successful") == 1.0
    promtool = shutil.which("promtool")
    if promtool is not None:  # also checked against the fake engine in test_web.py
        proc = await asyncio.create_subprocess_exec(
            promtool,
            "check",
            "metrics",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate(body)
        assert proc.returncode == 0, out.decode()
    assert await in_thread(d.stop) == 0
    assert notify_socket.messages[0].split("\n")[0] == "READY=1"
    assert notify_socket.count("STOPPING=1") == 1
    assert "Traceback" not in d.output()
    assert await in_thread(d.wait_event, "failoverd stopped")


async def test_sighup_with_a_valid_change_applies_it(
    world: World, start_daemon: Callable[..., Daemon], notify_socket: NotifySocket
) -> None:
    d = start_daemon(world.policy, env=SIM_ENV, notify=notify_socket)
    await in_thread(d.wait_ready)
    vps = "vps-1a2b3c4d.vps.ovh.net"
    world.write_policy(
        checks={PRIMARY: world.primary.url, STANDBY: world.standby.url, vps: world.standby.url},
        groups={
            "web": {"primary": PRIMARY, "standbys": [STANDBY], "blocks": [BLOCK]},
            "mail": {"primary": PRIMARY, "standbys": [vps], "blocks": ["198.51.100.7/32"]},
        },
    )
    world.token_file.write_text("rotated-admin-token-0042\n")
    d.signal(signal.SIGHUP)
    await in_thread(d.wait_event, "policy reloaded")
    status = await in_thread(get_json, world.url + "/status")
    assert [g["name"] for g in status["groups"]] == ["web", "mail"]
    # The admin token is re-read: the rotated one works, the old one no longer does.
    resume = world.url + "/groups/mail/resume"
    old = {"Authorization": f"Bearer {TOKEN}"}
    new = {"Authorization": "Bearer rotated-admin-token-0042"}
    assert (await in_thread(http, "POST", resume, b"", old))[0] == 403
    assert (await in_thread(http, "POST", resume, b"", new))[0] == 200
    # The health monitor got it too: the new server is checked and comes up.
    await in_thread(d.wait_log, lambda r: r.get("event") == "server up" and r.get("server") == vps)
    status = await in_thread(get_json, world.url + "/status")
    assert {s["name"] for s in status["servers"]} == {PRIMARY, STANDBY, vps}
    _, _, body = await in_thread(http, "GET", world.url + "/metrics")
    assert metric(body.decode(), "failoverd_config_last_reload_successful") == 1.0
    assert await in_thread(
        notify_socket.wait_for,
        lambda ms: (
            any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in ms)
            and sum(m.startswith("READY=1") for m in ms) >= 2
        ),
        10.0,
    ), notify_socket.messages
    history = await in_thread(get_json, world.url + "/history?limit=100")
    assert any(e["kind"] == "reload" for e in history)
    assert await in_thread(d.stop) == 0


async def test_sighup_with_a_broken_file_keeps_the_old_policy(
    world: World, start_daemon: Callable[..., Daemon]
) -> None:
    d = start_daemon(world.policy, env=SIM_ENV)
    await in_thread(d.wait_ready, world.url)
    world.policy.write_text(
        world.policy.read_text().replace("fall: 2", "fall: zero") + "bogus_key: 1\n"
    )
    d.signal(signal.SIGHUP)
    refused = await in_thread(
        d.wait_event, "policy reload refused; the previous policy keeps running"
    )
    assert refused["reason"] == "2 problem(s) in the new policy"
    problems = [r["reason"] for r in d.records() if r.get("event") == "policy problem"]
    assert len(problems) == 2
    assert any("bogus_key" in p for p in problems)
    assert all(p.startswith(f"{world.policy}:") for p in problems)
    _, _, body = await in_thread(http, "GET", world.url + "/metrics")
    assert metric(body.decode(), "failoverd_config_last_reload_successful") == 0.0
    assert (await in_thread(http, "GET", world.url + "/healthz"))[0] == 200
    status = await in_thread(get_json, world.url + "/status")
    assert [g["name"] for g in status["groups"]] == ["web"]
    # Still working on the old policy: the primary goes down, the block moves.
    await world.primary.stop()
    await in_thread(
        d.wait_log, lambda r: r.get("event") == "server down" and r.get("server") == PRIMARY
    )
    await wait_routed(world, BLOCK, STANDBY, d)
    assert await in_thread(d.stop) == 0


async def test_second_instance_on_the_same_state_dir_exits(
    world: World, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    first = start_daemon(world.policy, env=SIM_ENV)
    await in_thread(first.wait_ready, world.url)
    other = tmp_path / "other.yaml"
    other.write_text(world.policy.read_text().replace(f":{world.port}", f":{free_port()}"))
    second = start_daemon(other, env=SIM_ENV)
    assert await in_thread(second.wait_exit, 30.0) == 1
    expected = (
        f"failoverd: another failoverd (pid {first.proc.pid}) is running with state directory "
        f"{tmp_path / 'state'}"
    )
    assert second.stderr_lines == [expected]
    assert "Traceback" not in second.output()
    assert first.proc.poll() is None
    assert (await in_thread(http, "GET", world.url + "/healthz"))[0] == 200
    assert await in_thread(first.stop) == 0


async def test_invalid_policy_at_start_exits_78(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("daemon: {listen: nowhere}\ngroups: {web: {primary: a}}\nextra: 1\n")
    d = start_daemon(policy)
    assert await in_thread(d.wait_exit, 30.0) == 78
    assert len(d.stderr_lines) >= 3
    assert all(line.startswith(f"{policy}:") for line in d.stderr_lines)
    assert "Traceback" not in d.output()


async def test_sigterm_during_a_move_exits_cleanly_and_the_next_start_follows_it(
    tmp_path: Path, http_server_factory: Any, start_daemon: Callable[..., Daemon]
) -> None:
    # The simulator's tasks run on a clock the test steps: the move is certainly in flight
    # when SIGTERM arrives, and finishes only when the test says so.
    clock = ManualClock()
    world = await make_world(
        tmp_path, http_server_factory, clock, task_durations={"init": 1, "todo": 1, "doing": 60}
    )
    journal = tmp_path / "state" / "journal.sqlite3"
    try:
        d = start_daemon(world.policy, env=SIM_ENV)
        await in_thread(d.wait_ready, world.url)
        await in_thread(
            d.wait_log, lambda r: r.get("event") == "server up" and r.get("server") == PRIMARY
        )
        await world.primary.stop()
        submitted = await in_thread(d.wait_event, "move submitted", 30.0)
        task_id = submitted["task_id"]
        began = asyncio.get_running_loop().time()
        d.signal(signal.SIGTERM)
        assert await in_thread(d.wait_exit, 30.0) == 0
        assert asyncio.get_running_loop().time() - began < 22
        assert "Traceback" not in d.output()
        with sqlite3.connect(journal) as db:
            rows = db.execute(
                "SELECT step, task_id FROM steps WHERE block = ? ORDER BY seq", (BLOCK,)
            ).fetchall()
        assert ("submitted", task_id) in rows
        assert ("verified", task_id) not in rows  # nothing finished it: the next start will
        assert world.sim.state.routing(BLOCK) == PRIMARY

        # OVH finishes the task while failoverd is down; the next start follows the
        # journaled task to its end instead of submitting the move again.
        clock.advance(120)
        again = start_daemon(world.policy, env=SIM_ENV)
        await in_thread(again.wait_ready, world.url)
        await wait_routed(world, BLOCK, STANDBY, again)
        await in_thread(again.wait_log, lambda r: r.get("event") == "journal replay", 30.0)
        moves = [a for a in world.sim.state.audit() if a.get("action") == "move"]
        assert len(moves) == 1, moves
        with sqlite3.connect(journal) as db:
            db.execute("PRAGMA busy_timeout=5000")
            steps = db.execute(
                "SELECT step, task_id FROM steps WHERE block = ?", (BLOCK,)
            ).fetchall()
        assert [s for s in steps if s[0] == "submitted"] == [("submitted", task_id)]
        assert await in_thread(again.stop) == 0
    finally:
        await world.sim.close()


async def test_runs_degraded_without_credentials(
    world: World, start_daemon: Callable[..., Daemon]
) -> None:
    d = start_daemon(world.policy, env={})
    await in_thread(d.wait_ready, world.url)
    line = await in_thread(
        d.wait_log, lambda r: str(r.get("event", "")).startswith("no usable OVH credentials")
    )
    assert line["level"] == "error"
    assert "OVH_APPLICATION_KEY" in line["reason"] or "ovh.conf" in line["reason"]
    status = await in_thread(get_json, world.url + "/status")
    assert {s["name"] for s in status["servers"]} == {PRIMARY, STANDBY}
    assert (await in_thread(http, "GET", world.url + "/healthz"))[0] == 200
    assert await in_thread(d.stop) == 0
    assert "Traceback" not in d.output()


async def test_fuzzing_the_real_daemon(world: World, start_daemon: Callable[..., Daemon]) -> None:
    from tests.test_web_fuzz import fuzz

    d = start_daemon(world.policy, env=SIM_ENV)
    await in_thread(d.wait_ready, world.url)
    statuses = await fuzz(world.url, 1500, seed=7)
    assert sum(statuses.values()) > 1200
    assert (await in_thread(http, "GET", world.url + "/healthz"))[0] == 200
    status = await in_thread(get_json, world.url + "/status")
    assert [g["name"] for g in status["groups"]] == ["web"]
    assert d.proc.poll() is None
    assert await in_thread(d.stop) == 0
    # Client garbage is not an error of the daemon: no error lines, no tracebacks from the
    # HTTP layer. (The engine may log a real forced move the fuzz asked for; not garbage.)
    http_layers = ("aiohttp.server", "aiohttp.web", "failoverd.web", "failoverd.app", "asyncio")
    errors = [
        r
        for r in d.records()
        if r.get("logger") in http_layers and (r.get("level") == "error" or "exception" in r)
    ]
    assert errors == []
    assert not [r for r in d.records() if r.get("event", "").startswith("bug:")]
    assert "Traceback" not in "\n".join(d.stderr_lines)


async def test_listen_address_in_use_exits_1(
    world: World, start_daemon: Callable[..., Daemon]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", world.port))
        taken.listen()
        d = start_daemon(world.policy, env=SIM_ENV)
        assert await in_thread(d.wait_exit, 30.0) == 1
    assert d.stderr_lines == [
        f"failoverd: cannot listen on 127.0.0.1:{world.port}: Address already in use"
    ]
    assert "Traceback" not in d.output()
    # The lock was released on the way out: the next start works.
    again = start_daemon(world.policy, env=SIM_ENV)
    await in_thread(again.wait_ready, world.url)
    assert await in_thread(again.stop) == 0


async def test_keeps_running_when_the_api_is_unreachable(
    world: World, start_daemon: Callable[..., Daemon]
) -> None:
    world.write_policy(endpoint=f"http://127.0.0.1:{free_port()}/1.0")
    d = start_daemon(world.policy, env=SIM_ENV)
    await in_thread(d.wait_ready, world.url)
    failed = await in_thread(d.wait_event, "routing read failed")
    assert failed["level"] == "warning"
    assert failed["block"] == BLOCK
    await in_thread(
        d.wait_log, lambda r: r.get("event") == "server up" and r.get("server") == PRIMARY
    )
    status = await in_thread(get_json, world.url + "/status")
    assert status["groups"][0]["holder"] is None  # unknown, not guessed
    assert (await in_thread(http, "GET", world.url + "/healthz"))[0] == 200
    assert await in_thread(d.stop) == 0
    assert "Traceback" not in d.output()
