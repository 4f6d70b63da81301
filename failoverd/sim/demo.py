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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from failoverd.errors import FailoverdError
from failoverd.sim.inventory import Fault, Inventory, load_inventory
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
REORDER = 0.3  # seconds an event is held so that late ones from another source sort first
PHASES = ("detect", "decide", "submit", "task", "verify", "total")


class DemoFailed(FailoverdError):
    """The demonstration did not reach its end; the message says where it stopped."""


# ----------------------------------------------------------------------------- output


class Timeline:
    """Prints each event once, stamped with its time since the current chapter began."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.time()
        self.seen: set[str] = set()

    def chapter(self, title: str) -> None:
        self.t0 = time.time()
        self.say(f"\n== {title}")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def event(self, key: str, text: str, *more: str, at: float | None = None) -> bool:
        """Print `text` (wall time `at`, default now) unless `key` was printed already."""
        if key in self.seen:
            return False
        self.seen.add(key)
        elapsed = max((at if at is not None else time.time()) - self.t0, 0.0)
        self.say(f"[{elapsed:6.2f}s] {text}")
        for line in more:
            self.say(f"           {line}")
        return True


@dataclass(frozen=True)
class Event:
    at: float  # wall-clock epoch seconds
    key: str
    text: str
    more: tuple[str, ...] = ()


def reason_lines(reason: object) -> tuple[str, ...]:
    """A decision sentence with several clauses reads better one clause per line."""
    text = str(reason or "").strip()
    if not text:
        return ()
    if len(text) <= 90 or "; " not in text:
        return (text,)
    return tuple(part.strip() for part in text.split("; ") if part.strip())


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
        # Its own session: Ctrl-C on the terminal reaches the demo only, which then stops
        # the daemon with SIGTERM like systemd would.
        start_new_session=True,
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


# Log keys shown after the event name, in this order (the daemon's fixed keys).
LOG_KEYS = ("group", "server", "block", "task_id", "move_id", "result")
# Log keys never shown: bookkeeping, or shown another way.
LOG_SKIP = {"timestamp", "level", "logger", "event", "reason", "took_s", "canary", "pid"}


def log_event(index: int, record: Mapping[str, Any]) -> Event:
    at = time.time()
    stamp = record.get("timestamp")
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(stamp).timestamp()
    level = str(record.get("level", "info"))
    head = f"{record.get('event', '')}"
    if level not in ("info", "debug"):
        head = f"{level.upper()} {head}"
    fields = [f"{k}={record[k]}" for k in LOG_KEYS if record.get(k) not in (None, "")]
    if isinstance(record.get("took_s"), int | float):
        fields.append(f"took {record['took_s']:.3f}s")
    extra = [
        f"{k}={v}"
        for k, v in record.items()
        if k not in LOG_SKIP and k not in LOG_KEYS and not isinstance(v, dict | list)
    ]
    text = " ".join([f"log      {head}", *fields, *extra])
    return Event(at, f"log:{index}", text, reason_lines(record.get("reason")))


class Watcher:
    """Turns the daemon's log lines, /history (journal steps) and /status into events."""

    def __init__(self, http: aiohttp.ClientSession, daemon: Daemon, timeline: Timeline) -> None:
        self.http = http
        self.daemon = daemon
        self.t = timeline
        self.status: dict[str, Any] = {}
        self.group_status: str | None = None
        self.routing: dict[str, str | None] = {}
        self.log_index = 0
        self.history_from = 0  # history ids up to this one belong to an earlier chapter
        self.pending: list[Event] = []

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

    def check_alive(self) -> None:
        if self.daemon.exited() is not None:
            raise DemoFailed(
                f"the daemon exited with status {self.daemon.exited()}; its last lines:\n"
                + self.daemon.tail()
            )

    async def poll(self) -> None:
        """One round: read everything, print in time order what is old enough."""
        self.check_alive()
        events = self._log_events()
        try:
            status = await self.get_json("/status")
            history = await self.get_json(f"/history?group={GROUP}&limit=200")
        except (aiohttp.ClientError, ValueError):
            status = history = None  # not listening yet: the next round will tell
        if isinstance(status, dict):
            self.status = status
            events += self._status_events()
        if isinstance(history, list):
            events += self._history_events(history)
        self.pending += events
        # The three sources are read one after the other: an event may reach us a round
        # after a later one from another source. Holding events briefly keeps the order.
        self.flush(older_than=REORDER)

    def flush(self, older_than: float = 0.0) -> None:
        horizon = time.time() - older_than
        ready = sorted((e for e in self.pending if e.at <= horizon), key=lambda e: e.at)
        self.pending = [e for e in self.pending if e.at > horizon]
        for e in ready:
            self.t.event(e.key, e.text, *e.more, at=e.at)

    def new_chapter(self) -> None:
        """Forget what belongs to the previous chapter, without printing it."""
        self._log_events()
        self.log_index = len(self.daemon.logs)
        self.group_status = self.group().get("status")
        self.routing = dict(self.group().get("routing") or {})

    # -- the three sources --------------------------------------------------------------

    def _log_events(self) -> list[Event]:
        logs = self.daemon.logs
        out = [log_event(i, logs[i]) for i in range(self.log_index, len(logs))]
        self.log_index = len(logs)
        return out

    def _history_events(self, entries: list[Any]) -> list[Event]:
        """Journal steps: written before each POST and after each answer (SPEC 5.4)."""
        out: list[Event] = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
                continue
            if entry["id"] <= self.history_from:
                continue
            # Decisions and moves are in the log lines already; without JSON logs, show all.
            if entry.get("kind") != "step" and self.daemon.logs:
                continue
            at = entry.get("at")
            out.append(
                Event(
                    float(at) if isinstance(at, int | float) else time.time(),
                    f"history:{entry['id']}",
                    f"{'journal' if entry.get('kind') == 'step' else entry.get('kind', ''):<8}"
                    f" {entry.get('message', '')}",
                )
            )
        return out

    def _status_events(self) -> list[Event]:
        now = time.time()
        out: list[Event] = []
        group = self.group()
        status = group.get("status")
        if isinstance(status, str) and status != self.group_status:
            if self.group_status is not None:
                out.append(
                    Event(
                        now,
                        f"group:{self.group_status}:{status}:{now}",
                        f"status   group {GROUP}: {self.group_status} -> {status}",
                    )
                )
            self.group_status = status
        for block, server in (group.get("routing") or {}).items():
            before = self.routing.get(block, server)
            self.routing[block] = server
            if before != server:
                out.append(
                    Event(
                        now,
                        f"routing:{block}:{server}:{now}",
                        f"routing  {block} -> {server} (GET /ip/{{ip}} routedTo, per /status)",
                    )
                )
        return out


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


async def _demo(
    keep_running: bool,
    out: TextIO,
    *,
    move_deadline: float = MOVE_DEADLINE,
    faults: Sequence[Fault] = (),
) -> int:
    """The whole demonstration; `move_deadline` and `faults` exist for its own tests."""
    t = Timeline(out)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="failoverd-demo-"))
    servers = {name: HealthServer(name) for name in SERVERS}
    sim: RunningSimulator | None = None
    daemon: Daemon | None = None
    try:
        t.say("failoverd demo: an Additional IP failover, end to end, on this machine only")
        inventory = demo_inventory(workdir)
        sim = await start_simulator(inventory)
        for fault in faults:
            sim.state.add_fault(fault)
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
            await _fail_primary(t, w, servers[PRIMARY], sim, move_deadline)
            await _final(t, w, sim, policy, out)
            t.say(f"\ndemo done in {time.monotonic() - started:.1f}s")
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
    t.chapter("starting: the daemon reads the routing, checks every server, runs the preflight")
    deadline = loop.time() + READY_DEADLINE

    def all_up() -> bool:
        health = {s.get("name"): s.get("health") for s in w.status.get("servers") or ()}
        group = w.group()
        routing = group.get("routing") or {}
        eligible = group.get("eligible") or {}
        return (
            all(health.get(name) == "up" for name in SERVERS)
            and bool(routing)
            and all(server == PRIMARY for server in routing.values())
            and {FAR_STANDBY, STANDBY} <= set(eligible)
        )

    await wait_for(
        "every server up, the blocks on the primary and the preflight done",
        all_up,
        w.poll,
        deadline,
    )
    w.flush()
    group = w.group()
    t.event("healthy", f"healthy  every server is up; group {GROUP} is {group.get('status')}")
    for block, server in (group.get("routing") or {}).items():
        t.say(f"           {block} routed to {server}")
    for server, ok in (group.get("eligible") or {}).items():
        t.say(f"           preflight: {server} {'eligible' if ok else 'NOT eligible'}")
    history = await w.get_json(f"/history?group={GROUP}&limit=200")
    ids = [e["id"] for e in history or () if isinstance(e, dict) and isinstance(e.get("id"), int)]
    w.history_from = max(ids, default=0)
    w.new_chapter()


async def _fail_primary(
    t: Timeline, w: Watcher, primary: HealthServer, sim: RunningSimulator, deadline: float
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
            f"the blocks to be verified on {STANDBY}", moved, w.poll, loop.time() + deadline
        )
    except DemoFailed as exc:
        w.flush()  # what did happen is the best explanation of what did not
        routing = {b: sim.state.routing(b) for b in w.routing}
        raise DemoFailed(
            f"the failover did not complete within {deadline:.0f}s ({exc}); "
            f"the simulator routes {routing}; the daemon's last lines:\n{w.daemon.tail()}"
        ) from None
    await w.poll()  # the last log lines and journal steps of the move
    w.flush()


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
        for line in render_status(w.status):
            t.say(line)
    final = {b: sim.state.routing(b) for b in w.routing}
    if any(server != STANDBY for server in final.values()):
        raise DemoFailed(f"the simulator disagrees with the daemon: {final}")
    t.say(f"\nOK: every block of group {GROUP} is routed to the eligible standby {STANDBY}:")
    for block, server in final.items():
        t.say(f"  {block} -> {server}")


async def _keep_running(t: Timeline, w: Watcher, primary: HealthServer, policy: Path) -> None:
    t.chapter(f"repairing the primary {PRIMARY}")
    await primary.start()  # a manual move back needs a healthy target
    loop = asyncio.get_running_loop()

    def primary_up() -> bool:
        health = {s.get("name"): s.get("health") for s in w.status.get("servers") or ()}
        return health.get(PRIMARY) == "up"

    await wait_for(f"{PRIMARY} to be up again", primary_up, w.poll, loop.time() + READY_DEADLINE)
    me = cli()
    t.say(
        f"""
The primary {PRIMARY} is back up; the blocks stay on {STANDBY} (failback: manual).
Everything keeps running until Ctrl-C. In another shell:

  {me} status --url {w.daemon.url}
  {me} history {GROUP} --url {w.daemon.url}
  curl -s {w.daemon.url}/metrics | grep '^failoverd_'
  {me} move {GROUP} --to {PRIMARY} --force -c {policy}

The move needs the admin token: -c names the demo's policy, which names its token file.
--force because the group is in its cooldown after the failover."""
    )
    stop = asyncio.Event()
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


def run(
    *,
    keep_running: bool,
    out: TextIO,
    err: TextIO,
    move_deadline: float = MOVE_DEADLINE,
    faults: Sequence[Fault] = (),
) -> int:
    """The demo with its output streams (and test knobs) as arguments."""
    try:
        return asyncio.run(_demo(keep_running, out, move_deadline=move_deadline, faults=faults))
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}", file=err, flush=True)
        return 1


def main(*, keep_running: bool) -> int:
    """`failoverd demo`: 0 when the failover was shown end to end, 1 otherwise."""
    for stream in (sys.stdout, sys.stderr):
        # The timeline quotes the daemon (arrows, names); a non-UTF-8 terminal gets "?".
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    return run(keep_running=keep_running, out=sys.stdout, err=sys.stderr)
