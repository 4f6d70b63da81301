"""Frozen domain values shared by the layers.

Health values come from the checks, OVH values from the adapter, and the snapshot is what
the supervisor publishes for metrics, ``/status`` and the CLI. The decision core's own
state and action types live beside it in this module too (added by the engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from failoverd.policy import Block

# --------------------------------------------------------------------------- health


class Health(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class CheckResult:
    """One probe of one check: a value, never an exception."""

    ok: bool
    duration: float  # seconds
    reason: str  # short: "ok", "connection refused", "timeout after 1.0s", "status 503"
    kind: str  # tcp | http | icmp | exec


@dataclass(frozen=True)
class ServerHealth:
    """What the checks currently say about one server (or canary)."""

    name: str
    health: Health
    failing: bool  # the latest round failed (counts for the mass-failure guard at once)
    since: float  # loop time of the last change of `health`
    last_round_at: float | None  # loop time of the latest completed round
    last_reason: str  # reason of the latest round ("ok" when it passed)
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    canary: bool = False


@dataclass(frozen=True)
class HealthChange:
    """Emitted when a server's `health` or `failing` changes."""

    server: str
    previous: ServerHealth | None
    current: ServerHealth


# --------------------------------------------------------------------------- OVH values

ServiceKind = Literal["dedicated", "vps"]


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    kind: ServiceKind
    region: str  # e.g. "eu-west-gra"
    datacenter: str | None
    vmac_supported: bool


@dataclass(frozen=True)
class BlockInfo:
    block: Block
    routed_to: str | None  # service name; None when parked
    type: str  # "failover" for an Additional IP
    regions: tuple[str, ...] = ()
    campus: str | None = None


@dataclass(frozen=True)
class Eligibility:
    ok: bool
    reason: str  # "eligible", or OVH's message / our own zone or vMAC explanation


class TaskState(StrEnum):
    INIT = "init"
    TODO = "todo"
    DOING = "doing"
    DONE = "done"
    CANCELLED = "cancelled"
    CUSTOMER_ERROR = "customerError"
    OVH_ERROR = "ovhError"

    @property
    def terminal(self) -> bool:
        return self in (
            TaskState.DONE,
            TaskState.CANCELLED,
            TaskState.CUSTOMER_ERROR,
            TaskState.OVH_ERROR,
        )


@dataclass(frozen=True)
class MoveTicket:
    """A submitted move: enough to follow its task after a restart."""

    block: Block
    target: str
    via: Literal["dedicated", "ip"]  # ipMove on the target server, or /ip/{block}/move
    task_id: int


@dataclass(frozen=True)
class TaskStatus:
    task_id: int
    state: TaskState
    comment: str | None = None


@dataclass(frozen=True)
class MoveOutcome:
    """A move whose task is done and whose routing was verified."""

    ticket: MoveTicket
    task: TaskStatus
    task_seconds: float
    verify_seconds: float


# --------------------------------------------------------------------------- snapshot


class GroupStatus(StrEnum):
    NOMINAL = "nominal"
    FAILED_OVER = "failed_over"
    MOVING = "moving"
    DEGRADED = "degraded"
    PAUSED = "paused"
    DRIFT = "drift"


GuardName = Literal["mass_failure", "canary", "max_failovers"]
Trigger = Literal["auto", "manual", "failback"]
MoveResult = Literal["success", "partial", "failed"]
BlockedReason = Literal["cooldown", "guard", "paused", "no_eligible_target", "veto"]
Phase = Literal["detect", "decide", "submit", "task", "verify", "total"]


@dataclass(frozen=True)
class ServerView:
    name: str
    health: Health
    failing: bool
    since: float | None  # wall-clock epoch seconds of the last health change
    last_check: float | None  # wall-clock epoch seconds of the latest round
    last_reason: str
    canary: bool = False


@dataclass(frozen=True)
class MoveView:
    move_id: str
    group: str
    target: str
    blocks: tuple[str, ...]
    trigger: Trigger
    phase: str  # journal step: planned, submitted, task_done, verified, failed, ...
    started_at: float  # wall-clock epoch seconds
    dry_run: bool = False


@dataclass(frozen=True)
class GroupView:
    name: str
    status: GroupStatus
    primary: str
    holder: str | None  # None when unknown, parked or drifting
    routing: Mapping[str, str | None]  # block -> service it is routed to
    cooldown_remaining: float  # seconds, 0 when not in cooldown
    paused: bool
    pause_reason: str | None
    pause_until: float | None  # wall-clock epoch seconds; None = until resumed
    eligible: Mapping[str, bool]  # standby -> could take over every block (preflight)
    reason: str  # the latest decision's sentence


@dataclass(frozen=True)
class GuardView:
    name: GuardName
    active: bool
    reason: str


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # wall-clock epoch seconds
    groups: tuple[GroupView, ...] = ()
    servers: tuple[ServerView, ...] = ()
    guards: tuple[GuardView, ...] = ()
    in_flight: tuple[MoveView, ...] = ()
    dry_run: bool = False


@dataclass(frozen=True)
class MoveAccepted:
    move_id: str
    group: str
    target: str
    blocks: tuple[str, ...]
    dry_run: bool


@dataclass(frozen=True)
class HistoryEntry:
    """One line of the audit trail (a decision, a move step, a pause...)."""

    id: int
    at: float  # wall-clock epoch seconds
    group: str | None
    kind: str  # decision | move | step | pause | resume | blocked | drift | reload
    message: str  # the reason sentence
    move_id: str | None = None
    details: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)


# --------------------------------------------------------------------------- journal
# Appended by the engine: what the journal (failoverd.journal) stores and gives back.

JournalStep = Literal[
    "planned",  # decided and written down; nothing sent yet
    "submitting",  # the POST is about to be sent (or was, without an answer)
    "submitted",  # OVH answered with a task id
    "task_done",  # the task reached `done`
    "verified",  # routedTo == target: the block moved
    "failed",  # this block did not move to this target (reason says why)
    "abandoned",  # never sent (veto, restart before the POST, shutdown)
    "dry_run",  # would have been sent
]


@dataclass(frozen=True)
class BlockStep:
    """The latest journaled step of one block of a move towards one target."""

    block: str
    target: str
    step: JournalStep
    at: float  # wall-clock epoch seconds
    task_id: int | None = None
    via: Literal["dedicated", "ip"] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class JournaledMove:
    """A move as written in the journal (one id, possibly several targets tried in order)."""

    move_id: str
    group: str
    trigger: Trigger
    target: str  # the first target chosen
    blocks: tuple[str, ...]
    dry_run: bool
    created: float  # wall-clock epoch seconds
    reason: str
    result: str | None = None  # success | partial | failed | abandoned | vetoed; None = open
    finished: float | None = None
    steps: tuple[BlockStep, ...] = ()  # latest step per (block, target), oldest first
    force: bool = False  # an operator's --force: the move's retries after a restart keep it


@dataclass(frozen=True)
class PersistedGroup:
    """The part of a group's engine state that must survive a restart."""

    cooldown_until: float = 0.0  # wall
    paused: bool = False
    pause_until: float | None = None  # wall
    pause_reason: str | None = None
    last_move_at: float | None = None  # wall


@dataclass(frozen=True)
class PersistedState:
    groups: Mapping[str, PersistedGroup]
    failovers: tuple[float, ...] = ()  # wall times of automatic failovers
