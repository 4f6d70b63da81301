"""Counters exist at zero from the start, so `increase()` sees a group's first failover."""

from pathlib import Path

from prometheus_client import CollectorRegistry

from failoverd.config import load_policy
from failoverd.metrics import Metrics

EXAMPLE = Path(__file__).parent.parent / "config" / "failoverd.example.yaml"


def test_declare_creates_every_counter_series_at_zero() -> None:
    policy = load_policy(EXAMPLE)
    metrics = Metrics(CollectorRegistry())
    metrics.declare(policy)
    reg = metrics.registry
    for group in policy.groups:
        labels = {"group": group, "trigger": "auto", "result": "success"}
        assert reg.get_sample_value("failoverd_failovers_total", labels) == 0.0
        labels = {"group": group, "reason": "veto"}
        assert reg.get_sample_value("failoverd_failovers_blocked_total", labels) == 0.0
    for server in policy.servers:
        labels = {"server": server, "result": "fail"}
        assert reg.get_sample_value("failoverd_checks_total", labels) == 0.0

    metrics.failover_done(next(iter(policy.groups)), "auto", "success")
    metrics.declare(policy)  # a reload must not reset what was counted
    group = next(iter(policy.groups))
    labels = {"group": group, "trigger": "auto", "result": "success"}
    assert reg.get_sample_value("failoverd_failovers_total", labels) == 1.0


def test_exposition_has_no_created_samples() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.failover_done("web", "auto", "success")
    metrics.check_done("ns1", "tcp", True, 0.01)
    text = metrics.render().decode()
    assert "failoverd_failovers_total" in text
    assert "_created" not in text
