"""The OVH API simulator: an aiohttp app under /1.0 that the real `ovh` library talks to.

Start it in-process with ``await start_simulator(inventory)`` (tests, the demo) or as
``failoverd fake-api`` (users' rehearsals). Point the ovh library at it by registering the
base URL as an endpoint: ``ovh.client.ENDPOINTS["failoverd-sim-<port>"] = sim.base_url``.

API routes (signed exactly as OVH signs them; /auth/time is unsigned)::

    GET  /auth/time
    GET  /dedicated/server                       GET  /ip?type=&routedTo.serviceName=
    GET  /dedicated/server/{sn}                  GET  /ip/{ip}
    GET  /dedicated/server/{sn}/specifications/network
    GET  /dedicated/server/{sn}/ipCanBeMovedTo?ip=
    POST /dedicated/server/{sn}/ipMove {"ip"}    GET/POST /ip/{ip}/move {"to", "nexthop"?}
    GET  /dedicated/server/{sn}/task             POST /ip/{ip}/park
    GET  /dedicated/server/{sn}/task/{id}        GET  /ip/{ip}/task, /ip/{ip}/task/{id}
    GET  /vps, /vps/{sn}, /vps/{sn}/ips

A move submitted through ipMove is a task of the target dedicated server (listed under
/dedicated/server/{target}/task, function "ipMove"); one submitted through /ip/{ip}/move or
/ip/{ip}/park is a task of the block (/ip/{ip}/task, function "genericMoveFloatingIp" or
"parkFloatingIp"). Both kinds count for "one pending move per block".

Control routes (unsigned, outside /1.0)::

    GET    /_sim/state      routing of every block, every task with its current status
    GET    /_sim/audit      every mutation: seq, at, action, block, from, to, task_id, outcome
    GET    /_sim/requests   every API request: at (loop time), method, path, route, status
    GET    /_sim/faults     active faults            DELETE /_sim/faults   clear them
    POST   /_sim/faults     add one (body: a Fault as JSON, see inventory.Fault)
    POST   /_sim/routing    {"block", "to"}: change routing out of band (an operator's click)
    POST   /_sim/reset      back to the inventory's initial state

Tasks advance on a clock (the event loop's, unless one is given): a task's status is
computed from the time elapsed since its creation whenever anything looks at it, so a test
observes progress without background timers, and a fake clock can drive it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import hashlib
import hmac
import importlib.resources
import ipaddress
import itertools
import json
import logging
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from failoverd.errors import ConfigError, FailoverdError
from failoverd.policy import host_port
from failoverd.sim.inventory import (
    Fault,
    Inventory,
    SimBlock,
    SimServer,
    fault_from_dict,
    load_inventory,
)

__all__ = [
    "AuditEntry",
    "RequestRecord",
    "RunningSimulator",
    "SimState",
    "build_app",
    "main",
    "start_simulator",
]

_log = logging.getLogger(__name__)
Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TERMINAL = ("done", "cancelled", "customerError", "ovhError")
EU_WEST = frozenset({"eu-west-gra", "eu-west-rbx", "eu-west-sbg"})


def zones_compatible(block_region: str, server_region: str) -> bool:
    """A block moves within its region; GRA, RBX and SBG form one zone (SPEC §1)."""
    if block_region == server_region:
        return True
    return block_region in EU_WEST and server_region in EU_WEST


class ApiError(Exception):
    """An OVH-shaped error answer: the handler turns it into (status, JSON body)."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        self.status = status
        self.body = dict(body)
        super().__init__(str(body.get("message", "")))


def _client_error(status: int, cls: str, message: str) -> ApiError:
    return ApiError(status, {"class": cls, "message": message})


def _not_found(message: str) -> ApiError:
    return _client_error(404, "Client::NotFound", message)


def _bad_request(message: str, cls: str = "Client::BadRequest") -> ApiError:
    return _client_error(400, cls, message)


def _auth_error(status: int, code: str, message: str) -> ApiError:
    reason = {400: "Bad Request", 403: "Forbidden"}[status]
    return ApiError(
        status, {"errorCode": code, "httpCode": f"{status} {reason}", "message": message}
    )


@dataclass
class _Task:
    """A move (or park) task. Mutable inside SimState only; its status is a function of time."""

    task_id: int
    block: str
    origin: str  # "dedicated" (ipMove on the target) or "ip" (/ip/{ip}/move or park)
    function: str
    source: str | None
    target: str | None  # None: parking
    created: float  # clock time
    durations: tuple[float, float, float]
    final_status: str = "done"
    comment: str | None = None
    ended: bool = False  # its end has been applied (routing flipped, audit written)

    @property
    def end(self) -> float:
        return self.created + sum(self.durations)

    def status_at(self, now: float) -> str:
        elapsed = now - self.created
        init, todo, doing = self.durations
        if elapsed < init:
            return "init"
        if elapsed < init + todo:
            return "todo"
        if elapsed < init + todo + doing:
            return "doing"
        return self.final_status

    def last_change(self, now: float) -> float:
        """Clock time of the last status change at `now`."""
        init, todo, _ = self.durations
        boundaries = [self.created, self.created + init, self.created + init + todo, self.end]
        return max(b for b in boundaries if b <= now)


@dataclass(frozen=True)
class AuditEntry:
    """One mutation (or refused mutation) of the simulated world."""

    seq: int
    at: str  # ISO 8601, simulated wall clock
    action: str  # move | park | task_end | route | reset | fault_added | faults_cleared
    block: str | None = None
    from_: str | None = None
    to: str | None = None
    task_id: int | None = None
    outcome: str = ""  # accepted | refused: <message> | done | ovhError: <comment> | ...

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "action": self.action,
            "block": self.block,
            "from": self.from_,
            "to": self.to,
            "task_id": self.task_id,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class RequestRecord:
    """One request to the /1.0 API, as the simulator saw it."""

    at: float  # clock time
    method: str
    path: str  # raw path after /1.0, with the query string
    route: str  # template, e.g. /ip/{ip}/move; "" if no route matched
    status: int  # 0: the connection was reset
    application_key: str | None


@dataclass
class _ActiveFault:
    fault_id: int
    fault: Fault
    remaining: int | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.fault_id, **asdict(self.fault), "remaining": self.remaining}


@dataclass
class _Request:
    """What a handler needs from a request, parsed once by the dispatcher."""

    method: str
    path: str
    route: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    block: str | None = None  # the block the request is about, for fault scoping
    app_key: str | None = None


class SimState:
    """The simulated world. Tests may use it directly (in-process) next to the HTTP API.

    Public: routing(block), audit(), requests(), add_fault(fault) -> id, remove_fault(id),
    clear_faults(), faults(), set_routing(block, server), snapshot(), reset(), now().
    """

    def __init__(self, inventory: Inventory, clock: Clock) -> None:
        self.inventory = inventory
        self._clock = clock
        self._servers = {s.name: s for s in inventory.servers}
        self._blocks = {b.cidr: b for b in inventory.blocks}
        self._wall0 = datetime.now(UTC)
        self._clock0 = clock()
        self._fault_ids = itertools.count(1)
        self._task_ids = itertools.count(4_200_001)
        self._reset_world()

    def _reset_world(self) -> None:
        self._routing: dict[str, str | None] = {b.cidr: b.routed_to for b in self.inventory.blocks}
        self._tasks: dict[int, _Task] = {}
        self._faults: list[_ActiveFault] = [
            _ActiveFault(next(self._fault_ids), f, f.count) for f in self.inventory.faults
        ]
        self._audit: list[AuditEntry] = []
        # Bounded: `fake-api` may run for days; tests never come near the cap.
        self._requests: collections.deque[RequestRecord] = collections.deque(maxlen=100_000)
        self._admitted: dict[str, collections.deque[float]] = {}

    # --- time -------------------------------------------------------------------------

    def now(self) -> float:
        """The simulator's clock (the event loop's time unless a clock was given)."""
        return self._clock()

    def wall(self, at: float) -> datetime:
        return self._wall0 + timedelta(seconds=at - self._clock0)

    def iso(self, at: float | None) -> str | None:
        if at is None:
            return None
        return self.wall(at).isoformat(timespec="seconds")

    def settle(self) -> None:
        """Apply every task that has ended by now, in the order they ended."""
        now = self.now()
        due = sorted(
            (t for t in self._tasks.values() if not t.ended and t.end <= now),
            key=lambda t: (t.end, t.task_id),
        )
        for task in due:
            task.ended = True
            if task.final_status == "done":
                self._routing[task.block] = task.target
                outcome = "done"
            else:
                outcome = f"{task.final_status}: {task.comment or ''}".rstrip(": ")
            self._record(
                "task_end", task.block, task.source, task.target, task.task_id, outcome, at=task.end
            )

    # --- public, in-process -----------------------------------------------------------

    def routing(self, block: str) -> str | None:
        """The service `block` is routed to now (None: parked). KeyError if unknown."""
        self.settle()
        return self._routing[str(ipaddress.ip_network(block, strict=True))]

    def audit(self) -> list[dict[str, Any]]:
        """Every mutation so far, oldest first, as GET /_sim/audit returns it."""
        self.settle()
        return [e.as_json() for e in self._audit]

    def requests(self) -> list[RequestRecord]:
        """Every request to the API so far, oldest first."""
        return list(self._requests)

    def add_fault(self, fault: Fault) -> int:
        """Activate a fault; returns its id (for remove_fault)."""
        self.settle()  # keeps the audit in time order
        active = _ActiveFault(next(self._fault_ids), fault, fault.count)
        self._faults.append(active)
        self._record(
            "fault_added", fault.block, None, None, None, f"{fault.kind} #{active.fault_id}"
        )
        return active.fault_id

    def remove_fault(self, fault_id: int) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.fault_id != fault_id]
        return len(self._faults) < before

    def clear_faults(self) -> None:
        self.settle()
        self._faults.clear()
        self._record("faults_cleared", None, None, None, None, "")

    def faults(self) -> list[dict[str, Any]]:
        return [f.as_json() for f in self._faults]

    def set_routing(self, block: str, server: str | None) -> None:
        """Route `block` to `server` at once, as an operator clicking in the manager would."""
        self.settle()
        cidr = str(ipaddress.ip_network(block, strict=True))
        if cidr not in self._routing:
            raise KeyError(block)
        if server is not None and server not in self._servers:
            raise KeyError(server)
        before = self._routing[cidr]
        self._routing[cidr] = server
        self._record("route", cidr, before, server, None, "out of band")

    def snapshot(self) -> dict[str, Any]:
        """Routing of every block and every task, as GET /_sim/state returns it."""
        self.settle()
        now = self.now()
        return {
            "now": now,
            "routing": dict(self._routing),
            "tasks": [
                {
                    "taskId": t.task_id,
                    "block": t.block,
                    "origin": t.origin,
                    "function": t.function,
                    "from": t.source,
                    "to": t.target,
                    "status": t.status_at(now),
                    "comment": t.comment,
                }
                for t in self._tasks.values()
            ],
            "pending": [t.task_id for t in self._tasks.values() if not t.ended],
        }

    def reset(self) -> None:
        """Back to the inventory's initial routing and faults; no tasks, empty logs."""
        self._reset_world()
        self._record("reset", None, None, None, None, "")

    # --- internals used by the HTTP layer ---------------------------------------------

    def _record(
        self,
        action: str,
        block: str | None,
        source: str | None,
        target: str | None,
        task_id: int | None,
        outcome: str,
        *,
        at: float | None = None,
    ) -> None:
        when = self.iso(self.now() if at is None else at) or ""
        entry = AuditEntry(
            len(self._audit) + 1, when, action, block, source, target, task_id, outcome
        )
        self._audit.append(entry)
        # For whoever watches `failoverd fake-api`; silent unless logging is configured.
        _log.info("audit %s", json.dumps(entry.as_json()))

    def server(self, name: str) -> SimServer:
        server = self._servers.get(name)
        if server is None:
            raise _not_found(f"The requested object (serviceName = {name}) does not exist")
        return server

    def dedicated(self, name: str) -> SimServer:
        server = self._servers.get(name)
        if server is None or server.kind != "dedicated":
            raise _not_found(f"The requested object (serviceName = {name}) does not exist")
        return server

    def vps(self, name: str) -> SimServer:
        server = self._servers.get(name)
        if server is None or server.kind != "vps":
            raise _not_found(f"The requested object (serviceName = {name}) does not exist")
        return server

    def block(self, raw: str) -> SimBlock:
        """The block named by `raw` (CIDR or bare address for a /32), whole blocks only."""
        net = parse_block(raw)
        found = self._blocks.get(str(net))
        if found is not None:
            return found
        for cidr in self._blocks:
            other = ipaddress.ip_network(cidr)
            if other.version == net.version and net.overlaps(other):
                raise _bad_request(
                    f"{net} is not a whole block: it overlaps block {cidr}; "
                    "only whole blocks can be moved"
                )
        raise _not_found(f"The requested object (ip = {net}) does not exist")

    def pending_task(self, cidr: str) -> _Task | None:
        now = self.now()
        return next((t for t in self._tasks.values() if t.block == cidr and t.end > now), None)

    def check_move(self, block: SimBlock, target: SimServer) -> None:
        """Raise the ApiError OVH would answer if `block` cannot move to `target` now."""
        self.settle()
        net = ipaddress.ip_network(block.cidr)
        current = self._routing[block.cidr]
        if current == target.name:
            raise _bad_request(f"IP block {block.cidr} is already routed to {target.name}")
        if not zones_compatible(block.region, target.region):
            raise _bad_request(
                f"IP block {block.cidr} belongs to region {block.region} and cannot be "
                f"moved to {target.name} in region {target.region}"
            )
        if target.kind == "vps" and net.prefixlen != net.max_prefixlen:
            raise _bad_request(
                f"Only a single IP (/{net.max_prefixlen}) can be routed to a VPS; "
                f"{block.cidr} is a /{net.prefixlen}"
            )
        if block.vmacs and not target.vmac_supported:
            raise _bad_request(
                f"IP block {block.cidr} uses virtual MACs but {target.name} does not support "
                "virtual MACs"
            )
        if self._duplicate_vmac(block):
            raise _bad_request(
                f"IP block {block.cidr} has duplicate virtual MACs; remove them before moving it"
            )
        pending = self.pending_task(block.cidr)
        if pending is not None:
            raise _bad_request(
                f"A move task ({pending.task_id}) is already pending for IP block {block.cidr}",
                cls="Client::BadRequest::TaskAlreadyExists",
            )

    def _duplicate_vmac(self, block: SimBlock) -> bool:
        if len(set(block.vmacs)) != len(block.vmacs):
            return True
        others = {m for b in self._blocks.values() if b.cidr != block.cidr for m in b.vmacs}
        return any(m in others for m in block.vmacs)

    def move(self, block: SimBlock, target: SimServer, origin: str, function: str) -> _Task:
        """A move task if OVH would accept it; else the refusal is audited and raised."""
        try:
            self.check_move(block, target)
        except ApiError as exc:
            self.refused("move", block.cidr, target.name, str(exc))
            raise
        return self.submit(block, target, origin, function)

    def submit(
        self, block: SimBlock, target: SimServer | None, origin: str, function: str
    ) -> _Task:
        """Create a move (target) or park (None) task after the rules passed."""
        self.settle()
        d = self.inventory.task_durations
        task = _Task(
            task_id=next(self._task_ids),
            block=block.cidr,
            origin=origin,
            function=function,
            source=self._routing[block.cidr],
            target=target.name if target else None,
            created=self.now(),
            durations=(d.init, d.todo, d.doing),
        )
        fault = self.take_fault("task", method=None, paths=(), block=block.cidr)
        if fault is not None:
            task.final_status = fault.task_status
            task.comment = fault.comment or f"{fault.task_status} while moving {block.cidr}"
        self._tasks[task.task_id] = task
        action = "park" if target is None else "move"
        self._record(action, block.cidr, task.source, task.target, task.task_id, "accepted")
        return task

    def refused(self, action: str, block: str, target: str | None, message: str) -> None:
        self._record(action, block, self._routing.get(block), target, None, f"refused: {message}")

    def take_fault(
        self, kind: str | None, *, method: str | None, paths: tuple[str, ...], block: str | None
    ) -> Fault | None:
        """The first active fault matching, consuming one of its count. kind None: any but task."""
        for active in self._faults:
            f = active.fault
            if (kind is None and f.kind == "task") or (kind is not None and f.kind != kind):
                continue
            if f.method is not None and method is not None and f.method != method:
                continue
            if f.block is not None and f.block != block:
                continue
            if kind is None:
                if f.route is None:
                    if paths and paths[-1] == "/auth/time":
                        continue
                elif not any(fnmatch.fnmatchcase(p, f.route) for p in paths):
                    continue
            if active.remaining is not None:
                active.remaining -= 1
                if active.remaining <= 0:
                    self._faults.remove(active)
            return f
        return None

    def tasks_of(self, origin: str, owner: str) -> list[_Task]:
        """Tasks listed under a server (origin dedicated) or a block (origin ip)."""
        if origin == "dedicated":
            return [t for t in self._tasks.values() if t.origin == origin and t.target == owner]
        return [t for t in self._tasks.values() if t.origin == origin and t.block == owner]

    def log_request(self, record: RequestRecord) -> None:
        self._requests.append(record)

    def admit(self, consumer_key: str) -> None:
        """Enforce the inventory's fair-use limit per consumer key (429 beyond it)."""
        limit = self.inventory.rate_limit
        if limit <= 0:
            return
        now = self.now()
        window = self._admitted.setdefault(consumer_key, collections.deque())
        while window and window[0] <= now - self.inventory.rate_window:
            window.popleft()
        if len(window) >= limit:
            raise _client_error(
                429, "Client::TooManyRequests", "Too many requests, please retry later"
            )
        window.append(now)

    def credentials(self, app_key: str) -> list[tuple[str, str]]:
        return [
            (c.application_secret, c.consumer_key)
            for c in self.inventory.credentials
            if c.application_key == app_key
        ]

    def current_routing(self, cidr: str) -> str | None:
        self.settle()
        return self._routing[cidr]


def parse_block(raw: str) -> Network:
    """A block from a path or body value; a bare address is its /32 (or /128)."""
    try:
        return ipaddress.ip_network(raw.strip(), strict=True)
    except ValueError as exc:
        raise _bad_request(f"[ip] Given data ({raw}) is not valid for type ipBlock") from exc


# --- the HTTP layer ------------------------------------------------------------------------

Handler = Callable[[SimState, _Request], Any]
_ROUTES: list[tuple[str, tuple[str, ...], Handler]] = []


def _route(method: str, template: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _ROUTES.append((method, tuple(template.strip("/").split("/")), fn))
        return fn

    return register


def _match(segments: list[str]) -> tuple[list[tuple[str, Handler]], dict[str, str], str]:
    """Handlers by method for the raw path segments, their parameters and the template."""
    for _method, pattern, _fn in _ROUTES:
        if len(pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = unquote(got)
            elif want != got:
                break
        else:
            template = "/" + "/".join(pattern)
            methods = [(m, fn) for m, p, fn in _ROUTES if p == pattern]
            return methods, params, template
    return [], {}, ""


def _dedicated_task_json(state: SimState, task: _Task) -> dict[str, Any]:
    now = state.now()
    status = task.status_at(now)
    return {
        "taskId": task.task_id,
        "function": task.function,
        "status": status,
        "comment": task.comment,
        "startDate": state.iso(task.created),
        "doneDate": state.iso(task.end) if status in TERMINAL else None,
        "lastUpdate": state.iso(task.last_change(now)),
    }


def _ip_task_json(state: SimState, task: _Task) -> dict[str, Any]:
    data = _dedicated_task_json(state, task)
    data["destination"] = {"serviceName": task.target} if task.target else None
    return data


def _visible(state: SimState, task: _Task, lag: float) -> bool:
    return state.now() - task.created >= lag


def _filter_tasks(state: SimState, tasks: list[_Task], query: Mapping[str, str]) -> list[int]:
    now = state.now()
    lag = state.inventory.listing_lag
    return [
        t.task_id
        for t in tasks
        if _visible(state, t, lag)
        and query.get("function", t.function) == t.function
        and query.get("status", t.status_at(now)) == t.status_at(now)
    ]


def _one_task(state: SimState, tasks: list[_Task], raw_id: str) -> _Task:
    try:
        task_id = int(raw_id)
    except ValueError:
        raise _bad_request(f"[taskId] Given data ({raw_id}) is not valid for type long") from None
    task = next((t for t in tasks if t.task_id == task_id), None)
    if task is None or not _visible(state, task, state.inventory.task_read_lag):
        raise _not_found(f"The requested object (taskId = {raw_id}) does not exist")
    return task


@_route("GET", "/auth/time")
def _auth_time(state: SimState, req: _Request) -> Any:
    return int(time.time())


@_route("GET", "/dedicated/server")
def _servers(state: SimState, req: _Request) -> Any:
    return [s.name for s in state.inventory.servers if s.kind == "dedicated"]


@_route("GET", "/dedicated/server/{sn}")
def _server(state: SimState, req: _Request) -> Any:
    s = state.dedicated(req.params["sn"])
    index = state.inventory.servers.index(s)
    return {
        "name": s.name,
        "serverId": 100_000 + index,
        "ip": s.ip,
        "reverse": s.name,
        "datacenter": s.datacenter.lower(),
        "region": s.region,
        "availabilityZone": f"{s.region}-a",
        "state": "ok",
        "powerState": "poweron",
        "commercialRange": "advance-1",
        "os": "debian12_64",
        "rack": f"{s.datacenter.upper()}-R{index:02d}",
        "linkSpeed": 1000,
        "monitoring": True,
        "noIntervention": False,
        "professionalUse": False,
        "supportLevel": "pro",
        "bootId": 1,
        "rootDevice": None,
        "rescueMail": None,
        "newUpgradeSystem": True,
    }


@_route("GET", "/dedicated/server/{sn}/specifications/network")
def _network(state: SimState, req: _Request) -> Any:
    s = state.dedicated(req.params["sn"])
    return {
        "bandwidth": {
            "InternetToOvh": {"unit": "Mbps", "value": 1000},
            "OvhToInternet": {"unit": "Mbps", "value": 1000},
            "OvhToOvh": {"unit": "Mbps", "value": 1000},
            "type": "included",
        },
        "connection": {"unit": "Mbps", "value": 1000},
        "routing": {
            "ipv4": {"gateway": s.ip.rsplit(".", 1)[0] + ".254", "ip": s.ip, "network": None},
            "ipv6": None,
        },
        "switching": {"name": f"{s.datacenter.lower()}-sw"},
        "traffic": {"isThrottled": False, "inputQuotaSize": None, "outputQuotaSize": None},
        "vmac": {"supported": s.vmac_supported, "quota": 0},
        "vrack": {"type": "included", "bandwidth": {"unit": "Mbps", "value": 1000}},
        "ola": {"available": False},
    }


@_route("GET", "/dedicated/server/{sn}/ipCanBeMovedTo")
def _can_move(state: SimState, req: _Request) -> Any:
    target = state.dedicated(req.params["sn"])
    if "ip" not in req.query:
        raise _bad_request("[ip] Property is mandatory")
    state.check_move(state.block(req.query["ip"]), target)
    return None


@_route("POST", "/dedicated/server/{sn}/ipMove")
def _ip_move(state: SimState, req: _Request) -> Any:
    target = state.dedicated(req.params["sn"])
    raw = req.body.get("ip") if isinstance(req.body, dict) else None
    if not isinstance(raw, str):
        raise _bad_request("[ip] Property is mandatory")
    task = state.move(state.block(raw), target, "dedicated", "ipMove")
    return _dedicated_task_json(state, task)


@_route("GET", "/dedicated/server/{sn}/task")
def _server_tasks(state: SimState, req: _Request) -> Any:
    s = state.dedicated(req.params["sn"])
    return _filter_tasks(state, state.tasks_of("dedicated", s.name), req.query)


@_route("GET", "/dedicated/server/{sn}/task/{id}")
def _server_task(state: SimState, req: _Request) -> Any:
    s = state.dedicated(req.params["sn"])
    return _dedicated_task_json(
        state, _one_task(state, state.tasks_of("dedicated", s.name), req.params["id"])
    )


@_route("GET", "/ip")
def _ips(state: SimState, req: _Request) -> Any:
    state.settle()
    wanted_type = req.query.get("type")
    routed = req.query.get("routedTo.serviceName")
    return [
        b.cidr
        for b in state.inventory.blocks
        if wanted_type in (None, "failover")
        and (routed is None or state.current_routing(b.cidr) == routed)
    ]


@_route("GET", "/ip/{ip}")
def _ip(state: SimState, req: _Request) -> Any:
    b = state.block(req.params["ip"])
    routed = state.current_routing(b.cidr)
    return {
        "ip": b.cidr,
        "type": "failover",
        "routedTo": {"serviceName": routed} if routed else None,
        "regions": [b.region],
        "campus": b.region.rsplit("-", 1)[-1].upper(),
        "country": "ca" if b.region.startswith("ca-") else "fr",
        "canBeTerminated": True,
        "isAdditionalIp": True,
        "description": None,
        "organisationId": None,
        "rir": "RIPE",
    }


@_route("GET", "/ip/{ip}/move")
def _destinations(state: SimState, req: _Request) -> Any:
    b = state.block(req.params["ip"])
    result: dict[str, list[dict[str, Any]]] = {
        "cloudProject": [],
        "dedicatedCloud": [],
        "dedicatedServer": [],
        "hostingReseller": [],
        "ipLoadbalancing": [],
        "vps": [],
    }
    for s in state.inventory.servers:
        try:
            state.check_move(b, s)
        except ApiError:
            continue
        family = "dedicatedServer" if s.kind == "dedicated" else "vps"
        result[family].append({"service": s.name, "nexthop": [s.ip] if s.kind == "vps" else None})
    return result


@_route("POST", "/ip/{ip}/move")
def _generic_move(state: SimState, req: _Request) -> Any:
    b = state.block(req.params["ip"])
    to = req.body.get("to") if isinstance(req.body, dict) else None
    if not isinstance(to, str) or not to:
        raise _bad_request("[to] Property is mandatory")
    return _ip_task_json(state, state.move(b, state.server(to), "ip", "genericMoveFloatingIp"))


@_route("POST", "/ip/{ip}/park")
def _park(state: SimState, req: _Request) -> Any:
    b = state.block(req.params["ip"])
    if state.current_routing(b.cidr) is None:
        raise _bad_request(f"IP block {b.cidr} is already parked")
    pending = state.pending_task(b.cidr)
    if pending is not None:
        message = f"A move task ({pending.task_id}) is already pending for IP block {b.cidr}"
        state.refused("park", b.cidr, None, message)
        raise _bad_request(message, cls="Client::BadRequest::TaskAlreadyExists")
    return _ip_task_json(state, state.submit(b, None, "ip", "parkFloatingIp"))


@_route("GET", "/ip/{ip}/task")
def _ip_tasks(state: SimState, req: _Request) -> Any:
    b = state.block(req.params["ip"])
    return _filter_tasks(state, state.tasks_of("ip", b.cidr), req.query)


@_route("GET", "/ip/{ip}/task/{id}")
def _ip_task(state: SimState, req: _Request) -> Any:
    b = state.block(req.params["ip"])
    return _ip_task_json(state, _one_task(state, state.tasks_of("ip", b.cidr), req.params["id"]))


@_route("GET", "/vps")
def _vpses(state: SimState, req: _Request) -> Any:
    return [s.name for s in state.inventory.servers if s.kind == "vps"]


@_route("GET", "/vps/{sn}")
def _vps(state: SimState, req: _Request) -> Any:
    s = state.vps(req.params["sn"])
    return {
        "name": s.name,
        "displayName": s.name,
        "zone": f"Region OpenStack: os-{s.datacenter.lower() or s.region}",
        "state": "running",
        "model": {"name": "vps-2024-le-2", "offer": "VPS Value", "version": "2019v1"},
        "memoryLimit": 2048,
        "vcore": 1,
        "netbootMode": "local",
        "offerType": "ssd",
        "cluster": f"{s.datacenter.lower()}-vps",
        "keymap": None,
        "monitoringIpBlocks": [],
        "slaMonitoring": False,
        "iam": {"urn": f"urn:v1:eu:resource:vps:{s.name}"},
    }


@_route("GET", "/vps/{sn}/ips")
def _vps_ips(state: SimState, req: _Request) -> Any:
    s = state.vps(req.params["sn"])
    state.settle()
    blocks = [
        b.cidr.split("/")[0]
        for b in state.inventory.blocks
        if state.current_routing(b.cidr) == s.name
    ]
    return [s.ip, *blocks]


def _json_response(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


_ERROR_CLASSES = {
    400: "Client::BadRequest",
    403: "Client::Forbidden",
    404: "Client::NotFound",
    409: "Client::Conflict",
    429: "Client::TooManyRequests",
    500: "Server::InternalServerError",
    503: "Server::ServiceUnavailable",
}
_ERROR_MESSAGES = {
    400: "Bad request",
    403: "This call has not been granted",
    404: "The requested object does not exist",
    409: "Conflict",
    429: "Too many requests, slow down",
    503: "This service is temporarily unavailable",
}


def _fault_response(fault: Fault) -> web.Response:
    if fault.kind == "error":
        cls = _ERROR_CLASSES.get(
            fault.status,
            "Server::InternalServerError" if fault.status >= 500 else "Client::BadRequest",
        )
        message = fault.message or _ERROR_MESSAGES.get(fault.status, "Internal server error")
        response = _json_response(fault.status, {"class": cls, "message": message})
        if fault.status == 429:
            response.headers["Retry-After"] = "1"
        return response
    if fault.kind == "html":
        page = (
            "<html><head><title>502 Bad Gateway</title></head><body>"
            "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
            "</body></html>"
        )
        return web.Response(status=fault.status or 502, text=page, content_type="text/html")
    return web.Response(status=200, body=b"", content_type="application/json")  # empty


def _reset_connection(request: web.Request) -> None:
    """Close the client's connection with a TCP RST (SO_LINGER 0), answering nothing."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _verify_signature(state: SimState, request: web.Request, method: str, body: str) -> str:
    """Check OVH's request signature; returns the application key. Raises ApiError."""
    app_key = request.headers.get("X-Ovh-Application")
    if not app_key:
        raise _auth_error(403, "INVALID_KEY", "Invalid application key")
    candidates = state.credentials(app_key)
    if not candidates:
        raise _auth_error(403, "INVALID_KEY", "This application key is invalid")
    consumer = request.headers.get("X-Ovh-Consumer")
    if not consumer:
        raise _auth_error(403, "NOT_CREDENTIAL", "You must login first")
    secrets = [secret for secret, ck in candidates if hmac.compare_digest(ck, consumer)]
    if not secrets:
        raise _auth_error(403, "INVALID_CREDENTIAL", "This credential does not exist")
    raw_ts = request.headers.get("X-Ovh-Timestamp", "")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise _auth_error(400, "QUERY_TIME_OUT", "Query out of time") from None
    if abs(time.time() - timestamp) > state.inventory.max_time_skew:
        raise _auth_error(400, "QUERY_TIME_OUT", "Query out of time")
    # The signed URL is the one the client built: scheme, Host header, raw path and query.
    url = f"{request.scheme}://{request.host}{request.raw_path}"
    payload = "+".join([secrets[0], consumer, method, url, body, raw_ts])
    expected = "$1$" + hashlib.sha1(payload.encode("utf-8")).hexdigest()  # noqa: S324 - OVH's scheme
    if not hmac.compare_digest(expected, request.headers.get("X-Ovh-Signature", "")):
        raise _auth_error(400, "INVALID_SIGNATURE", "Invalid signature")
    return app_key


def _block_of(params: Mapping[str, str], query: Mapping[str, str], body: Any) -> str | None:
    raw = params.get("ip") or query.get("ip")
    if raw is None and isinstance(body, dict) and isinstance(body.get("ip"), str):
        raw = body["ip"]
    if raw is None:
        return None
    try:
        return str(ipaddress.ip_network(raw, strict=True))
    except ValueError:
        return None


async def _api(state: SimState, request: web.Request, tail: str) -> web.StreamResponse:
    method = request.method.upper()
    path_only, _, query_string = tail.partition("?")
    segments = path_only.strip("/").split("/")
    handlers, params, template = _match(segments)
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    raw_body = await request.read()
    text = raw_body.decode("utf-8", errors="replace")
    body: Any = None
    if text:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
    block = _block_of(params, query, body)
    decoded = unquote(path_only)
    paths = tuple(p for p in (tail, path_only, decoded, template) if p)

    def record(status: int, app: str | None) -> None:
        state.log_request(RequestRecord(state.now(), method, tail, template, status, app))

    fault = state.take_fault(None, method=method, paths=paths, block=block)
    if fault is not None:
        if fault.delay:
            await asyncio.sleep(fault.delay)  # the simulated slowness itself, not a sync wait
        if fault.kind == "reset":
            record(0, request.headers.get("X-Ovh-Application"))
            _reset_connection(request)
            raise asyncio.CancelledError  # nothing more to send on a reset connection
        if fault.kind != "slow":
            response = _fault_response(fault)
            record(response.status, request.headers.get("X-Ovh-Application"))
            return response

    app_key: str | None = None
    try:
        handler = next((fn for m, fn in handlers if m == method), None)
        if not handlers:
            raise _not_found("Got an invalid (or empty) URL")
        if handler is None:
            raise ApiError(
                405,
                {
                    "class": "Client::MethodNotAllowed",
                    "message": "Received not described HTTP method",
                },
            )
        if template != "/auth/time":
            app_key = _verify_signature(state, request, method, text)
            state.admit(request.headers.get("X-Ovh-Consumer", ""))
        if method == "POST" and text and body is None:
            raise _bad_request("Invalid JSON received")
        req = _Request(method, tail, template, params, query, body, block, app_key)
        result = handler(state, req)
        status = 200
        response = _json_response(status, result)
    except ApiError as exc:
        response = _json_response(exc.status, exc.body)
    record(response.status, app_key or request.headers.get("X-Ovh-Application"))
    return response


async def _control(state: SimState, request: web.Request, tail: str) -> web.StreamResponse:
    method = request.method.upper()
    name = tail.strip("/").split("?")[0]
    try:
        body: Any = await request.json() if request.can_read_body else None
    except ValueError:
        return _json_response(400, {"message": "invalid JSON body"})
    if (method, name) == ("GET", "state"):
        return _json_response(200, state.snapshot())
    if (method, name) == ("GET", "audit"):
        return _json_response(200, state.audit())
    if (method, name) == ("GET", "requests"):
        return _json_response(200, [asdict(r) for r in state.requests()])
    if (method, name) == ("GET", "faults"):
        return _json_response(200, state.faults())
    if (method, name) == ("DELETE", "faults"):
        state.clear_faults()
        return _json_response(200, state.faults())
    if (method, name) == ("POST", "faults"):
        try:
            fault = fault_from_dict(body if isinstance(body, dict) else {})
        except ConfigError as exc:
            return _json_response(400, {"message": str(exc)})
        return _json_response(200, {"id": state.add_fault(fault)})
    if (method, name) == ("POST", "routing"):
        if not isinstance(body, dict) or not isinstance(body.get("block"), str):
            return _json_response(400, {"message": 'expected {"block": CIDR, "to": name|null}'})
        try:
            state.set_routing(body["block"], body.get("to") or None)
        except (KeyError, ValueError) as exc:
            return _json_response(404, {"message": f"unknown block or server: {exc}"})
        return _json_response(200, state.snapshot()["routing"])
    if (method, name) == ("POST", "reset"):
        state.reset()
        return _json_response(200, state.snapshot())
    return _json_response(404, {"message": f"no control route {method} /_sim/{name}"})


def build_app(state: SimState) -> web.Application:
    """The aiohttp application serving `state`. Routing is ours, on the raw path."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        try:
            if raw.startswith("/1.0/"):
                response = await _api(state, request, raw[len("/1.0") :])
            elif raw.startswith("/_sim/"):
                response = await _control(state, request, raw[len("/_sim") :])
            else:
                response = _json_response(404, {"message": "Got an invalid (or empty) URL"})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a simulator bug: answer like OVH's 500, keep serving
            _log.exception("simulator bug handling %s %s", request.method, raw)
            response = _json_response(
                500, {"class": "Server::InternalServerError", "message": f"simulator bug: {exc!r}"}
            )
        response.headers["X-Ovh-Queryid"] = f"EU.sim-{uuid.uuid4().hex[:8]}.{uuid.uuid4().hex}"
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


class RunningSimulator:
    """A simulator serving on a loopback port.

    base_url: "http://HOST:PORT/1.0" (register it in ovh.client.ENDPOINTS)
    port: the bound port; state: the SimState (in-process access); close(): stop serving.
    """

    def __init__(self, runner: web.AppRunner, state: SimState, host: str, port: int) -> None:
        self._runner = runner
        self.state = state
        self.host = host
        self.port = port
        self.root_url = f"http://{host_port(host, port)}"
        self.base_url = f"{self.root_url}/1.0"
        self.endpoint_name = f"failoverd-sim-{port}"

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_simulator(
    inventory: Inventory,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    access_log: logging.Logger | None = None,
) -> RunningSimulator:
    """Serve `inventory` on host:port (0: any free port, read back from .port).

    `clock` (default: the running loop's time) drives task lifecycles; a test can pass its
    own to step time instead of waiting. `access_log`: one line per request (off in tests).
    """
    state = SimState(inventory, clock or asyncio.get_running_loop().time)
    # A short shutdown timeout: close() must not wait for a deliberately slow answer.
    runner = web.AppRunner(
        build_app(state),
        access_log=access_log,
        access_log_format='%a "%r" %s %Tfs',
        shutdown_timeout=0.2,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise FailoverdError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    bound = runner.addresses[0][1]
    return RunningSimulator(runner, state, host, int(bound))


# --- `failoverd fake-api` ------------------------------------------------------------------


def default_inventory() -> Inventory:
    """The inventory shipped in the package (the same as config/sim/example.yaml)."""
    resource = importlib.resources.files("failoverd.sim").joinpath("default_inventory.yaml")
    with importlib.resources.as_file(resource) as path:
        return load_inventory(Path(path))


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) → (host, port); FailoverdError if malformed."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise FailoverdError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8999")
    return host, int(port_text)


async def _serve(inventory: Inventory, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # handlers only set the event (STYLE #6)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    sim = await start_simulator(inventory, host, port, access_log=logging.getLogger("fake-api"))
    creds = inventory.credentials[0]
    print(
        f"failoverd fake-api: OVH API simulator listening on {sim.base_url}\n"
        f"  servers: {len(inventory.servers)}, blocks: {len(inventory.blocks)}\n"
        f"  control: {sim.root_url}/_sim/state, /_sim/audit, /_sim/faults\n"
        f"  point failoverd at it with api.endpoint: {sim.base_url}\n"
        f"  and these (simulator-only) credentials:\n"
        f"    export OVH_APPLICATION_KEY={creds.application_key}\n"
        f"    export OVH_APPLICATION_SECRET={creds.application_secret}\n"
        f"    export OVH_CONSUMER_KEY={creds.consumer_key}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await sim.close()
        print("failoverd fake-api: stopped", flush=True)


def main(inventory: Path | None, listen: str) -> int:
    """`failoverd fake-api`: serve until SIGINT/SIGTERM; exit 0. Errors are FailoverdError."""
    host, port = parse_listen(listen)
    inv = load_inventory(inventory) if inventory is not None else default_inventory()
    asyncio.run(_serve(inv, host, port))
    return 0
