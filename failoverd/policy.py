"""The policy as frozen values (SPEC §3).

``failoverd.config`` is the only place that turns YAML into these; everything else reads
them. Durations are float seconds; blocks are ``ipaddress`` networks; every default from
``defaults:`` has already been applied, so no consumer looks anything up twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Block = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:9877``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def block_str(block: Block) -> str:
    """The canonical text of a block, always with its prefix length (``198.51.100.7/32``)."""
    return block.with_prefixlen


@dataclass(frozen=True)
class CheckTiming:
    interval: float = 2.0
    timeout: float = 1.0
    fall: int = 3
    rise: int = 5


@dataclass(frozen=True)
class TcpCheck:
    host: str
    port: int
    timing: CheckTiming = CheckTiming()
    kind: Literal["tcp"] = "tcp"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class HttpCheck:
    url: str
    expect_status: tuple[int, ...] = ()  # empty: any 2xx
    expect_body: str | None = None  # a regular expression, searched in the body
    headers: tuple[tuple[str, str], ...] = ()
    tls_verify: bool = True
    method: str = "GET"
    timing: CheckTiming = CheckTiming()
    kind: Literal["http"] = "http"

    @property
    def target(self) -> str:
        return self.url


@dataclass(frozen=True)
class IcmpCheck:
    host: str
    timing: CheckTiming = CheckTiming()
    kind: Literal["icmp"] = "icmp"

    @property
    def target(self) -> str:
        return self.host


@dataclass(frozen=True)
class ExecCheck:
    argv: tuple[str, ...]
    timing: CheckTiming = CheckTiming()
    kind: Literal["exec"] = "exec"

    @property
    def target(self) -> str:
        return " ".join(self.argv)


Check = TcpCheck | HttpCheck | IcmpCheck | ExecCheck


@dataclass(frozen=True)
class ServerPolicy:
    name: str  # the OVH service name
    checks: tuple[Check, ...]
    require: Literal["all", "any"] = "all"
    capacity: int | None = None  # groups it may hold as a standby at once; None = no limit


@dataclass(frozen=True)
class FailbackPolicy:
    mode: Literal["manual", "auto"] = "manual"
    after: float = 600.0  # seconds the primary must be up before an automatic failback


@dataclass(frozen=True)
class HooksPolicy:
    pre: tuple[str, ...] | None = None  # argv; non-zero exit vetoes the move
    post: tuple[str, ...] | None = None  # argv; fire and forget


@dataclass(frozen=True)
class GroupPolicy:
    name: str
    primary: str
    standbys: tuple[str, ...]
    blocks: tuple[Block, ...]
    cooldown: float = 600.0
    failback: FailbackPolicy = FailbackPolicy()
    hooks: HooksPolicy = HooksPolicy()

    @property
    def members(self) -> tuple[str, ...]:
        """Primary first, then the standbys in preference order."""
        return (self.primary, *self.standbys)


@dataclass(frozen=True)
class ApiPolicy:
    endpoint: str = "ovh-eu"  # a named ovh endpoint or a base URL (http(s)://…/1.0)
    config_file: Path | None = None
    timeout: float = 10.0
    requests_per_minute: int = 60
    move_timeout: float = 300.0


@dataclass(frozen=True)
class DaemonPolicy:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9877
    state_dir: Path = Path("/var/lib/failoverd")
    admin_token_file: Path | None = None
    dry_run: bool = False
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    reconcile_interval: float = 300.0  # how often routing is re-read from the API
    preflight_interval: float = 900.0  # how often eligibility is re-checked

    @property
    def listen(self) -> str:
        return host_port(self.listen_host, self.listen_port)


@dataclass(frozen=True)
class MaxFailovers:
    count: int = 5
    window: float = 3600.0


@dataclass(frozen=True)
class MassFailure:
    fraction: float = 0.5
    min_servers: int = 3


@dataclass(frozen=True)
class GuardsPolicy:
    max_parallel_moves: int = 4
    max_failovers: MaxFailovers = MaxFailovers()
    mass_failure: MassFailure = MassFailure()
    canaries: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Policy:
    api: ApiPolicy
    daemon: DaemonPolicy
    guards: GuardsPolicy
    servers: Mapping[str, ServerPolicy]  # keyed by service name, in file order
    groups: Mapping[str, GroupPolicy]  # keyed by group name, in file order
    source: Path | None = field(default=None, compare=False)

    def group_of_block(self, block: Block) -> GroupPolicy | None:
        for group in self.groups.values():
            if block in group.blocks:
                return group
        return None
