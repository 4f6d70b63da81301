"""The pure parts of the checks: rise/fall hysteresis, require all|any, spreading maths.

Tables, no event loop: time is an argument.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from failoverd.checks import (
    ServerTracker,
    _Subscription,
    canary_servers,
    check_keys,
    check_phase,
    next_deadline,
)
from failoverd.model import CheckResult, Health, HealthChange, ServerHealth
from failoverd.policy import (
    ApiPolicy,
    CheckTiming,
    DaemonPolicy,
    GuardsPolicy,
    HttpCheck,
    IcmpCheck,
    Policy,
    ServerPolicy,
    TcpCheck,
)

T = CheckTiming(interval=1.0, timeout=0.5, fall=3, rise=2)
A = TcpCheck("10.0.0.1", 443, T)
B = IcmpCheck("10.0.0.1", T)

OK = CheckResult(ok=True, duration=0.01, reason="ok", kind="tcp")
FAIL = CheckResult(ok=False, duration=0.01, reason="connection refused", kind="tcp")
ICMP_FAIL = CheckResult(ok=False, duration=0.5, reason="timeout after 0.5s", kind="icmp")
ICMP_OK = CheckResult(ok=True, duration=0.01, reason="ok", kind="icmp")


def tracker(*checks: TcpCheck | IcmpCheck, require: str = "all") -> ServerTracker:
    sp = ServerPolicy("ns1", checks, require=require)  # type: ignore[arg-type]
    return ServerTracker.for_policy(sp, now=0.0)


# fall=3, rise=2: each row is (result, health after it, failing after it)
SINGLE = [
    (OK, Health.UNKNOWN, False),
    (OK, Health.UP, False),  # rise=2 reached
    (FAIL, Health.UP, True),  # failing at once, verdict not yet
    (FAIL, Health.UP, True),
    (OK, Health.UP, False),  # the run of failures is broken
    (FAIL, Health.UP, True),
    (FAIL, Health.UP, True),
    (FAIL, Health.DOWN, True),  # fall=3 consecutive
    (OK, Health.DOWN, False),
    (FAIL, Health.DOWN, True),
    (OK, Health.DOWN, False),
    (OK, Health.UP, False),  # rise=2 consecutive
]


def test_rise_fall_exact() -> None:
    t = tracker(A)
    key = t.keys[0]
    assert t.view.health is Health.UNKNOWN
    assert t.view.last_round_at is None
    for i, (result, health, failing) in enumerate(SINGLE, start=1):
        view = t.record(key, result, now=float(i))
        assert (view.health, view.failing) == (health, failing), f"round {i}"
        assert view.last_round_at == float(i)
        assert view.last_reason == result.reason


def test_counters_and_since() -> None:
    t = tracker(A)
    key = t.keys[0]
    t.record(key, OK, 1.0)
    v = t.record(key, OK, 2.0)
    assert (v.health, v.since, v.consecutive_ok, v.consecutive_fail) == (Health.UP, 2.0, 2, 0)
    v = t.record(key, FAIL, 3.0)
    assert (v.since, v.consecutive_ok, v.consecutive_fail) == (2.0, 0, 1)  # no health change
    t.record(key, FAIL, 4.0)
    v = t.record(key, FAIL, 5.0)
    assert (v.health, v.since, v.consecutive_fail) == (Health.DOWN, 5.0, 3)


def test_starts_down_without_being_up() -> None:
    t = tracker(A)
    key = t.keys[0]
    healths = [t.record(key, FAIL, float(i)).health for i in range(1, 4)]
    assert healths == [Health.UNKNOWN, Health.UNKNOWN, Health.DOWN]


def test_require_all() -> None:
    t = tracker(A, B, require="all")
    ka, kb = t.keys
    for i in range(2):
        t.record(ka, OK, i)
        v = t.record(kb, ICMP_OK, i)
    assert v.health is Health.UP
    # One check failing makes the server failing at once, and down after its fall.
    v = t.record(kb, ICMP_FAIL, 3)
    assert (v.health, v.failing, v.last_reason) == (
        Health.UP,
        True,
        "icmp 10.0.0.1: timeout after 0.5s",
    )
    v = t.record(ka, OK, 3.5)
    assert v.failing  # the latest round of B still failed
    t.record(kb, ICMP_FAIL, 4)
    v = t.record(kb, ICMP_FAIL, 5)
    assert v.health is Health.DOWN
    # Up again only when every check is up.
    t.record(kb, ICMP_OK, 6)
    v = t.record(kb, ICMP_OK, 7)
    assert (v.health, v.failing, v.last_reason) == (Health.UP, False, "ok")


def test_require_all_both_failing_reason() -> None:
    t = tracker(A, B, require="all")
    ka, kb = t.keys
    t.record(ka, FAIL, 1)
    v = t.record(kb, ICMP_FAIL, 1)
    assert v.last_reason == (
        "tcp 10.0.0.1:443: connection refused; icmp 10.0.0.1: timeout after 0.5s"
    )


def test_require_any() -> None:
    t = tracker(A, B, require="any")
    ka, kb = t.keys
    v = t.record(ka, OK, 1)
    v = t.record(ka, OK, 2)
    assert v.health is Health.UP  # one check up is enough
    v = t.record(kb, ICMP_FAIL, 3)
    assert not v.failing  # A's latest round passed
    for i in range(3):
        t.record(kb, ICMP_FAIL, 4 + i)
        v = t.record(ka, FAIL, 4 + i)
    assert (v.health, v.failing) == (Health.DOWN, True)  # down only when every check is down
    v = t.record(kb, ICMP_OK, 10)
    assert (v.health, v.failing) == (Health.DOWN, False)
    v = t.record(kb, ICMP_OK, 11)
    assert v.health is Health.UP


def test_any_failing_needs_every_reported_check_failed() -> None:
    t = tracker(A, B, require="any")
    ka, kb = t.keys
    assert t.record(ka, FAIL, 1).failing  # B has no result yet
    assert not t.record(kb, ICMP_OK, 1).failing


def test_changed_checks_keep_verdict_and_unchanged_hysteresis() -> None:
    old = tracker(A)
    ka = old.keys[0]
    for i in range(5):
        old.record(ka, FAIL, float(i))
    assert old.view.health is Health.DOWN
    new = ServerTracker(
        "ns1", "all", check_keys((A, B)), 10.0, previous=old.view, tracks=dict(old.tracks)
    )
    assert new.view.health is Health.DOWN  # the new check is unknown: verdict carried
    assert new.view.since == old.view.since
    assert new.tracks[ka] is old.tracks[ka]
    # B comes up, but A is still down → still down (all).
    kb = new.keys[1]
    new.record(kb, ICMP_OK, 11)
    assert new.record(kb, ICMP_OK, 12).health is Health.DOWN


def test_duplicate_checks_get_distinct_keys() -> None:
    assert check_keys((A, A, B)) == [(A, 0), (A, 1), (B, 0)]


# --------------------------------------------------------------------------- spreading


@pytest.mark.parametrize("interval", [0.5, 1.0, 2.0, 30.0])
@pytest.mark.parametrize("now", [0.0, 0.3, 12345.678])
def test_next_deadline_is_next_slot_of_the_phase(interval: float, now: float) -> None:
    for phase in (0.0, 0.1, 0.5, 0.999):
        d = next_deadline(now, phase, interval)
        assert now <= d < now + interval + 1e-9
        k = (d - phase * interval) / interval
        assert math.isclose(k, round(k), abs_tol=1e-6)


def test_phases_are_stable_and_spread() -> None:
    names = [f"ns{i}.ip-51-68-100.eu" for i in range(5000)]
    phases = [check_phase(n, (A, 0)) for n in names]
    assert phases == [check_phase(n, (A, 0)) for n in names]  # stable
    assert all(0 <= p < 1 for p in phases)
    buckets = Counter(int(p * 20) for p in phases)
    # 20 buckets of 250 expected each: no slice of the interval carries a herd.
    assert len(buckets) == 20
    assert max(buckets.values()) < 250 * 1.3
    assert min(buckets.values()) > 250 * 0.7
    # Checks of one server get different phases too.
    assert check_phase("ns1", (A, 0)) != check_phase("ns1", (B, 0))
    assert check_phase("ns1", (A, 0)) != check_phase("ns1", (A, 1))


def test_canary_names() -> None:
    canaries = (
        TcpCheck("192.0.2.53", 53),
        HttpCheck("https://example.net/"),
        TcpCheck("192.0.2.53", 53),
    )
    policy = Policy(ApiPolicy(), DaemonPolicy(), GuardsPolicy(canaries=canaries), {}, {})
    names = [s.name for s in canary_servers(policy)]
    assert names == [
        "canary:192.0.2.53:53",
        "canary:https://example.net/",
        "canary:tcp:192.0.2.53:53",
    ]


# --------------------------------------------------------------------------- stream


def _change(i: int) -> HealthChange:
    sh = ServerHealth(f"s{i}", Health.UP, False, 0.0, None, "ok")
    return HealthChange(f"s{i}", None, sh)


async def test_subscription_backlog_is_bounded() -> None:
    sub = _Subscription(backlog=3)
    for i in range(5):
        sub.push(_change(i))
    sub.close()
    got = [c.server async for c in sub]
    assert got == ["s2", "s3", "s4"]  # the oldest were dropped
    assert sub.dropped == 2
