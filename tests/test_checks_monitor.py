"""HealthMonitor on a real event loop against real loopback servers.

Intervals are tens of milliseconds so every test takes well under a second or two; the
exact rise/fall tables live in test_checks_health.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from failoverd.checks import (
    HealthMonitor,
    Prober,
    TcpJob,
    Timers,
    check_keys,
    check_phase,
    next_deadline,
)
from failoverd.metrics import Metrics
from failoverd.model import CheckResult, Health, HealthChange
from failoverd.policy import (
    ApiPolicy,
    Check,
    CheckTiming,
    DaemonPolicy,
    ExecCheck,
    GuardsPolicy,
    HttpCheck,
    IcmpCheck,
    Policy,
    ServerPolicy,
    TcpCheck,
)
from tests.fixtures.servers import SwitchableHttpServer

QUICK = CheckTiming(interval=0.05, timeout=0.04, fall=2, rise=2)


def make_policy(servers: dict[str, tuple[Check, ...]], canaries: tuple[Check, ...] = ()) -> Policy:
    return Policy(
        api=ApiPolicy(),
        daemon=DaemonPolicy(),
        guards=GuardsPolicy(canaries=canaries),
        servers={name: ServerPolicy(name, checks) for name, checks in servers.items()},
        groups={},
    )


@pytest.fixture
async def monitors() -> AsyncIterator[list[HealthMonitor]]:
    made: list[HealthMonitor] = []
    yield made
    for m in made:
        await m.stop()


async def wait_change(
    changes: AsyncIterator[HealthChange], pred: Callable[[HealthChange], bool], timeout: float = 5
) -> list[HealthChange]:
    """Every change up to and including the first that matches `pred`."""
    seen: list[HealthChange] = []
    async with asyncio.timeout(timeout):
        async for change in changes:
            seen.append(change)
            if pred(change):
                return seen
    raise AssertionError(f"stream ended without a match: {seen}")


async def test_rise_and_fall_end_to_end(
    http_server: SwitchableHttpServer, monitors: list[HealthMonitor]
) -> None:
    metrics = Metrics(CollectorRegistry())
    monitor = HealthMonitor(
        make_policy({"web1": (HttpCheck(http_server.url, timing=QUICK),)}), metrics
    )
    monitors.append(monitor)
    changes = monitor.changes()
    await monitor.start()

    def states(cs: list[HealthChange]) -> list[tuple[Health, bool]]:
        return [(c.current.health, c.current.failing) for c in cs]

    seen = await wait_change(changes, lambda c: c.current.health is Health.UP)
    assert states(seen) == [(Health.UNKNOWN, False), (Health.UP, False)]
    assert seen[0].previous is None
    assert seen[1].current.consecutive_ok == 2

    http_server.answer(503)
    seen = await wait_change(changes, lambda c: c.current.health is Health.DOWN)
    assert states(seen) == [(Health.UP, True), (Health.DOWN, True)]
    assert seen[-1].current.last_reason == "status 503"
    assert seen[-1].previous is not None
    assert seen[-1].previous.health is Health.UP

    http_server.answer(200)
    seen = await wait_change(changes, lambda c: c.current.health is Health.UP)
    assert states(seen) == [(Health.DOWN, False), (Health.UP, False)]

    now = monitor.current()["web1"]
    assert now.health is Health.UP
    assert not now.canary
    passes = metrics.registry.get_sample_value(
        "failoverd_checks_total", {"server": "web1", "result": "pass"}
    )
    fails = metrics.registry.get_sample_value(
        "failoverd_checks_total", {"server": "web1", "result": "fail"}
    )
    assert passes is not None
    assert passes >= 4
    assert fails is not None
    assert fails >= 2
    count = metrics.registry.get_sample_value(
        "failoverd_check_duration_seconds_count", {"server": "web1", "kind": "http"}
    )
    assert count == passes + fails


async def test_rounds_follow_absolute_deadlines(
    hanging_tcp: int, monitors: list[HealthMonitor]
) -> None:
    loop = asyncio.get_running_loop()
    deadlines: list[float] = []
    enough = asyncio.Event()

    def observe(server: str, result: CheckResult, lag: float) -> None:
        # The probe started `lag` after its deadline and took `result.duration`.
        deadlines.append(loop.time() - result.duration - lag)
        if len(deadlines) >= 15:
            enough.set()

    check = TcpCheck("127.0.0.1", hanging_tcp, QUICK)
    monitor = HealthMonitor(make_policy({"s": (check,)}), observer=observe)
    monitors.append(monitor)
    await monitor.start()
    await asyncio.wait_for(enough.wait(), 10)
    phase = check_phase("s", check_keys([check])[0]) * QUICK.interval
    slots = [(d - phase) / QUICK.interval for d in deadlines]
    # Every deadline sits on the check's own grid phase + k*interval, whatever the lag
    # was: drift never accumulates. Consecutive rounds are whole intervals apart (one,
    # unless a loaded machine made a round outlast its slot, which is then skipped).
    for k in slots:
        assert k == pytest.approx(round(k), abs=0.05)
    steps = [round(b) - round(a) for a, b in itertools.pairwise(slots)]
    assert all(step >= 1 for step in steps)
    assert steps.count(1) >= len(steps) // 2


async def test_first_rounds_are_spread(hanging_tcp: int, monitors: list[HealthMonitor]) -> None:
    loop = asyncio.get_running_loop()
    interval = 0.4
    timing = CheckTiming(interval=interval, timeout=0.1, fall=1, rise=1)
    first: dict[str, float] = {}
    done = asyncio.Event()
    names = [f"ns{i}" for i in range(40)]

    def observe(server: str, result: CheckResult, lag: float) -> None:
        # The deadline the round was scheduled for (the observed start minus its lag).
        first.setdefault(server, loop.time() - result.duration - lag)
        if len(first) == len(names):
            done.set()

    policy = make_policy({n: (TcpCheck("127.0.0.1", hanging_tcp, timing),) for n in names})
    monitor = HealthMonitor(policy, observer=observe)
    monitors.append(monitor)
    t0 = loop.time()
    await monitor.start()
    await asyncio.wait_for(done.wait(), 10)
    offsets = sorted(first[n] - t0 for n in names)
    assert offsets[0] >= 0
    assert offsets[-1] < interval + 0.05
    # Spread over the interval, not a herd: at most a handful land in any 40 ms slice.
    per_slice = [sum(1 for o in offsets if s * 0.04 <= o < (s + 1) * 0.04) for s in range(11)]
    assert max(per_slice) <= 12, per_slice
    assert offsets[-1] - offsets[0] > interval / 2
    # And each at its own hashed slot of the interval.
    for n in names:
        key = check_keys([policy.servers[n].checks[0]])[0]
        expected = next_deadline(t0, check_phase(n, key), interval) - t0
        assert first[n] - t0 == pytest.approx(expected, abs=0.02)


async def test_slow_check_does_not_delay_another(
    http_server: SwitchableHttpServer, hanging_tcp: int, monitors: list[HealthMonitor]
) -> None:
    loop = asyncio.get_running_loop()
    http_server.hang()
    slow_timing = CheckTiming(interval=0.2, timeout=0.15, fall=1, rise=1)
    fast: list[tuple[float, float]] = []  # (end, lag)
    slow: list[tuple[float, float, CheckResult]] = []  # (start, end, result)
    enough = asyncio.Event()

    def observe(server: str, result: CheckResult, lag: float) -> None:
        now = loop.time()
        if server == "fast":
            fast.append((now, lag))
        else:
            slow.append((now - result.duration, now, result))
        if len(slow) >= 3 and len(fast) >= 12:
            enough.set()

    policy = make_policy(
        {
            "slow": (HttpCheck(http_server.url, timing=slow_timing),),
            "fast": (TcpCheck("127.0.0.1", hanging_tcp, QUICK),),
        }
    )
    monitor = HealthMonitor(policy, observer=observe)
    monitors.append(monitor)
    await monitor.start()
    await asyncio.wait_for(enough.wait(), 10)
    assert all(r.reason == "timeout after 0.15s" for _, _, r in slow)
    # While every slow probe hung for 0.15 s, fast rounds (every 0.05 s) kept completing.
    for start, end, _ in slow:
        assert any(start < t < end for t, _ in fast), (start, end, fast)
    # Their lag is the loop's, never the hung probe's timeout.
    assert max(lag for _, lag in fast) < slow_timing.timeout
    # The slow check never overlaps itself: each round starts after the previous ended.
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(slow))
    http_server.answer(200)


async def test_reload_keeps_history(
    http_server: SwitchableHttpServer, hanging_tcp: int, monitors: list[HealthMonitor]
) -> None:
    web = HttpCheck(http_server.url, timing=QUICK)
    tcp = TcpCheck("127.0.0.1", hanging_tcp, QUICK)
    monitor = HealthMonitor(make_policy({"web1": (web,), "old": (tcp,)}))
    monitors.append(monitor)
    changes = monitor.changes()
    await monitor.start()
    await wait_change(changes, lambda c: c.server == "web1" and c.current.health is Health.UP)
    before = monitor.current()["web1"]
    task = next(iter(monitor._entries["web1"].tasks.values()))

    monitor.apply_policy(make_policy({"web1": (web,), "new": (tcp,)}))
    after = monitor.current()
    assert set(after) == {"web1", "new"}
    assert after["web1"].health is Health.UP
    assert after["web1"].since == before.since
    assert next(iter(monitor._entries["web1"].tasks.values())) is task  # not restarted
    assert after["new"].health is Health.UNKNOWN
    assert monitor.task_count() == 2
    seen = await wait_change(changes, lambda c: c.server == "new")
    assert seen[-1].previous is None

    # Changing web1's checks keeps its verdict until the new checks decide.
    extra = TcpCheck("127.0.0.1", hanging_tcp, CheckTiming(interval=5, timeout=1, rise=3))
    monitor.apply_policy(make_policy({"web1": (web, extra), "new": (tcp,)}))
    assert monitor.current()["web1"].health is Health.UP
    assert monitor.current()["web1"].since == before.since
    assert next(iter(monitor._entries["web1"].tasks.values())) is task  # unchanged check kept
    assert monitor.task_count() == 3


async def test_canaries_are_monitored(hanging_tcp: int, monitors: list[HealthMonitor]) -> None:
    canary = TcpCheck("127.0.0.1", hanging_tcp, QUICK)
    monitor = HealthMonitor(make_policy({}, canaries=(canary,)))
    monitors.append(monitor)
    changes = monitor.changes()
    await monitor.start()
    name = f"canary:127.0.0.1:{hanging_tcp}"
    seen = await wait_change(changes, lambda c: c.current.health is Health.UP)
    assert seen[-1].server == name
    assert monitor.current()[name].canary


async def test_stop_leaves_nothing_behind(
    http_server: SwitchableHttpServer, hanging_tcp: int, tmp_path: Path
) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    hang = CheckTiming(interval=1.0, timeout=0.9)
    policy = make_policy(
        {
            "web": (HttpCheck(http_server.url, timing=QUICK),),
            "tcp": (TcpCheck("127.0.0.1", hanging_tcp, QUICK),),
            "icmp": (IcmpCheck("127.0.0.1", QUICK),),
            "exec": (ExecCheck(("sh", "-c", f"echo $$ > {fifo}; exec sleep 60"), hang),),
        }
    )
    fds_before = len(os.listdir("/proc/self/fd"))
    tasks_before = asyncio.all_tasks()
    monitor = HealthMonitor(policy)
    changes = monitor.changes()
    await monitor.start()
    # The exec check is running (blocking FIFO open: no polling), the others have results.
    pid = int(await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 5))
    await wait_change(changes, lambda c: c.server == "web" and c.current.health is Health.UP)
    await monitor.stop()

    assert asyncio.all_tasks() == tasks_before
    assert monitor.task_count() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not a zombie
    assert len(os.listdir("/proc/self/fd")) == fds_before
    # Subscribers see the end of the stream.
    rest = [c async for c in changes]
    assert all(c.server in policy.servers for c in rest)
    assert [c async for c in monitor.changes()] == []


# --------------------------------------------------------------------------- timers


async def test_timers_wake_in_deadline_order_and_expire() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    order: list[str] = []
    now = loop.time()

    async def sleeper(name: str, at: float) -> None:
        await timers.sleep_until(at)
        order.append(name)

    expiring: asyncio.Future[None] = loop.create_future()
    timers.at(now + 0.02, expiring, expire=True)
    await asyncio.gather(
        sleeper("c", now + 0.06), sleeper("a", now + 0.01), sleeper("b", now + 0.03)
    )
    assert order == ["a", "b", "c"]
    assert loop.time() >= now + 0.06 - 0.001
    with pytest.raises(TimeoutError):
        await expiring
    timers.close()


async def test_connect_done_on_a_busy_loop_is_not_a_timeout(hanging_tcp: int) -> None:
    prober = Prober()
    check = TcpCheck("127.0.0.1", hanging_tcp, CheckTiming(interval=1, timeout=0.05))
    task = asyncio.create_task(prober.probe(check))
    await asyncio.sleep(0)  # let the probe send its SYN (one loop step, not a wait for time)
    # Block the whole loop past the deadline, the way a burst of other work would: the
    # kernel completed the connect meanwhile, so the probe must pass, not time out (the
    # loop polls I/O before it runs due timers).
    time.sleep(0.2)  # noqa: ASYNC251 - deliberately stalls the event loop
    result = await task
    assert (result.ok, result.reason) == (True, "ok")
    await prober.close()


async def test_timers_collect_finished_work_before_expiring() -> None:
    # When the deadline fires late in a long loop iteration, work that finished meanwhile
    # (connects seen by the before_expire hook) wins over the timeout.
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    done_late: asyncio.Future[None] = loop.create_future()
    really_late: asyncio.Future[None] = loop.create_future()
    timers.before_expire = lambda: done_late.set_result(None)
    now = loop.time()
    timers.at(now + 0.01, done_late, expire=True)
    timers.at(now + 0.01, really_late, expire=True)
    await done_late
    with pytest.raises(TimeoutError):
        await really_late
    timers.close()


async def test_tcp_rounds_report_every_outcome(
    refused_port: int, blackhole_tcp: int, hanging_tcp: int, monitors: list[HealthMonitor]
) -> None:
    # TCP checks to addresses run on the callback path (TcpRounds), hostnames on tasks:
    # both must report the same reasons.
    timing = CheckTiming(interval=0.3, timeout=0.1, fall=1, rise=1)
    policy = make_policy(
        {
            "refused": (TcpCheck("127.0.0.1", refused_port, timing),),
            "silent": (TcpCheck("127.0.0.1", blackhole_tcp, timing),),
            "open": (TcpCheck("127.0.0.1", hanging_tcp, timing),),
            "by-name": (TcpCheck("localhost", hanging_tcp, timing),),
        }
    )
    results: dict[str, CheckResult] = {}
    done = asyncio.Event()

    def observe(server: str, result: CheckResult, lag: float) -> None:
        results.setdefault(server, result)
        if len(results) == len(policy.servers):
            done.set()

    monitor = HealthMonitor(policy, observer=observe)
    monitors.append(monitor)
    await monitor.start()
    assert isinstance(monitor._entries["open"].tasks[(policy.servers["open"].checks[0], 0)], TcpJob)
    assert isinstance(
        monitor._entries["by-name"].tasks[(policy.servers["by-name"].checks[0], 0)], asyncio.Task
    )
    await asyncio.wait_for(done.wait(), 5)
    assert {n: (r.ok, r.reason) for n, r in results.items()} == {
        "refused": (False, "connection refused"),
        "silent": (False, "timeout after 0.1s"),
        "open": (True, "ok"),
        "by-name": (True, "ok"),
    }
    assert 0.1 <= results["silent"].duration < 0.3
    health = monitor.current()
    assert health["refused"].health is Health.DOWN
    assert health["open"].health is Health.UP

    # A reload that drops a TCP check stops its rounds; nothing is left after stop.
    monitor.apply_policy(make_policy({"open": policy.servers["open"].checks}))
    assert monitor.task_count() == 1
    assert set(monitor.current()) == {"open"}
    await monitor.stop()
    assert monitor.task_count() == 0
