"""Failover latency: from the failed check that declares a primary down to its move's POST.

    .venv/bin/python benchmarks/failover_latency.py [--groups 100] [--interval 0.5] [--isolated 20]

N groups (one primary, one standby, one block each) on the OVH API simulator with zero
task duration and no added latency, checked by the real HealthMonitor (HTTP checks against
one loopback server whose answer per path is switched at run time), run by the real
Supervisor with the real adapter and the real SQLite journal. Two runs:

* isolated: primaries are killed one at a time, each move finishing before the next kill —
  the engine's own overhead per failover;
* simultaneous: every primary killed at once — N failovers queued through one API client.

For each moved block it measures, on the event loop's clock, the time from the down verdict
(``ServerHealth.since``: the moment the last failed check completed) to the call of
``submit_move`` — which includes waking the loop, deciding, the mandatory move-time
eligibility check (``ipCanBeMovedTo``, one API round trip, started at once and overlapping
the journal's ``planned`` write) and writing ``submitting`` to the journal (fsync). It
also counts the API requests the simulator received per moved block after the kill
(eligibility, POST, task polls, verification, routing re-read). The mass-failure guard is
disabled for the simultaneous run on purpose:
with it (as in production) half the fleet down at once freezes every move.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from failoverd.checks import HealthMonitor
from failoverd.journal import Journal
from failoverd.metrics import Metrics
from failoverd.model import (
    BlockInfo,
    Eligibility,
    Health,
    JournaledMove,
    MoveOutcome,
    MoveTicket,
    ServiceInfo,
    TaskStatus,
)
from failoverd.ovhapi import OvhClient
from failoverd.policy import (
    ApiPolicy,
    Block,
    CheckTiming,
    DaemonPolicy,
    GroupPolicy,
    GuardsPolicy,
    HttpCheck,
    MassFailure,
    MaxFailovers,
    Policy,
    ServerPolicy,
    block_str,
)
from failoverd.sim.inventory import inventory_from_dict
from failoverd.sim.server import start_simulator
from failoverd.supervisor import Supervisor

CREDS = {
    "application_key": "bench-app-key",
    "application_secret": "bench-app-secret",
    "consumer_key": "bench-consumer-key",
}


class TimedApi:
    """The real adapter, with the loop time of each eligibility check and submission."""

    def __init__(self, inner: OvhClient) -> None:
        self.inner = inner
        self.submitted: dict[str, float] = {}
        self.checked: dict[str, float] = {}
        self.check_took: list[float] = []

    async def block_info(self, block: Block) -> BlockInfo:
        return await self.inner.block_info(block)

    async def service_info(self, name: str) -> ServiceInfo:
        return await self.inner.service_info(name)

    async def can_move(self, block: Block, target: str) -> Eligibility:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.checked.setdefault(block_str(block), started)
        try:
            return await self.inner.can_move(block, target)
        finally:
            self.check_took.append(loop.time() - started)

    async def submit_move(self, block: Block, target: str, *, deadline: float) -> MoveTicket:
        self.submitted.setdefault(block_str(block), asyncio.get_running_loop().time())
        return await self.inner.submit_move(block, target, deadline=deadline)

    async def task_status(self, ticket: MoveTicket) -> TaskStatus:
        return await self.inner.task_status(ticket)

    async def find_move_task(self, block: Block, target: str) -> MoveTicket | None:
        return await self.inner.find_move_task(block, target)

    async def wait_for_move(self, ticket: MoveTicket, *, deadline: float) -> MoveOutcome:
        return await self.inner.wait_for_move(ticket, deadline=deadline)

    async def close(self) -> None:
        await self.inner.close()


class TimedJournal(Journal):
    """The real journal, with the loop time each block's move was decided (journaled)."""

    decided: dict[str, float]

    async def create_move(self, move: JournaledMove) -> None:
        now = asyncio.get_running_loop().time()
        for block in move.blocks:
            self.decided.setdefault(block, now)
        await super().create_move(move)


class HealthEndpoints:
    """One loopback HTTP server; GET /<server> answers that server's current status."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status.get(request.match_info["name"], 404), text="")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def world(n: int) -> tuple[list[str], list[str], list[str]]:
    primaries = [f"p{i:03d}" for i in range(n)]
    standbys = [f"s{i:03d}" for i in range(n)]
    net = ipaddress.ip_network("198.18.0.0/15")
    blocks = [str(sub) for sub, _ in zip(net.subnets(new_prefix=29), range(n), strict=False)]
    return primaries, standbys, blocks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(n: int, interval: float, simultaneous: bool, isolated: int = 0) -> dict[str, Any]:
    primaries, standbys, blocks = world(n)
    inv = inventory_from_dict(
        {
            "servers": [
                {
                    "name": name,
                    "kind": "dedicated",
                    "region": "eu-west-gra",
                    "datacenter": "GRA1",
                    "ip": f"10.{i // 250}.{i % 250}.1",
                    "vmac_supported": True,
                }
                for i, name in enumerate(primaries + standbys)
            ],
            "blocks": [{"cidr": b, "routed_to": p} for b, p in zip(blocks, primaries, strict=True)],
            "credentials": [CREDS],
            "task_durations": {"init": 0, "todo": 0, "doing": 0},
            "listing_lag": 0,
            "task_read_lag": 0,
            "faults": [],
        }
    )
    sim = await start_simulator(inv)
    endpoints = HealthEndpoints()
    await endpoints.start()
    for name in primaries + standbys:
        endpoints.status[name] = 200
    timing = CheckTiming(interval=interval, timeout=min(0.5, interval * 0.9), fall=2, rise=2)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Policy(
            api=ApiPolicy(endpoint=sim.base_url, timeout=5.0, requests_per_minute=1_000_000),
            daemon=DaemonPolicy(
                state_dir=Path(tmp), reconcile_interval=3600.0, preflight_interval=3600.0
            ),
            guards=GuardsPolicy(
                max_parallel_moves=16,
                max_failovers=MaxFailovers(count=10 * n, window=3600.0),
                mass_failure=MassFailure(fraction=1.0, min_servers=10 * n),
            ),
            servers={
                name: ServerPolicy(
                    name=name,
                    checks=(
                        HttpCheck(url=f"http://127.0.0.1:{endpoints.port}/{name}", timing=timing),
                    ),
                )
                for name in primaries + standbys
            },
            groups={
                f"g{i:03d}": GroupPolicy(
                    name=f"g{i:03d}",
                    primary=p,
                    standbys=(s,),
                    blocks=(ipaddress.ip_network(b),),
                )
                for i, (p, s, b) in enumerate(zip(primaries, standbys, blocks, strict=True))
            },
        )
        metrics = Metrics(CollectorRegistry())
        api = TimedApi(OvhClient.from_policy(policy.api, metrics, credentials=CREDS))
        health = HealthMonitor(policy, metrics)
        journal = TimedJournal.open(Path(tmp))
        assert isinstance(journal, TimedJournal)
        journal.decided = {}
        sup = Supervisor(policy, api=api, health=health, journal=journal, recorder=metrics)
        stop = asyncio.Event()
        await health.start()
        task = asyncio.get_running_loop().create_task(sup.run(stop))
        loop = asyncio.get_running_loop()

        async def until(cond: Any, what: str, timeout: float = 120.0) -> None:
            deadline = loop.time() + timeout
            while not cond():
                if task.done():
                    task.result()
                if loop.time() > deadline:
                    raise SystemExit(f"benchmark: {what} not reached in {timeout}s")
                await asyncio.sleep(0.01)  # polling a condition with a deadline

        def ready() -> bool:
            cur = health.current()
            snap = sup.snapshot()
            return all(
                (h := cur.get(s)) is not None and h.health is Health.UP for s in policy.servers
            ) and all(g.holder is not None and g.eligible for g in snap.groups)

        await until(ready, "every server up, routing and preflight known")
        # A group that already failed over during the start-up (a check timing out while
        # everything starts at once) is left out of the measurement, and said so.
        early = [
            i
            for i, (p, b) in enumerate(zip(primaries, blocks, strict=True))
            if sim.state.routing(b) != p
        ]
        primaries = [p for i, p in enumerate(primaries) if i not in early]
        blocks = [b for i, b in enumerate(blocks) if i not in early]
        early_moves = len([e for e in sim.state.audit() if e["action"] == "move"])
        first_request = len(sim.state.requests())
        api.checked.clear()  # the preflight asked too; only the moves count from here
        api.submitted.clear()
        api.check_took.clear()

        def moved(bs: list[str]) -> bool:
            # Cheap first: a full snapshot of 100 groups on every poll would load the loop
            # the engine runs on and inflate what is measured.
            if not all(sim.state.routing(b) != p for b, p in bs_pairs(bs)):
                return False
            return not sup.snapshot().in_flight

        def bs_pairs(bs: list[str]) -> list[tuple[str, str]]:
            return [(b, primaries[blocks.index(b)]) for b in bs]

        started = loop.time()
        if simultaneous:
            for p in primaries:
                endpoints.status[p] = 503
            await until(lambda: moved(blocks), "every block moved")
        else:
            # The first `isolated` groups fail one after the other; the rest stay up.
            primaries, blocks = primaries[:isolated], blocks[:isolated]
            for p, b in zip(primaries, blocks, strict=True):
                endpoints.status[p] = 503
                await until(lambda b=b: moved([b]), f"{b} moved")
        took = loop.time() - started

        cur = health.current()
        pairs = list(zip(blocks, primaries, strict=True))
        latency = [api.submitted[b] - cur[p].since for b, p in pairs]
        to_check = [api.checked[b] - cur[p].since for b, p in pairs]
        to_decision = [journal.decided[b] - cur[p].since for b, p in pairs]
        requests = [r for r in sim.state.requests()[first_request:] if r.route != "/auth/time"]
        counts: dict[str, int] = {}
        for r in requests:
            key = f"{r.method} {r.route}"
            counts[key] = counts.get(key, 0) + 1
        by_route = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
        moves = [e for e in sim.state.audit() if e["action"] == "move"][early_moves:]
        stop.set()
        await task
        await health.stop()
        await api.close()
        await journal.close()
    await endpoints.close()
    await sim.close()
    return {
        "latency": latency,
        "to_check": to_check,
        "to_decision": to_decision,
        "check_took": list(api.check_took),
        "requests": len(requests),
        "by_route": by_route,
        "moves": len(moves),
        "took": took,
        "early": len(early),
    }


def report(name: str, n: int, r: dict[str, Any]) -> None:
    ms = [x * 1000 for x in r["latency"]]
    dec = [x * 1000 for x in r["to_decision"]]
    chk = [x * 1000 for x in r["to_check"]]
    print(f"\n{name}: {n} groups, {r['moves']} move POSTs accepted, {r['took']:.2f}s overall")
    print(
        f"  down verdict → submit_move   p50 {percentile(ms, 0.5):7.2f} ms   "
        f"p99 {percentile(ms, 0.99):7.2f} ms   max {max(ms):7.2f} ms   "
        f"mean {statistics.fmean(ms):7.2f} ms"
    )
    print(
        f"  down verdict → move decided  p50 {percentile(dec, 0.5):7.2f} ms   "
        f"p99 {percentile(dec, 0.99):7.2f} ms   (wake + observe + decide)"
    )
    print(
        f"  down verdict → can_move      p50 {percentile(chk, 0.5):7.2f} ms   "
        f"p99 {percentile(chk, 0.99):7.2f} ms   (the move-time eligibility check starts)"
    )
    took = [x * 1000 for x in r["check_took"]]
    print(
        f"  can_move round trip          p50 {percentile(took, 0.5):7.2f} ms   "
        f"p99 {percentile(took, 0.99):7.2f} ms   (ovh library → simulator, queued by budget)"
    )
    if r["early"]:
        print(f"  ({r['early']} groups failed over during start-up and were left out)")
    per_block = r["requests"] / max(1, r["moves"])
    print(f"  API requests per moved block: {per_block:.2f} ({r['requests']} in all)")
    for route, count in r["by_route"].items():
        print(f"    {count / max(1, r['moves']):5.2f}  {route}")


async def amain(args: argparse.Namespace) -> None:
    k = min(args.isolated, args.groups)
    isolated = await run(args.groups, args.interval, simultaneous=False, isolated=k)
    report(f"isolated ({k} primaries killed one at a time)", args.groups, isolated)
    together = await run(args.groups, args.interval, simultaneous=True)
    report("simultaneous (every primary at once)", args.groups, together)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.5, help="check interval, seconds")
    parser.add_argument(
        "--isolated", type=int, default=20, help="primaries killed one at a time in the first run"
    )
    args = parser.parse_args()
    # Quiet: one log line per decision for 100 groups would drown the figures.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40), cache_logger_on_first_use=True
    )
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
