"""A whole small world for engine tests: simulator, real adapter, real checks, real journal.

Every piece is the real one (failoverd.sim through the real ``ovh`` library, HealthMonitor
probing loopback HTTP servers, the SQLite journal in tmp_path, Metrics on a fresh
registry); only the timings are small. ``World`` helps tests wait on conditions with a
deadline and read what happened (simulator audit, journal, metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from failoverd.checks import HealthMonitor
from failoverd.hooks import Hooks
from failoverd.journal import Journal
from failoverd.metrics import Metrics
from failoverd.model import Health
from failoverd.ovhapi import OvhClient
from failoverd.policy import (
    ApiPolicy,
    CheckTiming,
    DaemonPolicy,
    FailbackPolicy,
    GroupPolicy,
    GuardsPolicy,
    HooksPolicy,
    HttpCheck,
    MassFailure,
    MaxFailovers,
    Policy,
    ServerPolicy,
)
from failoverd.sim.inventory import inventory_from_dict
from failoverd.sim.server import RunningSimulator, start_simulator
from failoverd.supervisor import Supervisor

CREDS = {
    "application_key": "demo-app-key",
    "application_secret": "demo-app-secret",
    "consumer_key": "demo-consumer-key",
}
# Small but not tight: a loaded CI machine (xdist) must not see false timeouts on loopback.
FAST = CheckTiming(interval=0.2, timeout=0.18, fall=2, rise=2)
TASKS = {"init": 0.0, "todo": 0.0, "doing": 0.02}


# One automatic failover at a time (mass failure out of the way), and tasks long enough to
# look at the engine while a move is in flight: for tests of max_failovers under way.
ONE_FAILOVER = GuardsPolicy(
    max_parallel_moves=4,
    max_failovers=MaxFailovers(count=1, window=3600.0),
    mass_failure=MassFailure(fraction=0.9, min_servers=5),
)
SLOW_TASKS = {"task_durations": {"init": 0.0, "todo": 0.0, "doing": 4.0}}
ONE_UNDER_WAY = (
    "max failovers: 0 automatic failovers in the last 1h and 1 under way (limit 1); "
    "automatic moves frozen"
)


@dataclass(frozen=True)
class Srv:
    """A server of the test world: its OVH facts."""

    name: str
    region: str = "eu-west-gra"
    kind: str = "dedicated"
    healthy: bool = True
    capacity: int | None = None


@dataclass(frozen=True)
class Grp:
    name: str
    primary: str
    standbys: tuple[str, ...]
    blocks: tuple[str, ...]
    cooldown: float = 600.0
    failback: FailbackPolicy = FailbackPolicy()  # noqa: RUF009 (frozen, shared safely)
    hooks: HooksPolicy = HooksPolicy()  # noqa: RUF009 (frozen, shared safely)


def inventory(servers: Sequence[Srv], groups: Sequence[Grp], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "servers": [
            {
                "name": s.name,
                "kind": s.kind,
                "region": s.region,
                "datacenter": s.region.split("-")[-1].upper() + "1",
                "ip": f"10.0.{i // 250}.{i % 250 + 1}",
                "vmac_supported": True,
            }
            for i, s in enumerate(servers)
        ],
        "blocks": [{"cidr": b, "routed_to": g.primary} for g in groups for b in g.blocks],
        "credentials": [CREDS],
        "task_durations": dict(TASKS),
        "listing_lag": 0,
        "task_read_lag": 0,
        "faults": [],
    }
    data.update(extra)
    return data


def build_policy(
    base_url: str,
    servers: Sequence[Srv],
    groups: Sequence[Grp],
    urls: Mapping[str, str],
    state_dir: Path,
    *,
    guards: GuardsPolicy | None = None,
    timing: CheckTiming = FAST,
    dry_run: bool = False,
    move_timeout: float = 10.0,
    api_timeout: float = 1.0,
) -> Policy:
    return Policy(
        api=ApiPolicy(
            endpoint=base_url,
            timeout=api_timeout,
            requests_per_minute=100_000,
            move_timeout=move_timeout,
        ),
        daemon=DaemonPolicy(
            state_dir=state_dir,
            dry_run=dry_run,
            reconcile_interval=30.0,
            preflight_interval=60.0,
        ),
        guards=guards
        or GuardsPolicy(
            max_parallel_moves=4,
            max_failovers=MaxFailovers(count=100, window=3600.0),
            mass_failure=MassFailure(fraction=0.5, min_servers=3),
        ),
        servers={
            s.name: ServerPolicy(
                name=s.name,
                checks=(HttpCheck(url=urls[s.name], timing=timing),),
                capacity=s.capacity,
            )
            for s in servers
        },
        groups={
            g.name: GroupPolicy(
                name=g.name,
                primary=g.primary,
                standbys=g.standbys,
                blocks=tuple(ipaddress.ip_network(b) for b in g.blocks),
                cooldown=g.cooldown,
                failback=g.failback,
                hooks=g.hooks,
            )
            for g in groups
        },
    )


@dataclass
class World:
    sim: RunningSimulator
    http: dict[str, Any]  # server name -> SwitchableHttpServer
    policy: Policy
    api: OvhClient
    health: HealthMonitor
    journal: Journal
    metrics: Metrics
    supervisor: Supervisor
    servers: Sequence[Srv] = ()
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ waiting

    async def until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait for `predicate` with a deadline (polling on the loop; never a blind sleep)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if self.task is not None and self.task.done():
                self.task.result()  # the supervisor died: show why
                raise AssertionError("the supervisor stopped")
            if loop.time() > deadline:
                raise AssertionError(f"{what}: not reached within {timeout}s")
            await asyncio.sleep(0.005)

    async def settled(self, timeout: float = 10.0) -> None:
        """Every server has a verdict, every block's routing was read, the preflight ran."""

        def ready() -> bool:
            cur = self.health.current()
            snap = self.supervisor.snapshot()
            known = all(
                (h := cur.get(s.name)) is not None
                and h.health is (Health.UP if s.healthy else Health.DOWN)
                for s in self.servers
            )
            routed = all(v is not None for g in snap.groups for v in g.routing.values())
            preflown = all(
                set(g.eligible) >= set(self.policy.groups[g.name].standbys) for g in snap.groups
            )
            return known and routed and preflown

        await self.until(ready, timeout, "health verdicts and routing")

    def health_of(self, name: str) -> Health:
        h = self.health.current().get(name)
        return h.health if h is not None else Health.UNKNOWN

    def kill(self, *names: str) -> None:
        """The servers' health endpoints start failing (503)."""
        for n in names:
            self.http[n].answer(503, "down")

    def revive(self, *names: str) -> None:
        for n in names:
            self.http[n].answer(200, "ok")

    def idle(self) -> bool:
        return not self.supervisor.snapshot().in_flight

    # ------------------------------------------------------------------ reading

    def routing(self, block: str) -> str | None:
        return self.sim.state.routing(block)

    def moves(self, block: str | None = None) -> list[dict[str, Any]]:
        """Accepted move submissions in the simulator's audit (one per POST that took)."""
        return [
            e
            for e in self.sim.state.audit()
            if e["action"] == "move"
            and e["outcome"] == "accepted"
            and (block is None or e["block"] == block)
        ]

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    # ------------------------------------------------------------------ lifecycle

    async def start_supervisor(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.supervisor.run(self.stop))

    async def close(self) -> None:
        if self.task is not None:
            self.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 20)
        await self.health.stop()
        await self.api.close()
        await self.journal.close()
        await self.sim.close()


async def make_world(
    tmp_path: Path,
    http_factory: Callable[..., Awaitable[Any]],
    servers: Sequence[Srv],
    groups: Sequence[Grp],
    *,
    inventory_extra: Mapping[str, Any] | None = None,
    start: bool = True,
    journal: Journal | None = None,
    hooks: Hooks | None = None,
    **policy_kw: Any,
) -> World:
    sim = await start_simulator(
        inventory_from_dict(inventory(servers, groups, **(inventory_extra or {})))
    )
    http: dict[str, Any] = {}
    for s in servers:
        server = await http_factory()
        if not s.healthy:
            server.answer(503)
        http[s.name] = server
    urls = {name: f"{srv.url}healthz" for name, srv in http.items()}
    state_dir = tmp_path / "state"
    policy = build_policy(sim.base_url, servers, groups, urls, state_dir, **policy_kw)
    metrics = Metrics(CollectorRegistry())
    api = OvhClient.from_policy(policy.api, metrics, credentials=CREDS)
    health = HealthMonitor(policy, metrics)
    jrnl = journal or Journal.open(state_dir)
    supervisor = Supervisor(
        policy, api=api, health=health, journal=jrnl, recorder=metrics, hooks=hooks or Hooks()
    )
    metrics.bind_snapshot(supervisor.snapshot)
    world = World(sim, http, policy, api, health, jrnl, metrics, supervisor, servers)
    await health.start()
    if start:
        await world.start_supervisor()
    return world


def with_policy(world: World, **changes: Any) -> Policy:
    return replace(world.policy, **changes)


# ---------------------------------------------------------------------- crash world
# Shared by tests/test_crash.py (which serves it) and tests/crash_harness.py (which runs
# the engine in a separate process, to be killed).

CRASH_SERVERS = (Srv("ns1"), Srv("ns2", "eu-west-rbx"), Srv("ns3", "eu-west-sbg"))
CRASH_GROUP = Grp("web", "ns1", ("ns2", "ns3"), ("203.0.113.8/29", "198.51.100.7/32"))


def crash_world_policy(base_url: str, urls: Mapping[str, str], state_dir: Path) -> Policy:
    return build_policy(base_url, CRASH_SERVERS, [CRASH_GROUP], urls, state_dir)
