"""`failoverd demo`: an Additional IP failover, end to end, on this machine only.

It starts the OVH API simulator in-process, three loopback HTTP "servers" (ns1001 the
primary in eu-west-gra; ns5000 in ca-east-bhs, listed first among the standbys but in a
region the blocks can never move to; ns1002 in eu-west-rbx), and the real daemon as a
subprocess (``python -m failoverd run -c <generated policy>``) with the simulator's
credentials in its environment. Once everything is healthy it stops the primary and prints
the story as the daemon tells it: its JSON log lines, its ``/status`` and ``/history``,
its ``/metrics`` (phase timings), and finally the simulator's own audit log, which is the
OVH side of the truth. Nothing here decides anything: the demo only watches.

Exit 0 when the blocks are verified on the eligible standby; 1 with a clear message when
that does not happen within the deadline (or the daemon dies). ``--keep-running`` then
restores the primary and leaves everything up for ``failoverd status``, ``curl /metrics``
and a manual ``failoverd move`` back, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import string
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from failoverd.errors import FailoverdError
from failoverd.sim.inventory import Inventory, load_inventory
from failoverd.sim.server import RunningSimulator, start_simulator

GROUP = "web"
PRIMARY = "ns1001.ip-51-68-100.eu"
FAR_STANDBY = "ns5000.ip-142-44-200.net"  # ca-east-bhs: listed first, never eligible
STANDBY = "ns1002.ip-51-68-100.eu"  # eu-west-rbx: interoperates with the GRA blocks
SERVERS = (PRIMARY, FAR_STANDBY, STANDBY)
ROLES = {PRIMARY: "primary", FAR_STANDBY: "standby 1", STANDBY: "standby 2"}

READY_DEADLINE = 30.0  # daemon start + first checks + preflight
MOVE_DEADLINE = 40.0  # primary stopped → every block verified on the standby
STOP_TIMEOUT = 15.0  # SIGTERM → exit, before SIGKILL
POLL = 0.1
PHASES = ("detect", "decide", "submit", "task", "verify", "total")


class DemoFailed(FailoverdError):
    """The demonstration did not reach its end; the message says where it stopped."""


# ----------------------------------------------------------------------------- output


class Timeline:
    """Prints events once each, with the time since the current chapter began."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.seen: set[str] = set()

    def chapter(self, title: str) -> None:
        self.t0 = time.monotonic()
        self.say(f"\n== {title}")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def event(self, key: str, text: str, *more: str) -> bool:
        """Print `text` unless an event with this key was printed already."""
        if key in self.seen:
            return False
        self.seen.add(key)
        self.say(f"[{time.monotonic() - self.t0:6.2f}s] {text}")
        for line in more:
            self.say(f"           {line}")
        return True


# ----------------------------------------------------------------------------- loopback servers


class HealthServer:
    """One "server": an HTTP listener whose /healthz answers 200 while it runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "server": self.name})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"


# ----------------------------------------------------------------------------- the daemon


@dataclass
class Daemon:
    """The `failoverd run` subprocess, its log lines (parsed) and its stderr."""

    proc: asyncio.subprocess.Process
    url: str
    logs: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def exited(self) -> int | None:
        return self.proc.returncode

    def tail(self, n: int = 15) -> str:
        return "\n".join(f"    {line}" for line in self.raw[-n:])

    async def stop(self) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for reader in self.readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(reader, 2.0)
        return self.proc.returncode if self.proc.returncode is not None else -1


async def _read_lines(stream: asyncio.StreamReader, daemon: Daemon, parse: bool) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        if not text:
            continue
        daemon.raw.append(text)
        if parse and text.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(text)
                if isinstance(record, dict):
                    daemon.logs.append(record)


async def start_daemon(policy: Path, env: Mapping[str, str], url: str) -> Daemon:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "failoverd",
        "run",
        "-c",
        str(policy),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    daemon = Daemon(proc, url)
    assert proc.stdout is not None and proc.stderr is not None  # noqa: PT018 - PIPE asked
    daemon.readers = [
        asyncio.create_task(_read_lines(proc.stdout, daemon, True), name="demo-stdout"),
        asyncio.create_task(_read_lines(proc.stderr, daemon, True), name="demo-stderr"),
    ]
    return daemon


# ----------------------------------------------------------------------------- the world


def free_port() -> int:
    """A loopback port for the daemon: the policy must name it so the CLI finds it too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resource_text(name: str) -> str:
    return importlib.resources.files("failoverd.sim").joinpath(name).read_text()


def demo_inventory(workdir: Path) -> Inventory:
    path = workdir / "inventory.yaml"
    path.write_text(resource_text("demo_inventory.yaml"))
    return load_inventory(path)


def write_policy(
    workdir: Path, sim: RunningSimulator, servers: Mapping[str, HealthServer], port: int
) -> Path:
    token = workdir / "admin.token"
    token.write_text(secrets.token_urlsafe(24) + "\n")
    token.chmod(0o600)
    state = workdir / "state"
    state.mkdir(mode=0o700)
    text = string.Template(resource_text("demo_policy.yaml")).substitute(
        endpoint=sim.base_url,
        daemon_port=port,
        state_dir=state,
        token_file=token,
        port_ns1001=servers[PRIMARY].port,
        port_ns5000=servers[FAR_STANDBY].port,
        port_ns1002=servers[STANDBY].port,
    )
    policy = workdir / "failoverd.yaml"
    policy.write_text(text)
    return policy


def daemon_env(inventory: Inventory) -> dict[str, str]:
    creds = inventory.credentials[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVH_", "FAILOVERD_"))}
    env.update(
        OVH_APPLICATION_KEY=creds.application_key,
        OVH_APPLICATION_SECRET=creds.application_secret,
        OVH_CONSUMER_KEY=creds.consumer_key,
        PYTHONUNBUFFERED="1",
    )
    # A demo run from a source tree works without installing the package.
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def cli() -> str:
    """How the user can call the CLI from their shell."""
    found = shutil.which("failoverd")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return "failoverd"
    here = Path(sys.executable).parent / "failoverd"
    return shlex.quote(str(here)) if here.exists() else f"{sys.executable} -m failoverd"


# ----------------------------------------------------------------------------- watching


class Watcher:
    """Polls /status, /history and /metrics and turns changes into timeline events."""

    def __init__(self, http: aiohttp.ClientSession, daemon: Daemon, timeline: Timeline) -> None:
        self.http = http
        self.daemon = daemon
        self.t = timeline
        self.status: dict[str, Any] = {}
        self.health: dict[str, str] = {}
        self.group_status: str | None = None
        self.routing: dict[str, str | None] = {}
        self.history_seen: set[int] = set()
        self.log_index = 0

    async def get_json(self, path: str) -> Any:
        async with self.http.get(self.daemon.url + path) as resp:
            if resp.status != 200:
                return None
            return await resp.json()

    async def metrics(self) -> str:
        async with self.http.get(self.daemon.url + "/metrics") as resp:
            return await resp.text()

    async def healthy(self) -> bool:
        try:
            async with self.http.get(self.daemon.url + "/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    def group(self) -> Mapping[str, Any]:
        for g in self.status.get("groups") or ():
            if g.get("name") == GROUP:
                return dict(g)
        return {}

    async def poll(self, *, report: bool = True) -> None:
        if self.daemon.exited() is not None:
            raise DemoFailed(
                f"the daemon exited with status {self.daemon.exited()}; its last lines:\n"
                + self.daemon.tail()
            )
        try:
            status = await self.get_json("/status")
            history = await self.get_json(f"/history?group={GROUP}&limit=200")
        except (aiohttp.ClientError, ValueError):
            return  # not listening yet, or restarting its listener: next round
        if isinstance(status, dict):
            self.status = status
        if report:
            self._report_logs()
            if isinstance(history, list):
                self._report_history(history)
            self._report_status()

    # -- the three sources --------------------------------------------------------------

    def _report_status(self) -> None:
        for server in self.status.get("servers") or ():
            name, health = server.get("name"), server.get("health")
            if name not in SERVERS or not isinstance(health, str):
                continue
            before = self.health.get(name)
            self.health[name] = health
            if before is not None and before != health:
                reason = server.get("last_reason") or ""
                self.t.event(
                    f"health:{name}:{health}:{len(self.t.seen)}",
                    f"health   {name} is {health.upper()}" + (f" ({reason})" if reason else ""),
                )
        group = self.group()
        status = group.get("status")
        if isinstance(status, str) and status != self.group_status:
            if self.group_status is not None:
                holder = group.get("holder") or "-"
                self.t.event(
                    f"group:{status}:{len(self.t.seen)}",
                    f"group    {GROUP}: {self.group_status} -> {status} (holder {holder})",
                    *([f"reason: {group['reason']}"] if group.get("reason") else []),
                )
            self.group_status = status
        routing = group.get("routing") or {}
        for block, server in routing.items():
            before = self.routing.get(block, server)
            self.routing[block] = server
            if before != server:
                self.t.event(
                    f"routing:{block}:{server}",
                    f"routing  {block} is now routed to {server} (read back from the API)",
                )
        for move in self.status.get("in_flight") or ():
            self.t.event(
                f"inflight:{move.get('move_id')}:{move.get('phase')}",
                f"move     {move.get('move_id')} {move.get('trigger')} -> {move.get('target')}:"
                f" {move.get('phase')} ({', '.join(move.get('blocks') or ())})",
            )

    def _report_history(self, entries: list[Any]) -> None:
        for entry in sorted(
            (e for e in entries if isinstance(e, dict)), key=lambda e: e.get("id", 0)
        ):
            entry_id = entry.get("id")
            if not isinstance(entry_id, int) or entry_id in self.history_seen:
                continue
            self.history_seen.add(entry_id)
            details = entry.get("details") or {}
            more = [
                f"{key}: {value}"
                for key, value in details.items()
                if value not in (None, "") and key not in ("group",)
            ]
            self.t.event(
                f"history:{entry_id}",
                f"{entry.get('kind', 'event'):<8} {entry.get('message', '')}",
                *more,
            )

    def _report_logs(self) -> None:
        """Log lines that carry a task id or a duration: the move's progress, step by step."""
        logs = self.daemon.logs
        while self.log_index < len(logs):
            record = logs[self.log_index]
            self.log_index += 1
            event = str(record.get("event", ""))
            keys = ("block", "task_id", "target", "server", "took_s", "state")
            interesting = (
                "task_id" in record
                or "took_s" in record
                or record.get("level") in ("warning", "error", "critical")
            )
            if not interesting:
                continue
            parts = [f"{k}={record[k]}" for k in keys if record.get(k) not in (None, "")]
            self.t.event(f"log:{self.log_index}", f"log      {event}  " + " ".join(parts))


# ----------------------------------------------------------------------------- the story


def render_status(status: Mapping[str, Any]) -> list[str]:
    lines = ["GROUP  STATE        HOLDER                      BLOCKS"]
    for g in status.get("groups") or ():
        routing = g.get("routing") or {}
        blocks = ", ".join(f"{b} -> {s or 'parked'}" for b, s in routing.items())
        lines.append(
            f"{g.get('name', ''):<6} {g.get('status', ''):<12} "
            f"{g.get('holder') or '-':<27} {blocks}"
        )
    lines.append("")
    lines.append("SERVER                      HEALTH   LAST CHECK")
    for s in status.get("servers") or ():
        lines.append(f"{s.get('name', ''):<27} {s.get('health', ''):<8} {s.get('last_reason', '')}")
    guards = [g for g in status.get("guards") or () if g.get("active")]
    lines.append("")
    lines.append("guards: " + (", ".join(g["name"] for g in guards) if guards else "none active"))
    return lines


def phase_timings(metrics_text: str) -> dict[str, tuple[float, float]]:
    """phase → (sum of seconds, count) from failoverd_failover_phase_seconds."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "failoverd_failover_phase_seconds":
            continue
        for sample in family.samples:
            phase = sample.labels.get("phase", "")
            if sample.name.endswith("_sum"):
                sums[phase] = sample.value
            elif sample.name.endswith("_count"):
                counts[phase] = sample.value
    return {p: (sums.get(p, 0.0), counts[p]) for p in counts}


async def wait_for(
    what: str, check: Callable[[], bool], poll: Callable[[], Any], deadline: float
) -> None:
    """Poll until `check()` holds or the deadline (loop time) passes."""
    loop = asyncio.get_running_loop()
    while True:
        await poll()
        if check():
            return
        if loop.time() > deadline:
            raise DemoFailed(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)  # pacing a poll loop whose exit is a condition, not a wait


async def cli_status(policy: Path, url: str, out: TextIO) -> bool:
    """The real `failoverd status` against the running daemon; False if it failed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "failoverd",
        "status",
        "-c",
        str(policy),
        "--url",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    if proc.returncode != 0:
        return False
    out.write(stdout.decode(errors="replace"))
    out.flush()
    return True


async def _demo(keep_running: bool, out: TextIO) -> int:
    t = Timeline(out)
    workdir = Path(tempfile.mkdtemp(prefix="failoverd-demo-"))
    servers = {name: HealthServer(name) for name in SERVERS}
    sim: RunningSimulator | None = None
    daemon: Daemon | None = None
    try:
        t.say("failoverd demo: an Additional IP failover, end to end, on this machine only")
        inventory = demo_inventory(workdir)
        sim = await start_simulator(inventory)
        for server in servers.values():
            await server.start()
        port = free_port()
        policy = write_policy(workdir, sim, servers, port)
        regions = {s.name: s.region for s in inventory.servers}
        t.say(f"\n  simulated OVH API  {sim.base_url}")
        for name, server in servers.items():
            t.say(f"  {ROLES[name]:<10} {name:<26} {regions[name]:<12} {server.url}")
        t.say(f"  group {GROUP!r}: blocks {', '.join(b.cidr for b in inventory.blocks)}")
        t.say(f"  policy             {policy}")

        daemon = await start_daemon(policy, daemon_env(inventory), f"http://127.0.0.1:{port}")
        t.say(f"  daemon             failoverd run -c {policy.name}  (pid {daemon.proc.pid})")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            w = Watcher(http, daemon, t)
            await _healthy_world(t, w)
            await _fail_primary(t, w, servers[PRIMARY], sim)
            await _final(t, w, sim, policy, out)
            if keep_running:
                await _keep_running(t, w, servers[PRIMARY], policy)
        return 0
    finally:
        if daemon is not None:
            code = await daemon.stop()
            if code not in (0, -signal.SIGTERM):
                t.say(f"(the daemon exited with status {code})")
        for server in servers.values():
            await server.stop()
        if sim is not None:
            await sim.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def _healthy_world(t: Timeline, w: Watcher) -> None:
    loop = asyncio.get_running_loop()
    t.chapter("starting: waiting until the daemon sees every server up")

    async def quiet() -> None:
        await w.poll(report=False)

    deadline = loop.time() + READY_DEADLINE
    ready = False

    async def probe() -> None:
        nonlocal ready
        await quiet()
        ready = ready or await w.healthy()

    await wait_for("the daemon's /healthz", lambda: ready, probe, deadline)
    t.event("ready", f"daemon   ready on {w.daemon.url}")

    def all_up() -> bool:
        health = {s.get("name"): s.get("health") for s in w.status.get("servers") or ()}
        group = w.group()
        routing = group.get("routing") or {}
        eligible = group.get("eligible") or {}
        return (
            all(health.get(name) == "up" for name in SERVERS)
            and bool(routing)
            and all(server == PRIMARY for server in routing.values())
            and FAR_STANDBY in eligible
            and STANDBY in eligible
        )

    await wait_for(
        "every server up, the blocks on the primary and the preflight done",
        all_up,
        quiet,
        deadline,
    )
    group = w.group()
    t.event("healthy", f"healthy  every server is up; group {GROUP} is {group.get('status')}")
    for block, server in (group.get("routing") or {}).items():
        t.say(f"           {block} routed to {server}")
    for server, ok in (group.get("eligible") or {}).items():
        verdict = "eligible" if ok else "NOT eligible"
        t.say(f"           preflight: {server} {verdict} to take over")
    # Start the next chapter from what the daemon reports now, not from history.
    await w.poll(report=False)
    w.health = {s["name"]: s["health"] for s in w.status.get("servers") or ()}
    w.group_status = w.group().get("status")
    w.routing = dict(w.group().get("routing") or {})
    w.log_index = len(w.daemon.logs)
    history = await w.get_json(f"/history?group={GROUP}&limit=200")
    w.history_seen = {e["id"] for e in history or () if isinstance(e, dict) and "id" in e}


async def _fail_primary(
    t: Timeline, w: Watcher, primary: HealthServer, sim: RunningSimulator
) -> None:
    loop = asyncio.get_running_loop()
    t.chapter(f"stopping the primary {PRIMARY}: its health endpoint stops answering")
    await primary.stop()
    t.event("stopped", f"stopped  {PRIMARY} ({primary.url} now refuses connections)")

    def moved() -> bool:
        routing = w.group().get("routing") or {}
        on_standby = bool(routing) and all(s == STANDBY for s in routing.values())
        return on_standby and w.group().get("status") != "moving"

    try:
        await wait_for(
            f"the blocks to be verified on {STANDBY}",
            moved,
            w.poll,
            loop.time() + MOVE_DEADLINE,
        )
    except DemoFailed as exc:
        routing = {b: sim.state.routing(b) for b in w.routing}
        raise DemoFailed(
            f"the failover did not complete within {MOVE_DEADLINE:.0f}s ({exc}); "
            f"the simulator routes {routing}; the daemon's last lines:\n{w.daemon.tail()}"
        ) from None
    # A last look, so the final log lines and history entries are in the timeline.
    await w.poll()


async def _final(t: Timeline, w: Watcher, sim: RunningSimulator, policy: Path, out: TextIO) -> None:
    t.chapter("result")
    timings = phase_timings(await w.metrics())
    if timings:
        shown = "  ".join(
            f"{p} {timings[p][0] / max(timings[p][1], 1):.3f}s" for p in PHASES if p in timings
        )
        t.say(f"phase timings (failoverd_failover_phase_seconds): {shown}")
    t.say("\nOVH side (the simulator's audit log):")
    for entry in sim.state.audit():
        if entry.get("action") == "move":
            t.say(
                f"  {entry.get('action')} {entry.get('block')}: {entry.get('from')} -> "
                f"{entry.get('to')}  task {entry.get('task_id')}  {entry.get('outcome')}"
            )
    t.say(f"\nfailoverd status --url {w.daemon.url}")
    if not await cli_status(policy, w.daemon.url, out):
        await w.poll(report=False)
        for line in render_status(w.status):
            t.say(line)
    final = {b: sim.state.routing(b) for b in w.routing}
    t.say(
        f"\nOK: every block of {GROUP} is routed to {STANDBY}: "
        + ", ".join(f"{b} -> {s}" for b, s in final.items())
    )
    if any(server != STANDBY for server in final.values()):
        raise DemoFailed(f"the simulator disagrees with the daemon: {final}")


async def _keep_running(t: Timeline, w: Watcher, primary: HealthServer, policy: Path) -> None:
    await primary.start()  # repaired: a manual move back needs a healthy target
    me = cli()
    t.say(
        f"""
The primary {PRIMARY} is back up; the blocks stay on {STANDBY} (failback: manual).
Everything keeps running until Ctrl-C. In another shell:

  {me} status -c {policy}
  {me} history {GROUP} -c {policy}
  curl -s {w.daemon.url}/metrics | grep '^failoverd_'
  {me} move {GROUP} --to {PRIMARY} --force -c {policy}

(--force because the group is in its cooldown after the failover; the admin token is in
{policy.parent / "admin.token"}, which the policy names.)"""
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            await w.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    t.say("\nstopping")


def main(*, keep_running: bool) -> int:
    """`failoverd demo`: 0 when the failover was shown end to end, 1 otherwise."""
    try:
        return asyncio.run(_demo(keep_running, sys.stdout))
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
