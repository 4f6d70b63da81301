"""The simulator's inventory: which servers and blocks exist, who may call, how slow tasks are.

An inventory is a YAML file (or a plain mapping, for tests) parsed once into frozen values::

    servers:
      - {name: ns1001.ip-51-68-100.eu, kind: dedicated, region: eu-west-gra,
         datacenter: GRA2, ip: 51.68.100.10, vmac_supported: true}
      - {name: vps-1a2b3c4d.vps.ovh.net, kind: vps, region: eu-west-sbg, ip: 51.68.102.20}
    blocks:
      - {cidr: 203.0.113.8/29, routed_to: ns1001.ip-51-68-100.eu, vmacs: []}
    credentials:
      - {application_key: demo-app-key, application_secret: demo-app-secret,
         consumer_key: demo-consumer-key}
    task_durations: {init: 0.2, todo: 0.3, doing: 0.5}   # seconds (or "500ms", "2s")
    listing_lag: 0        # a new task is missing from task listings this long
    task_read_lag: 0      # a new task answers 404 to GET .../task/{id} this long
    max_time_skew: 180    # a signed request whose timestamp is further off is refused
    rate_limit: {requests: 60, window: 60}   # fair use per consumer key (429); default off
    faults:               # active from the start; same shape as POST /_sim/faults
      - {kind: error, status: 503, route: "/ip/*", count: 2}

Every problem is reported at once as a ConfigError, each with its file:line when the
inventory came from a file. Only this module (besides failoverd.config) imports yaml.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from failoverd.errors import ConfigError, FailoverdError, Problem

ServerKind = Literal["dedicated", "vps"]
FaultKind = Literal["error", "html", "empty", "slow", "reset", "task"]
FAULT_KINDS: tuple[str, ...] = ("error", "html", "empty", "slow", "reset", "task")
TASK_ERROR_STATES: tuple[str, ...] = ("ovhError", "customerError", "cancelled")


@dataclass(frozen=True)
class SimServer:
    """A service blocks can be routed to: a dedicated server or a VPS."""

    name: str
    kind: ServerKind
    region: str
    datacenter: str
    ip: str
    vmac_supported: bool = False


@dataclass(frozen=True)
class SimBlock:
    """An Additional IP block. `region` defaults to the region of the server it starts on.

    `vmacs` are the virtual MACs its IPs carry: a block with any needs a destination that
    supports vMACs, and one whose vMACs are duplicated (listed twice, or shared with another
    block) cannot move at all.
    """

    cidr: str
    routed_to: str | None
    vmacs: tuple[str, ...] = ()
    region: str = ""


@dataclass(frozen=True)
class Credentials:
    """One accepted (application key, application secret, consumer key) triple."""

    application_key: str
    application_secret: str
    consumer_key: str


@dataclass(frozen=True)
class TaskDurations:
    """Seconds a move task spends in init, todo and doing before it ends."""

    init: float = 0.0
    todo: float = 0.0
    doing: float = 0.0

    @property
    def total(self) -> float:
        return self.init + self.todo + self.doing


@dataclass(frozen=True)
class Fault:
    """A fault to inject. Scope fields left as None match everything.

    kind:
      error  answer `status` (500, 503, 429, ...) with an OVH-shaped JSON error body
      html   answer `status` (default 502) with an HTML page, as a broken proxy does
      empty  answer 200 with an empty body
      slow   wait `delay` seconds, then answer normally
      reset  reset the TCP connection without answering
      task   the next move task created ends in `task_status` with `comment`
    `delay` also applies before the other kinds. `route` is an fnmatch pattern matched
    against the path after /1.0 both raw (/ip/203.0.113.8%2F29/move), decoded and as a
    template (/ip/{ip}/move); None matches every route except /auth/time. `block` limits
    the fault to requests about that block (path, ?ip= or body). `count` is "the next N
    matching requests" (or tasks); None means until cleared. A task fault is scoped by
    `block` and `count` only: it applies to the next move task(s) created, whatever route
    created them.
    """

    kind: FaultKind
    status: int = 0
    delay: float = 0.0
    route: str | None = None
    method: str | None = None
    block: str | None = None
    count: int | None = None
    task_status: str = "ovhError"
    comment: str = ""
    message: str = ""


@dataclass(frozen=True)
class Inventory:
    """Everything the simulator starts from. Build with load_inventory/inventory_from_dict."""

    servers: tuple[SimServer, ...]
    blocks: tuple[SimBlock, ...]
    credentials: tuple[Credentials, ...]
    task_durations: TaskDurations = field(default_factory=TaskDurations)
    listing_lag: float = 0.0
    faults: tuple[Fault, ...] = ()
    task_read_lag: float = 0.0
    max_time_skew: float = 180.0
    rate_limit: int = 0  # signed requests per consumer key per rate_window; 0: unlimited
    rate_window: float = 60.0

    def server(self, name: str) -> SimServer | None:
        return next((s for s in self.servers if s.name == name), None)


# --- parsing ---------------------------------------------------------------------------

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_TOP_KEYS = (
    "servers",
    "blocks",
    "credentials",
    "task_durations",
    "listing_lag",
    "task_read_lag",
    "max_time_skew",
    "rate_limit",
    "faults",
)


class _Lines(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each of its keys."""

    line = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """Safe loading, keeping line numbers so every problem can say where it is."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Lines:
    loader.flatten_mapping(node)
    result = _Lines()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[str(key)] = loader.construct_object(value_node, deep=True)
        result.key_lines[str(key)] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, where: object, key: str | None, path: str, message: str) -> None:
        line = 0
        if isinstance(where, _Lines):
            line = where.key_lines.get(key, where.line) if key is not None else where.line
        self.problems.append(Problem(self.file, line, path, message))


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string with a unit (ms, s, m); None if not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str) and (m := _DURATION.match(value)):
        factor = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
        return float(m.group(1)) * factor
    return None


def _mapping(
    c: _Collector, value: object, parent: object, key: str, path: str
) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return cast(Mapping[str, Any], value)
    c.add(parent, key, path, "must be a mapping")
    return {}


def _unknown_keys(
    c: _Collector, data: Mapping[str, Any], known: tuple[str, ...], path: str
) -> None:
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            c.add(data, str(key), where, f"unknown key (expected one of: {', '.join(known)})")


def _str(c: _Collector, data: Mapping[str, Any], key: str, path: str, *, required: bool) -> str:
    value = data.get(key)
    if value is None:
        if required:
            c.add(data, None, f"{path}.{key}", "is required")
        return ""
    if not isinstance(value, str) or not value:
        c.add(data, key, f"{path}.{key}", "must be a non-empty string")
        return ""
    return value


def parse_fault(c: _Collector, raw: object, parent: object, key: str, path: str) -> Fault | None:
    data = _mapping(c, raw, parent, key, path)
    if not data:
        return None
    before = len(c.problems)
    known = tuple(Fault.__dataclass_fields__)
    _unknown_keys(c, data, known, path)
    kind = data.get("kind")
    if kind not in FAULT_KINDS:
        c.add(data, "kind", f"{path}.kind", f"must be one of: {', '.join(FAULT_KINDS)}")
    status = data.get("status", 502 if kind == "html" else 0)
    if (
        not isinstance(status, int)
        or isinstance(status, bool)
        or not (status == 0 or 200 <= status <= 599)
    ):
        c.add(data, "status", f"{path}.status", "must be an HTTP status code")
        status = 0
    if kind == "error" and not status:
        c.add(data, None, f"{path}.status", "is required for an error fault (e.g. 503)")
    delay = parse_duration(data.get("delay", 0))
    if delay is None:
        c.add(data, "delay", f"{path}.delay", "must be a duration (seconds, or '500ms')")
        delay = 0.0
    if kind == "slow" and not delay:
        c.add(data, None, f"{path}.delay", "is required for a slow fault")
    count = data.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        c.add(data, "count", f"{path}.count", "must be a positive integer")
        count = None
    task_status = data.get("task_status", "ovhError")
    if task_status not in TASK_ERROR_STATES:
        c.add(
            data,
            "task_status",
            f"{path}.task_status",
            f"must be one of: {', '.join(TASK_ERROR_STATES)}",
        )
    block = data.get("block")
    if block is not None:
        try:
            block = str(ipaddress.ip_network(str(block), strict=True))
        except ValueError:
            c.add(data, "block", f"{path}.block", f"{block!r} is not a valid block")
    strings = {}
    for name in ("route", "method", "comment", "message"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            c.add(data, name, f"{path}.{name}", "must be a string")
            value = None
        strings[name] = value
    if len(c.problems) > before:
        return None
    method = strings["method"]
    return Fault(
        kind=cast(FaultKind, kind),
        status=status,
        delay=delay,
        route=strings["route"],
        method=method.upper() if method else None,
        block=block,
        count=count,
        task_status=str(task_status),
        comment=strings["comment"] or "",
        message=strings["message"] or "",
    )


def fault_from_dict(data: Mapping[str, Any]) -> Fault:
    """One fault from a mapping (the body of POST /_sim/faults); ConfigError if invalid."""
    c = _Collector("fault")
    fault = parse_fault(c, data, None, "fault", "fault")
    if c.problems or fault is None:
        raise ConfigError(c.problems or [Problem("fault", 0, "fault", "must not be empty")])
    return fault


def _parse(data: object, file: str) -> Inventory:
    c = _Collector(file)
    top = _mapping(c, data, None, "", "inventory")
    _unknown_keys(c, top, _TOP_KEYS, "")

    servers: list[SimServer] = []
    raw_servers = top.get("servers")
    if not isinstance(raw_servers, list) or not raw_servers:
        c.add(top, "servers", "servers", "must be a non-empty list")
        raw_servers = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_servers):
        path = f"servers[{i}]"
        s = _mapping(c, raw, top, "servers", path)
        if not s:
            continue
        _unknown_keys(c, s, tuple(SimServer.__dataclass_fields__), path)
        name = _str(c, s, "name", path, required=True)
        kind = s.get("kind")
        if kind not in ("dedicated", "vps"):
            c.add(s, "kind", f"{path}.kind", "must be dedicated or vps")
        region = _str(c, s, "region", path, required=True)
        datacenter = _str(c, s, "datacenter", path, required=False)
        ip = _str(c, s, "ip", path, required=True)
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                c.add(s, "ip", f"{path}.ip", f"{ip!r} is not an IP address")
        vmac = s.get("vmac_supported", False)
        if not isinstance(vmac, bool):
            c.add(s, "vmac_supported", f"{path}.vmac_supported", "must be true or false")
        if name in seen:
            c.add(s, "name", f"{path}.name", f"server {name} is defined twice")
        seen.add(name)
        servers.append(
            SimServer(name, cast(ServerKind, kind), region, datacenter, ip, vmac is True)
        )
    by_name = {s.name: s for s in servers}

    blocks: list[SimBlock] = []
    networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    raw_blocks = top.get("blocks", [])
    if not isinstance(raw_blocks, list):
        c.add(top, "blocks", "blocks", "must be a list")
        raw_blocks = []
    for i, raw in enumerate(raw_blocks):
        path = f"blocks[{i}]"
        b = _mapping(c, raw, top, "blocks", path)
        if not b:
            continue
        _unknown_keys(c, b, tuple(SimBlock.__dataclass_fields__), path)
        cidr = _str(c, b, "cidr", path, required=True)
        if cidr:
            try:
                net = ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                c.add(b, "cidr", f"{path}.cidr", f"{cidr!r} is not a valid block ({exc})")
            else:
                cidr = str(net)
                for other, other_cidr in networks:
                    if net.version == other.version and net.overlaps(other):
                        c.add(b, "cidr", f"{path}.cidr", f"overlaps block {other_cidr}")
                networks.append((net, cidr))
        routed_to = b.get("routed_to")
        bad_routing = False
        if routed_to in ("", None):
            routed_to = None
        elif not isinstance(routed_to, str) or routed_to not in by_name:
            c.add(b, "routed_to", f"{path}.routed_to", f"unknown server {routed_to!r}")
            routed_to, bad_routing = None, True
        vmacs_raw = b.get("vmacs", [])
        vmacs: list[str] = []
        if not isinstance(vmacs_raw, list):
            c.add(b, "vmacs", f"{path}.vmacs", "must be a list of MAC addresses")
        else:
            for mac in vmacs_raw:
                if not isinstance(mac, str) or not _MAC.match(mac):
                    c.add(b, "vmacs", f"{path}.vmacs", f"{mac!r} is not a MAC address")
                else:
                    vmacs.append(mac.lower())
        region = _str(c, b, "region", path, required=False)
        if not region and routed_to is not None:
            region = by_name[routed_to].region
        if not region and "region" not in b and cidr and not bad_routing:
            c.add(b, None, f"{path}.region", "is required for a block that is parked")
        blocks.append(SimBlock(cidr, routed_to, tuple(vmacs), region))

    creds: list[Credentials] = []
    raw_creds = top.get("credentials")
    if not isinstance(raw_creds, list) or not raw_creds:
        c.add(top, "credentials", "credentials", "must be a non-empty list")
        raw_creds = []
    for i, raw in enumerate(raw_creds):
        path = f"credentials[{i}]"
        cr = _mapping(c, raw, top, "credentials", path)
        if not cr:
            continue
        _unknown_keys(c, cr, tuple(Credentials.__dataclass_fields__), path)
        creds.append(
            Credentials(
                _str(c, cr, "application_key", path, required=True),
                _str(c, cr, "application_secret", path, required=True),
                _str(c, cr, "consumer_key", path, required=True),
            )
        )

    durations = TaskDurations()
    if "task_durations" in top:
        td = _mapping(c, top["task_durations"], top, "task_durations", "task_durations")
        _unknown_keys(c, td, ("init", "todo", "doing"), "task_durations")
        values: dict[str, float] = {}
        for phase in ("init", "todo", "doing"):
            value = parse_duration(td.get(phase, 0))
            if value is None:
                c.add(td, phase, f"task_durations.{phase}", "must be a duration")
                value = 0.0
            values[phase] = value
        durations = TaskDurations(**values)

    scalars: dict[str, float] = {}
    for name, default in (("listing_lag", 0.0), ("task_read_lag", 0.0), ("max_time_skew", 180.0)):
        value = parse_duration(top.get(name, default))
        if value is None:
            c.add(top, name, name, "must be a duration (seconds, or '500ms')")
            value = default
        scalars[name] = value

    rate_limit, rate_window = 0, 60.0
    if "rate_limit" in top:
        rl = _mapping(c, top["rate_limit"], top, "rate_limit", "rate_limit")
        _unknown_keys(c, rl, ("requests", "window"), "rate_limit")
        requests = rl.get("requests")
        if not isinstance(requests, int) or isinstance(requests, bool) or requests < 0:
            c.add(rl, "requests", "rate_limit.requests", "must be a non-negative integer")
        else:
            rate_limit = requests
        window = parse_duration(rl.get("window", 60))
        if not window:
            c.add(rl, "window", "rate_limit.window", "must be a positive duration")
        else:
            rate_window = window

    faults: list[Fault] = []
    raw_faults = top.get("faults", [])
    if not isinstance(raw_faults, list):
        c.add(top, "faults", "faults", "must be a list")
        raw_faults = []
    for i, raw in enumerate(raw_faults):
        fault = parse_fault(c, raw, top, "faults", f"faults[{i}]")
        if fault is not None:
            faults.append(fault)

    if c.problems:
        # In file order (a stable sort keeps a line's problems in the order found).
        raise ConfigError(sorted(c.problems, key=lambda p: p.line))
    return Inventory(
        servers=tuple(servers),
        blocks=tuple(blocks),
        credentials=tuple(creds),
        task_durations=durations,
        listing_lag=scalars["listing_lag"],
        faults=tuple(faults),
        task_read_lag=scalars["task_read_lag"],
        max_time_skew=scalars["max_time_skew"],
        rate_limit=rate_limit,
        rate_window=rate_window,
    )


def inventory_from_dict(data: Mapping[str, Any]) -> Inventory:
    """An inventory from a plain mapping shaped like the YAML file (see the module doc)."""
    return _parse(data, "inventory")


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory file; ConfigError (every problem, file:line) if bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FailoverdError(f"cannot read inventory {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(str(path), line, "", f"invalid YAML: {problem}")]) from exc
    return _parse(data, str(path))
