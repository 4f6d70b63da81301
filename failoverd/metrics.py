"""Prometheus metrics (SPEC §7).

Events (requests, checks, failovers, phases) are counted as they happen through the
Recorder methods; every gauge that describes *state* is computed from the supervisor's
Snapshot at scrape time by a custom collector, so it can never disagree with ``/status``.
Each daemon (and each test) owns its own ``CollectorRegistry``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from failoverd import __version__
from failoverd.model import GroupStatus, Health, Phase, Snapshot
from failoverd.policy import Policy

CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PHASE_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
GUARDS = ("mass_failure", "canary", "max_failovers")
TRIGGERS = ("auto", "manual", "failback")
RESULTS = ("success", "partial", "failed")
BLOCKED_REASONS = ("cooldown", "guard", "paused", "no_eligible_target", "veto")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `_created` samples double every counter and histogram in the exposition (and its render
# time) for a value no dashboard or alert of ours reads. Process-wide by the library's design.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library


class Metrics:
    """The Recorder for a daemon, plus the snapshot-backed gauges."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        snapshot: Callable[[], Snapshot | None] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        build = Gauge("failoverd_build_info", "failoverd build", ["version"], registry=r)
        build.labels(version=__version__).set(1)
        self._check_duration = Histogram(
            "failoverd_check_duration_seconds",
            "Duration of one health check probe",
            ["server", "kind"],
            buckets=CHECK_BUCKETS,
            registry=r,
        )
        self._checks = Counter(
            "failoverd_checks", "Health check probes", ["server", "result"], registry=r
        )
        self._check_children: dict[tuple[str, str], tuple[Histogram, Counter, Counter]] = {}
        self._failovers = Counter(
            "failoverd_failovers", "Failovers finished", ["group", "trigger", "result"], registry=r
        )
        self._blocked = Counter(
            "failoverd_failovers_blocked",
            "Failovers wanted but not started",
            ["group", "reason"],
            registry=r,
        )
        self._phase = Histogram(
            "failoverd_failover_phase_seconds",
            "Duration of each failover phase",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self._requests = Counter(
            "failoverd_ovh_requests", "OVH API requests", ["route", "method", "code"], registry=r
        )
        self._request_duration = Histogram(
            "failoverd_ovh_request_duration_seconds",
            "OVH API request duration",
            ["route", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self._reload_ok = Gauge(
            "failoverd_config_last_reload_successful",
            "Whether the last policy (re)load succeeded",
            registry=r,
        )
        self._reload_ts = Gauge(
            "failoverd_config_last_reload_success_timestamp_seconds",
            "Time of the last successful policy (re)load",
            registry=r,
        )
        self._snapshot_collector = SnapshotCollector(snapshot or (lambda: None))
        r.register(self._snapshot_collector)

    def bind_snapshot(self, snapshot: Callable[[], Snapshot | None]) -> None:
        """Point the state gauges at the supervisor once it exists."""
        self._snapshot_collector.source = snapshot

    def declare(self, policy: Policy) -> None:
        """Create every counter series of the policy's groups and servers at zero.

        A counter that first appears at 1 is invisible to ``increase()``: the first failover
        of a group would never alert. Idempotent; called on start and on every reload.
        """
        for group in policy.groups:
            for trigger in TRIGGERS:
                for result in RESULTS:
                    self._failovers.labels(group=group, trigger=trigger, result=result)
            for reason in BLOCKED_REASONS:
                self._blocked.labels(group=group, reason=reason)
        for server in policy.servers:
            for result in ("pass", "fail"):
                self._checks.labels(server=server, result=result)

    # Recorder ----------------------------------------------------------------------

    def ovh_request(self, route: str, method: str, code: str, duration: float) -> None:
        self._requests.labels(route=route, method=method, code=code).inc()
        self._request_duration.labels(route=route, method=method).observe(duration)

    def check_done(self, server: str, kind: str, ok: bool, duration: float) -> None:
        # The hottest Recorder call (every probe of every server): the label children are
        # looked up once per (server, kind) rather than twice per probe.
        children = self._check_children.get((server, kind))
        if children is None:
            children = (
                self._check_duration.labels(server=server, kind=kind),
                self._checks.labels(server=server, result="pass"),
                self._checks.labels(server=server, result="fail"),
            )
            self._check_children[(server, kind)] = children
        hist, passed, failed = children
        hist.observe(duration)
        (passed if ok else failed).inc()

    def failover_done(self, group: str, trigger: str, result: str) -> None:
        self._failovers.labels(group=group, trigger=trigger, result=result).inc()

    def failover_blocked(self, group: str, reason: str) -> None:
        self._blocked.labels(group=group, reason=reason).inc()

    def phase(self, phase: Phase, seconds: float) -> None:
        self._phase.labels(phase=phase).observe(seconds)

    def config_reloaded(self, ok: bool, at: float) -> None:
        self._reload_ok.set(1 if ok else 0)
        if ok:
            self._reload_ts.set(at)

    # Exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)


class SnapshotCollector(Collector):
    """State gauges, derived from the latest snapshot when Prometheus scrapes."""

    def __init__(self, source: Callable[[], Snapshot | None]) -> None:
        self.source = source

    def describe(self) -> Iterator[Metric]:
        # Described without values so registration does not call the source early.
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        snap = self.source()
        families = self._families()
        if snap is None:
            yield from families
            return
        up, state, group_state, routed, cooldown, eligible, guard, dry = families
        for s in snap.servers:
            up.add_metric([s.name], 1 if s.health is Health.UP else 0)
            for h in Health:
                state.add_metric([s.name, h.value], 1 if s.health is h else 0)
        for g in snap.groups:
            for st in GroupStatus:
                group_state.add_metric([g.name, st.value], 1 if g.status is st else 0)
            for block, server in g.routing.items():
                if server:
                    routed.add_metric([block, server], 1)
            cooldown.add_metric([g.name], g.cooldown_remaining)
            for server, ok in g.eligible.items():
                eligible.add_metric([g.name, server], 1 if ok else 0)
        active: dict[str, bool] = {gv.name: gv.active for gv in snap.guards}
        for name in GUARDS:
            guard.add_metric([name], 1 if active.get(name) else 0)
        dry.add_metric([], 1 if snap.dry_run else 0)
        yield from families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("failoverd_server_up", "1 when the server is up", labels=["server"]),
            GaugeMetricFamily(
                "failoverd_server_state",
                "1 for the server's current health state",
                labels=["server", "state"],
            ),
            GaugeMetricFamily(
                "failoverd_group_state",
                "1 for the group's current state",
                labels=["group", "state"],
            ),
            GaugeMetricFamily(
                "failoverd_block_routed_to",
                "1 for the service a block is routed to",
                labels=["block", "server"],
            ),
            GaugeMetricFamily(
                "failoverd_cooldown_remaining_seconds",
                "Seconds left in the group's cooldown",
                labels=["group"],
            ),
            GaugeMetricFamily(
                "failoverd_standby_eligible",
                "1 when the standby could take every block of the group",
                labels=["group", "server"],
            ),
            GaugeMetricFamily(
                "failoverd_guard_active", "1 while the guard freezes moves", labels=["guard"]
            ),
            GaugeMetricFamily("failoverd_dry_run", "1 when moves are only logged"),
        ]
