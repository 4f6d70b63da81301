"""Alert rules, their unit tests and the Grafana dashboard, checked against the real metrics.

Every metric and label an alert or a panel uses must be one that failoverd.metrics
actually exports: a renamed metric must break this test, not the on-call's pager.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from failoverd.metrics import Metrics
from failoverd.model import (
    GroupStatus,
    GroupView,
    GuardView,
    Health,
    ServerView,
    Snapshot,
)

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "config" / "prometheus"
ALERTS = PROM / "alerts.yml"
ALERTS_TEST = PROM / "alerts_test.yml"
SCRAPE = PROM / "scrape.yml"
DASHBOARD = ROOT / "config" / "grafana" / "failoverd.json"

# Labels Prometheus adds at scrape time or that histogram_quantile needs.
TARGET_LABELS = {"job", "instance", "le"}
METRIC_RE = re.compile(r"\b(failoverd_[a-z0-9_]+|up)\b")
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER_RE = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")


# ---------------------------------------------------------------------- the real exposition


def full_snapshot() -> Snapshot:
    return Snapshot(
        taken_at=1_700_000_000.0,
        groups=(
            GroupView(
                name="web",
                status=GroupStatus.FAILED_OVER,
                primary="ns1001.ip-51-68-100.eu",
                holder="ns1002.ip-51-68-100.eu",
                routing={"203.0.113.8/29": "ns1002.ip-51-68-100.eu"},
                cooldown_remaining=120.0,
                paused=False,
                pause_reason=None,
                pause_until=None,
                eligible={"ns1002.ip-51-68-100.eu": True, "ns5000.ip-142-44-200.net": False},
                reason="primary ns1001.ip-51-68-100.eu down for 3 checks",
            ),
        ),
        servers=(
            ServerView(
                name="ns1001.ip-51-68-100.eu",
                health=Health.DOWN,
                failing=True,
                since=1.0,
                last_check=2.0,
                last_reason="connection refused",
            ),
        ),
        guards=(GuardView(name="canary", active=False, reason=""),),
        dry_run=False,
    )


def exposition() -> dict[str, set[str]]:
    """Sample name → label names, from a Metrics that has seen one of every event."""
    metrics = Metrics(CollectorRegistry(), snapshot=full_snapshot)
    metrics.ovh_request("/ip/{ip}", "GET", "200", 0.05)
    metrics.check_done("ns1001.ip-51-68-100.eu", "http", False, 0.01)
    metrics.failover_done("web", "auto", "success")
    metrics.failover_blocked("web", "cooldown")
    metrics.phase("total", 12.0)
    metrics.config_reloaded(True, 1_700_000_000.0)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    names = exposition()
    names["up"] = set()  # Prometheus' own, per target
    return names


def check_expression(expr: str, exported: dict[str, set[str]], where: str) -> None:
    used = set(METRIC_RE.findall(expr))
    assert used, f"{where}: no metric in {expr!r}"
    unknown = used - exported.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exported by failoverd.metrics"
    labels = set().union(*(exported[m] for m in used)) | TARGET_LABELS
    for clause in BY_RE.findall(expr):
        for label in filter(None, (part.strip() for part in clause.split(","))):
            assert label in labels, f"{where}: label {label!r} not on {sorted(used)}"
    for label in MATCHER_RE.findall(expr):
        assert label in labels, f"{where}: matcher on {label!r}, not a label of {sorted(used)}"


def test_exposition_has_every_spec_metric(exported: dict[str, set[str]]) -> None:
    """The fixture itself is complete (SPEC §7), so the checks below mean something."""
    for name in (
        "failoverd_build_info",
        "failoverd_server_up",
        "failoverd_server_state",
        "failoverd_check_duration_seconds_bucket",
        "failoverd_checks_total",
        "failoverd_group_state",
        "failoverd_block_routed_to",
        "failoverd_failovers_total",
        "failoverd_failovers_blocked_total",
        "failoverd_failover_phase_seconds_bucket",
        "failoverd_cooldown_remaining_seconds",
        "failoverd_standby_eligible",
        "failoverd_guard_active",
        "failoverd_ovh_requests_total",
        "failoverd_ovh_request_duration_seconds_bucket",
        "failoverd_config_last_reload_successful",
        "failoverd_config_last_reload_success_timestamp_seconds",
        "failoverd_dry_run",
    ):
        assert name in exported, name


def test_checker_rejects_unknown_metrics_and_labels(exported: dict[str, set[str]]) -> None:
    with pytest.raises(AssertionError, match="not exported"):
        check_expression("failoverd_failovers{group='x'}", exported, "t")
    with pytest.raises(AssertionError, match="label 'server'"):
        check_expression("sum by (server) (failoverd_failovers_total)", exported, "t")
    with pytest.raises(AssertionError, match="matcher on 'reason'"):
        check_expression('failoverd_failovers_total{reason="x"}', exported, "t")


# ---------------------------------------------------------------------- alert rules


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip(
            "promtool not found: install prometheus (scripts/install-tools.sh does) "
            "to check and unit-test config/prometheus/alerts.yml"
        )
    return tool


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=PROM
    )


def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_promtool_test_rules() -> None:
    proc = run_promtool("test", "rules", str(ALERTS_TEST))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule that no longer fires where it should fails the unit tests."""
    promtool()
    broken = ALERTS.read_text().replace(
        "failoverd_guard_active == 1", "failoverd_guard_active == 2"
    )
    assert broken != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    proc = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "FailoverdGuardActive" in proc.stdout + proc.stderr


def test_promtool_check_scrape_config() -> None:
    proc = run_promtool("check", "config", str(SCRAPE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    silent = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts without a test where they fire"
    assert names - silent == set(), "alerts without a test where they must stay quiet"


def test_alerts_cover_the_issue() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "FailoverdFailoverHappened",
        "FailoverdFailoverFailed",
        "FailoverdGroupDegraded",
        "FailoverdStandbyNotEligible",
        "FailoverdGuardActive",
        "FailoverdFlapping",
        "FailoverdConfigReloadFailed",
        "FailoverdDown",
        "FailoverdAbsent",
        "FailoverdOvhApiErrors",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert "What to do" in rule["annotations"]["description"] or rule["alert"] in {
            "FailoverdDryRun"
        }, rule["alert"]


def test_alert_expressions_use_exported_metrics(exported: dict[str, set[str]]) -> None:
    for rule in alert_rules():
        check_expression(rule["expr"], exported, rule["alert"])


def test_scrape_job_matches_the_alerts() -> None:
    scrape = yaml.safe_load(SCRAPE.read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    assert set(re.findall(r'job="([^"]+)"', exprs)) <= jobs
    assert scrape["rule_files"] == [ALERTS.name]


# ---------------------------------------------------------------------- dashboard


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def test_dashboard_metrics_exist(exported: dict[str, set[str]]) -> None:
    doc = dashboard()
    exprs = 0
    for panel in walk_panels(doc["panels"]):
        for target in panel.get("targets", []):
            check_expression(target["expr"], exported, f"panel {panel['title']!r}")
            exprs += 1
    for annotation in doc["annotations"]["list"]:
        if "expr" in annotation:
            check_expression(annotation["expr"], exported, f"annotation {annotation['name']!r}")
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            check_expression(variable["definition"], exported, f"variable {variable['name']}")
    assert exprs >= 15


def test_dashboard_covers_the_brief() -> None:
    doc = dashboard()
    used = " ".join(t["expr"] for p in walk_panels(doc["panels"]) for t in p.get("targets", []))
    for metric in (
        "failoverd_group_state",
        "failoverd_block_routed_to",
        "failoverd_failovers_total",
        "failoverd_failovers_blocked_total",
        "failoverd_failover_phase_seconds_bucket",
        "failoverd_checks_total",
        "failoverd_check_duration_seconds_bucket",
        "failoverd_ovh_requests_total",
        "failoverd_guard_active",
        "failoverd_standby_eligible",
        "failoverd_config_last_reload_successful",
    ):
        assert metric in used, metric
    assert "histogram_quantile(0.5," in used
    assert "histogram_quantile(0.99," in used


def test_dashboard_is_a_portable_grafana_model() -> None:
    doc = dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in walk_panels(doc["panels"])]
    assert len(ids) == len(set(ids))
    for panel in walk_panels(doc["panels"]):
        if panel["type"] == "row":
            continue
        # Every query goes through the datasource variable: no hard-coded uid to fix on import.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
