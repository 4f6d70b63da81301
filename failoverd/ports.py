"""The protocols the supervisor and the daemon depend on.

Concrete implementations: ``ovhapi.OvhClient`` (OvhApi), ``checks.HealthMonitor``
(HealthSource), ``metrics.Metrics`` (Recorder), ``journal.Journal`` (Journal, defined by
the engine), ``supervisor.Supervisor`` (Engine). Tests may substitute real fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal, Protocol

from failoverd.model import (
    BlockInfo,
    Eligibility,
    GroupView,
    HealthChange,
    HistoryEntry,
    JournaledMove,
    JournalStep,
    MoveAccepted,
    MoveOutcome,
    MoveTicket,
    PersistedState,
    Phase,
    ServerHealth,
    ServiceInfo,
    Snapshot,
    TaskStatus,
)
from failoverd.policy import Block, Policy


class Recorder(Protocol):
    """Events worth a metric. Gauges are read from the Snapshot at scrape time instead."""

    def ovh_request(self, route: str, method: str, code: str, duration: float) -> None:
        """One OVH HTTP request: templated route (/ip/{ip}/move), code "200"/"503"/"error"."""

    def check_done(self, server: str, kind: str, ok: bool, duration: float) -> None:
        """One probe of one check finished."""

    def failover_done(self, group: str, trigger: str, result: str) -> None:
        """A failover finished: trigger auto|manual|failback, result success|partial|failed."""

    def failover_blocked(self, group: str, reason: str) -> None:
        """A failover was wanted but not started: cooldown|guard|paused|no_eligible_target|veto."""

    def phase(self, phase: Phase, seconds: float) -> None:
        """Duration of one phase of a failover."""

    def config_reloaded(self, ok: bool, at: float) -> None:
        """A policy (re)load was attempted; `at` is wall-clock epoch seconds."""


class OvhApi(Protocol):
    """The OVH API as the engine needs it. Deadlines are event-loop times (loop.time())."""

    async def block_info(self, block: Block) -> BlockInfo: ...

    async def service_info(self, name: str) -> ServiceInfo: ...

    async def can_move(self, block: Block, target: str) -> Eligibility: ...

    async def submit_move(self, block: Block, target: str, *, deadline: float) -> MoveTicket: ...

    async def task_status(self, ticket: MoveTicket) -> TaskStatus: ...

    async def find_move_task(self, block: Block, target: str) -> MoveTicket | None:
        """The move task of `block` towards `target` that is not terminal, if any.

        Used after a crash between "journal says submitting" and "journal has the task id":
        the POST may or may not have reached OVH, and it must never be sent twice.
        """
        ...

    async def wait_for_move(self, ticket: MoveTicket, *, deadline: float) -> MoveOutcome:
        """Poll the task with backoff until terminal, then verify routedTo == target.

        Raises MoveFailed (task error, with OVH's comment; or routing mismatch) or
        DeadlineExceeded.
        """
        ...

    async def close(self) -> None: ...


class HealthSource(Protocol):
    """The health-check engine as the supervisor sees it."""

    def current(self) -> Mapping[str, ServerHealth]:
        """Every monitored server and canary, by name."""
        ...

    def changes(self) -> AsyncIterator[HealthChange]:
        """A stream of changes of `health` or `failing`, in order."""
        ...

    def apply_policy(self, policy: Policy) -> None:
        """Start/stop/replace checks for a new policy; unchanged servers keep their history."""


class Engine(Protocol):
    """What the daemon's HTTP API and the CLI drive."""

    def snapshot(self) -> Snapshot: ...

    async def request_move(
        self, group: str, *, to: str | None, force: bool, dry_run: bool
    ) -> MoveAccepted:
        """Raises UnknownGroup (404) or MoveRefused (409/422)."""
        ...

    async def pause(
        self, group: str, *, duration: float | None, reason: str | None
    ) -> GroupView: ...

    async def resume(self, group: str) -> GroupView: ...

    async def history(self, group: str | None, limit: int) -> list[HistoryEntry]: ...


class Journal(Protocol):
    """The durable record of moves, decisions and engine state (``journal.Journal``).

    Every write is durable when the call returns: a move is written before it is
    submitted and after each step, so a restart can follow it instead of repeating it.
    Times are wall-clock epoch seconds, passed in by the caller.
    """

    async def create_move(self, move: JournaledMove) -> None:
        """Record a new move and a `planned` step for each of its blocks towards its target."""

    async def step(
        self,
        move_id: str,
        block: str,
        target: str,
        step: JournalStep,
        *,
        at: float,
        task_id: int | None = None,
        via: Literal["dedicated", "ip"] | None = None,
        reason: str | None = None,
    ) -> None: ...

    async def finish_move(self, move_id: str, result: str, *, at: float, reason: str) -> None: ...

    async def unfinished_moves(self) -> list[JournaledMove]: ...

    async def get_move(self, move_id: str) -> JournaledMove | None: ...

    async def record(
        self,
        kind: str,
        message: str,
        *,
        at: float,
        group: str | None = None,
        move_id: str | None = None,
        details: Mapping[str, str | int | float | bool | None] | None = None,
    ) -> None:
        """One history line: decision | blocked | drift | pause | resume | reload | ..."""

    async def history(self, group: str | None, limit: int) -> list[HistoryEntry]:
        """The latest `limit` entries (of `group`, or all), oldest first."""
        ...

    async def load_state(self) -> PersistedState | None: ...

    async def save_state(self, state: PersistedState, *, at: float) -> None: ...

    async def close(self) -> None: ...


class Hooks(Protocol):
    """Operator hooks around a move (``hooks.Hooks``)."""

    async def pre(self, argv: Sequence[str], env: Mapping[str, str]) -> str | None:
        """Run the veto hook: None to go ahead, or the reason of the veto."""
        ...

    def post(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the notification hook and return at once; it never blocks a move."""

    async def close(self) -> None:
        """Kill and reap post hooks still running."""
