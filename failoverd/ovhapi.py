"""The OVH API adapter (SPEC §1, §5.4): the only module that imports ``ovh``.

``OvhClient`` implements :class:`failoverd.ports.OvhApi` on top of the official,
synchronous ``ovh`` library:

* **Never blocks the loop.** The ``ovh.Client`` runs on its own single-thread executor
  (context variables copied), with explicit ``(connect, read)`` timeouts from
  ``api.timeout``. One thread means one request at a time, which is also what OVH's fair
  use asks for; a caller whose deadline passes stops waiting, the thread finishes its
  request (bounded by the timeout) and the slot is then handed to the next caller.
* **Errors mapped once.** We call ``ovh.Client.raw_call`` (signing only) and decode the
  answer here, so every answer keeps its HTTP status and ``X-Ovh-Queryid``, even an HTML
  502 or an empty 200 that ``ovh.Client.call`` would turn into a status-less
  ``InvalidResponse``. 5xx, 429, network errors, timeouts and garbled bodies become
  :class:`~failoverd.errors.OvhTransientError`; 4xx :class:`~failoverd.errors.OvhPermanentError`
  (404 :class:`~failoverd.errors.OvhNotFound`; 401, 403 and signature/credential refusals
  :class:`~failoverd.errors.OvhAuthError`). Library exceptions are chained with ``from``.
* **Retries inside a deadline.** Transient errors are retried with exponential backoff and
  full jitter until the operation's deadline (reads: ``now + 3 * api.timeout``), then
  :class:`~failoverd.errors.DeadlineExceeded`. A 429 waits at least its ``Retry-After``; a
  ``QUERY_TIME_OUT`` refusal (our clock drifted) re-reads ``/auth/time`` and retries.
* **A request budget.** At most ``api.requests_per_minute`` requests start in any sliding
  window of 60 s on the loop clock. Waiting callers queue by priority, then in arrival
  order: move submissions first, then the task polls and routing verification of moves in
  flight (a failover that has been sent must be proven before background work), then every
  other read (routing, preflight, service facts). ``budget_spent`` / ``request_log`` show
  what was spent.
* **Every request recorded** to the Recorder with its templated route
  (``/ip/{ip}/move``), method, code (HTTP status, or ``error`` when no answer came) and
  duration — including requests whose caller gave up waiting.
* **Moves are never resubmitted blindly.** A POST that failed before it could reach OVH
  (connection refused, connect timeout, 429) is retried. A POST whose fate is unknown (read
  timeout, connection reset, 5xx, garbled answer) is followed by a look for a pending move
  task of the block towards the target (``find_move_task``) before any new POST; if OVH
  then refuses the resubmission (typically "a move of this block is already pending" while
  the task is not listed yet), or the deadline passes, ``submit_move`` raises
  :class:`~failoverd.errors.MoveSubmissionUnknown` (transient): the move may be in flight,
  so the caller must follow it with ``find_move_task`` / ``block_info`` rather than move
  the block elsewhere.
* **Finding a move.** ``find_move_task`` reads ``/ip/{ip}/task`` (an ip.IpTask names its
  destination) and, for a dedicated target, ``/dedicated/server/{target}/task`` (a
  dedicated.server.Task does not name its IP: see ``_find_dedicated_move_task`` for how one
  is attributed). A task OVH does not list yet (listing lag after the POST) is not found.

Credentials come from ``credentials`` (tests, embedders), else the environment
(``OVH_APPLICATION_KEY`` / ``OVH_APPLICATION_SECRET`` / ``OVH_CONSUMER_KEY``, or
``OVH_CLIENT_ID`` / ``OVH_CLIENT_SECRET``), else ``api.config_file`` and the library's own
``ovh.conf`` lookup — never from the policy. No message, log line or repr ever contains a
secret.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import contextvars
import heapq
import itertools
import json
import random
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal
from urllib.parse import quote, urlencode

import ovh
import ovh.config
import ovh.exceptions
import structlog

from failoverd.errors import (
    DeadlineExceeded,
    MoveFailed,
    MoveSubmissionUnknown,
    OvhAuthError,
    OvhError,
    OvhNotFound,
    OvhPermanentError,
    OvhTransientError,
)
from failoverd.model import (
    BlockInfo,
    Eligibility,
    MoveOutcome,
    MoveTicket,
    ServiceInfo,
    TaskState,
    TaskStatus,
)
from failoverd.policy import ApiPolicy, Block, block_str
from failoverd.ports import Recorder

log = structlog.get_logger("failoverd.ovhapi")

# Regions whose Additional IPs interoperate (SPEC §1); every other region stands alone.
INTEROPERABLE_REGIONS = frozenset({"eu-west-gra", "eu-west-rbx", "eu-west-sbg"})

# The statuses of a task that is still going somewhere.
PENDING_STATES = (TaskState.INIT, TaskState.TODO, TaskState.DOING)

QUERY_ID_HEADER = "X-Ovh-Queryid"

# A refusal that speaks of (virtual) MACs: "vMAC", "MACs", "virtual MAC", not "machine".
_ABOUT_VMACS = re.compile(r"\bv?macs?(?![a-z])", re.IGNORECASE)


class Priority(IntEnum):
    """Order in the request queue: lower goes first."""

    MOVE = 0  # move submissions (and what they need to be sent)
    TASK = 1  # task polls and routing verification of moves in flight
    READ = 2  # everything else


@dataclass(frozen=True)
class Tuning:
    """Timing knobs. Production uses the defaults; tests shrink them to stay fast."""

    backoff_base: float = 0.25  # first retry waits up to this (full jitter)
    backoff_cap: float = 8.0  # no single retry waits longer
    poll_initial: float = 1.0  # first task poll interval
    poll_max: float = 10.0  # task poll interval ceiling
    budget_window: float = 60.0  # requests_per_minute counts over this many seconds
    read_deadline_factor: float = 3.0  # a read gives up after this many api.timeout
    task_grace: float = 120.0  # a task unreadable (404) this long after its POST is transient
    verify_attempts: int = 3  # reads of routedTo after a done task before calling it a mismatch
    connect_timeout_cap: float = 5.0  # connect timeout = min(api.timeout, this)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the budget saw it start (for tests and debugging)."""

    started: float  # loop time
    method: str
    route: str
    priority: Priority


class _NotSentError(OvhTransientError):
    """A transient failure where OVH certainly did not act (connect failure, 429)."""

    retry_after: float = 0.0  # seconds OVH asked us to wait (429 Retry-After)


class _InFlightDeadline(DeadlineExceeded):
    """The deadline passed while a request was on the wire: OVH may have acted on it."""


@dataclass(frozen=True)
class _Answer:
    """What one attempt produced, computed on the worker thread."""

    status: int | None  # None: no HTTP answer (network error, timeout)
    query_id: str | None
    content: bytes
    error: BaseException | None
    duration: float
    retry_after: float = 0.0


# --------------------------------------------------------------------------- budget


class _Gate:
    """Admission to the single worker thread under the sliding-window request budget.

    A caller is admitted when it is first in (priority, arrival) order, the worker is
    idle and fewer than ``limit`` requests started in the last ``window`` seconds.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, window: float) -> None:
        self._loop = loop
        self._limit = max(1, limit)
        self._window = window
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._starts: deque[float] = deque()
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self, priority: Priority) -> float:
        """Wait for admission; returns the loop time the request was admitted at."""
        fut: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._heap, (int(priority), next(self._seq), fut))
        self._pump()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Admitted, but our caller went away before running: hand the slot on.
                self.release()
            else:
                fut.cancel()  # removed lazily by _pump
                self._pump()
            raise
        return self._starts[-1]

    def release(self) -> None:
        self._busy = False
        self._pump()

    def spent(self) -> int:
        self._expire(self._loop.time())
        return len(self._starts)

    def waiting(self) -> int:
        return sum(1 for _, _, f in self._heap if not f.done())

    def _expire(self, now: float) -> None:
        while self._starts and self._starts[0] + self._window <= now:
            self._starts.popleft()

    def _pump(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._heap and self._heap[0][2].done():
            heapq.heappop(self._heap)
        if not self._heap or self._busy:
            return
        now = self._loop.time()
        self._expire(now)
        if len(self._starts) >= self._limit:
            self._timer = self._loop.call_at(self._starts[0] + self._window, self._pump)
            return
        _, _, fut = heapq.heappop(self._heap)
        self._busy = True
        self._starts.append(now)
        fut.set_result(None)


# --------------------------------------------------------------------------- credentials


def _endpoint_name(endpoint: str) -> str:
    """A name ``ovh.Client`` accepts: a named endpoint as is, a base URL registered."""
    if endpoint in ovh.client.ENDPOINTS:
        return endpoint
    if endpoint.startswith(("http://", "https://")):
        url = endpoint.rstrip("/")
        name = f"failoverd:{url}"
        ovh.client.ENDPOINTS[name] = url
        return name
    known = ", ".join(sorted(ovh.client.ENDPOINTS))
    raise OvhPermanentError(
        f"api.endpoint {endpoint!r} is neither a known endpoint ({known})"
        " nor a base URL (http(s)://…/1.0)"
    )


CREDENTIAL_KEYS = (
    "application_key",
    "application_secret",
    "consumer_key",
    "client_id",
    "client_secret",
)

WHERE_CREDENTIALS_GO = (
    "set OVH_APPLICATION_KEY, OVH_APPLICATION_SECRET and OVH_CONSUMER_KEY (or OVH_CLIENT_ID "
    "and OVH_CLIENT_SECRET) in the environment, or put them in the file named by "
    "api.config_file (or ./ovh.conf, ~/.ovh.conf, /etc/ovh.conf) under [{section}]; "
    "never in the policy"
)


def _resolve_credentials(
    api: ApiPolicy, name: str, given: Mapping[str, str] | None
) -> dict[str, str]:
    """Credentials from `given`, else the environment and ovh.conf (the library's lookup)."""
    section = api.endpoint if name.startswith("failoverd:") else name
    absent = False  # api.config_file names no file
    if given is not None:
        found = {k: v for k, v in given.items() if k in CREDENTIAL_KEYS and v}
    else:
        try:
            manager = ovh.config.ConfigurationManager()
            if api.config_file is not None:
                # Opened here: the library's read() skips a file it may not read, and the
                # operator would be told there are no credentials in it.
                with api.config_file.open(encoding="utf-8") as conf:
                    manager.config.read_file(conf, str(api.config_file))
        except FileNotFoundError:
            # Said below only if a credential is missing: the environment wins over any
            # file, and may hold them all (a rehearsal with a copy of the production policy).
            absent = True
        except OSError as exc:
            raise OvhAuthError(
                f"api.config_file {api.config_file}: {exc.strerror or type(exc).__name__}"
            ) from exc
        except (configparser.Error, UnicodeDecodeError) as exc:
            # The class only: a parse error quotes the line, which may hold a secret.
            raise OvhAuthError(f"cannot read OVH credentials file: {type(exc).__name__}") from exc
        found = {}
        for key in CREDENTIAL_KEYS:
            # For a base URL the section is the URL itself or [default] (our extension:
            # the library would look up a section named after the endpoint).
            for sect in (section, name, "default"):
                value = manager.get(sect, key)
                if value:
                    found[key] = value
                    break
    where = WHERE_CREDENTIALS_GO.format(section=section)
    signed = [k for k in CREDENTIAL_KEYS[:3] if k in found]
    oauth = [k for k in CREDENTIAL_KEYS[3:] if k in found]
    if absent and len(signed) < 3 and len(oauth) < 2:
        raise OvhAuthError(f"api.config_file {api.config_file}: no such file; {where}")
    if signed and oauth:
        raise OvhAuthError(
            "OVH credentials mix application keys and OAuth2 client credentials; use one "
            "kind: " + where
        )
    if oauth:
        if len(oauth) < 2:
            missing = sorted(set(CREDENTIAL_KEYS[3:]) - set(oauth))
            raise OvhAuthError(f"OVH OAuth2 credentials lack {', '.join(missing)}: {where}")
        if name not in ovh.client.OAUTH2_TOKEN_URLS:
            raise OvhAuthError(
                "OAuth2 client credentials work only with the ovh-eu, ovh-ca and ovh-us "
                f"endpoints, not {api.endpoint}; use application keys instead"
            )
        return {k: found[k] for k in CREDENTIAL_KEYS[3:]}
    if not signed:
        raise OvhAuthError(f"no OVH credentials found: {where}")
    if len(signed) < 3:
        missing = sorted(set(CREDENTIAL_KEYS[:3]) - set(signed))
        raise OvhAuthError(f"OVH credentials lack {', '.join(missing)}: {where}")
    return {k: found[k] for k in CREDENTIAL_KEYS[:3]}


# --------------------------------------------------------------------------- helpers


def _ovh_words(exc: OvhError) -> str:
    """OVH's own message, without our "GET /path: " prefix."""
    return exc.message.partition(": ")[2] or exc.message


def _quoted(block: Block) -> str:
    """A block as one path segment: ``203.0.113.8%2F29`` (OVH routes on the raw path)."""
    return quote(block_str(block), safe="")


def zones_compatible(block_regions: tuple[str, ...], region: str) -> bool:
    """Whether a block of these regions may be routed to a service in `region`."""
    if not block_regions:
        return True  # OVH did not say; let its own eligibility check decide
    for r in block_regions:
        if r == region or (r in INTEROPERABLE_REGIONS and region in INTEROPERABLE_REGIONS):
            return True
    return False


def _short(value: Any, limit: int = 200) -> str:
    text = str(value).replace("\n", " ").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _network_reason(exc: BaseException) -> tuple[str, bool]:
    """A short reason for a failed attempt, and whether the request may have reached OVH."""
    # requests' exceptions are OSErrors; we only look at their class names so as not to
    # depend on requests' typing (no stubs installed) and never echo URLs or headers.
    inner = exc
    if isinstance(exc, ovh.exceptions.HTTPError) and len(exc.args) > 1:
        inner = exc.args[1]
    names = {cls.__name__ for cls in type(inner).__mro__}
    text = str(inner)
    if "ConnectTimeout" in names:
        return "connect timeout", False
    if "ReadTimeout" in names or "Timeout" in names:
        return "timeout waiting for the answer", True
    if "NewConnectionError" in text or "Connection refused" in text:
        return "connection refused", False
    if "ConnectionError" in names:
        return "connection failed (reset or closed)", True
    return f"request failed ({type(inner).__name__})", True


@dataclass
class _Stats:
    """Counters for tests and debugging, never secrets."""

    log: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=10_000))


# --------------------------------------------------------------------------- client


class OvhClient:
    """The OVH API for failoverd (implements :class:`failoverd.ports.OvhApi`)."""

    def __init__(
        self,
        client: Any,
        *,
        api: ApiPolicy,
        recorder: Recorder | None = None,
        signed: bool = True,
        tuning: Tuning | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Wrap a built ``ovh.Client``; prefer :meth:`from_policy`."""
        self._client = client
        self._api = api
        self._recorder = recorder
        self._signed = signed  # application keys: the clock offset must be known first
        self._tuning = tuning if tuning is not None else Tuning()
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="failoverd-ovh")
        self._gate: _Gate | None = None
        self._time_synced = not signed
        self._time_lock: asyncio.Lock | None = None
        self._services: dict[str, ServiceInfo] = {}
        self._block_static: dict[Block, tuple[tuple[str, ...], str | None]] = {}
        self._submitted: dict[MoveTicket, float] = {}
        self._stats = _Stats()
        self._closed = False

    def __repr__(self) -> str:
        return f"OvhClient(endpoint={self._api.endpoint!r})"

    @classmethod
    def from_policy(
        cls,
        api: ApiPolicy,
        recorder: Recorder | None = None,
        *,
        credentials: Mapping[str, str] | None = None,
        tuning: Tuning | None = None,
        rng: random.Random | None = None,
    ) -> OvhClient:
        """Build the client for the policy's ``api`` section.

        `credentials` (keys ``application_key``/``application_secret``/``consumer_key`` or
        ``client_id``/``client_secret``) replaces the environment/ovh.conf lookup; it is
        meant for tests and embedders. Raises OvhAuthError when credentials are missing.
        """
        name = _endpoint_name(api.endpoint)
        creds = _resolve_credentials(api, name, credentials)
        timeout = (min(api.timeout, (tuning or Tuning()).connect_timeout_cap), api.timeout)
        try:
            client = ovh.Client(endpoint=name, timeout=timeout, **creds)
        except ovh.exceptions.APIError as exc:
            # The library's own messages name keys, never values; we still use our words.
            raise OvhAuthError(
                f"invalid OVH client configuration ({type(exc).__name__}): "
                + WHERE_CREDENTIALS_GO.format(section=api.endpoint)
            ) from exc
        return cls(
            client,
            api=api,
            recorder=recorder,
            signed="application_key" in creds,
            tuning=tuning,
            rng=rng,
        )

    # ------------------------------------------------------------------ inspection

    @property
    def budget_spent(self) -> int:
        """Requests started within the current budget window."""
        return self._gate.spent() if self._gate is not None else 0

    @property
    def budget_waiting(self) -> int:
        """Callers queued for the budget or the worker."""
        return self._gate.waiting() if self._gate is not None else 0

    def request_log(self) -> list[RequestRecord]:
        """Every request started (latest 10 000), in start order."""
        return list(self._stats.log)

    # ------------------------------------------------------------------ the port

    async def block_info(self, block: Block) -> BlockInfo:
        return await self._block_info(block, Priority.READ, self._read_deadline())

    async def service_info(self, name: str) -> ServiceInfo:
        return await self._service_info(name, Priority.READ, self._read_deadline())

    async def can_move(self, block: Block, target: str) -> Eligibility:
        deadline = self._read_deadline()
        prio = Priority.READ
        info = await self._service_info(target, prio, deadline)
        regions = await self._block_regions(block, prio, deadline)
        if not zones_compatible(regions, info.region):
            where = ", ".join(regions)
            return Eligibility(
                False,
                f"{block_str(block)} is in {where} and {target} is in {info.region}: a block "
                "moves only within its region (only eu-west-gra, eu-west-rbx and eu-west-sbg "
                "interoperate)",
            )
        if info.kind == "dedicated":
            refusal = await self._ask_can_be_moved_to(block, target, prio, deadline)
            if refusal is not None:
                return Eligibility(False, self._explain_refusal(info, _ovh_words(refusal)))
            return Eligibility(True, "eligible")
        # A VPS: only the destination list of the block says whether it may go there.
        if block.prefixlen != block.max_prefixlen:
            return Eligibility(
                False,
                f"only a single address (/{block.max_prefixlen}) can move to a VPS; "
                f"{block_str(block)} is a /{block.prefixlen}",
            )
        destinations = await self._call(
            "GET",
            "/ip/{ip}/move",
            f"/ip/{_quoted(block)}/move",
            priority=prio,
            deadline=deadline,
        )
        if target in set(_destination_services(destinations)):
            return Eligibility(True, "eligible")
        return Eligibility(
            False, f"{target} is not among OVH's allowed destinations for {block_str(block)}"
        )

    async def submit_move(self, block: Block, target: str, *, deadline: float) -> MoveTicket:
        info = await self._service_info(target, Priority.MOVE, deadline)
        via: Literal["dedicated", "ip"]
        if info.kind == "dedicated":
            via = "dedicated"
            route = "/dedicated/server/{serviceName}/ipMove"
            path = f"/dedicated/server/{quote(target, safe='')}/ipMove"
            body: dict[str, Any] = {"ip": block_str(block)}
        else:
            via = "ip"
            route = "/ip/{ip}/move"
            path = f"/ip/{_quoted(block)}/move"
            body = {"to": target}
        what = f"move of {block_str(block)} to {target}"
        unknown: MoveSubmissionUnknown | None = None
        attempt = 0
        while True:
            try:
                if unknown is not None:
                    # An earlier POST may have reached OVH: never send another blindly.
                    found = await self._find_move_task(block, target, Priority.MOVE, deadline)
                    if found is not None:
                        log.info(
                            "move found after an uncertain submission",
                            block=block_str(block),
                            server=target,
                            task_id=found.task_id,
                        )
                        return self._remember(found)
                answer = await self._call(
                    "POST",
                    route,
                    path,
                    body=body,
                    priority=Priority.MOVE,
                    deadline=deadline,
                    resend=False,
                )
            except MoveSubmissionUnknown as exc:
                unknown = exc
                attempt += 1
                log.warning(
                    "move submission uncertain",
                    block=block_str(block),
                    server=target,
                    reason=exc.message,
                    query_id=exc.query_id,
                )
                if not await self._backoff(attempt, deadline):
                    raise MoveSubmissionUnknown(
                        f"{what}: outcome unknown at the deadline after {exc.message}; "
                        "follow it with find_move_task",
                        route=route,
                        http_status=exc.http_status,
                        error_class=exc.error_class,
                        query_id=exc.query_id,
                    ) from exc
                continue
            except OvhPermanentError as exc:
                if unknown is None:
                    raise
                # Our earlier POST may have created the pending move OVH now refuses for.
                with contextlib.suppress(OvhError):
                    found = await self._find_move_task(block, target, Priority.MOVE, deadline)
                    if found is not None:
                        return self._remember(found)
                raise MoveSubmissionUnknown(
                    f"{what}: an earlier submission failed ({unknown.message}) and then "
                    f"{exc.message}; the move may be in flight: follow it with find_move_task",
                    route=route,
                    http_status=exc.http_status,
                    error_class=exc.error_class,
                    query_id=exc.query_id,
                ) from exc
            except OvhError as exc:
                # A deadline (or a failing task listing) after an uncertain POST leaves the
                # move's fate open; before any POST went out it is a plain failure.
                if unknown is None:
                    raise
                raise MoveSubmissionUnknown(
                    f"{what}: outcome unknown at the deadline after {unknown.message}; "
                    "follow it with find_move_task",
                    route=route,
                    http_status=unknown.http_status,
                    error_class=unknown.error_class,
                    query_id=unknown.query_id,
                ) from exc
            task_id = _task_id(answer)
            if task_id is None:
                # 2xx without a task id: OVH took it, but we cannot follow it by id.
                with contextlib.suppress(OvhError):
                    found = await self._find_move_task(block, target, Priority.MOVE, deadline)
                    if found is not None:
                        return self._remember(found)
                raise MoveSubmissionUnknown(
                    f"{what}: OVH accepted the move without a task id; follow it with "
                    "find_move_task",
                    route=route,
                )
            return self._remember(MoveTicket(block=block, target=target, via=via, task_id=task_id))

    async def task_status(self, ticket: MoveTicket) -> TaskStatus:
        return await self._task_status(ticket, Priority.TASK, self._read_deadline())

    async def find_move_task(self, block: Block, target: str) -> MoveTicket | None:
        return await self._find_move_task(block, target, Priority.TASK, self._read_deadline())

    async def wait_for_move(self, ticket: MoveTicket, *, deadline: float) -> MoveOutcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        what = f"move of {block_str(ticket.block)} to {ticket.target} (task {ticket.task_id})"
        interval = self._tuning.poll_initial
        last: TaskStatus | None = None
        last_error: OvhError | None = None
        while True:
            try:
                last = await self._task_status(ticket, Priority.TASK, deadline)
                last_error = None
            except DeadlineExceeded as exc:
                raise self._move_deadline(what, last, exc) from exc
            except OvhTransientError as exc:
                last_error = exc
            if last is not None and last_error is None and last.state.terminal:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._move_deadline(what, last, last_error)
            await asyncio.sleep(min(interval, remaining))  # polling cadence, not synchronisation
            interval = min(interval * 1.5, self._tuning.poll_max)
        task_done = loop.time()
        if last.state is not TaskState.DONE:
            comment = f": {last.comment}" if last.comment else ""
            raise MoveFailed(f"{what} ended {last.state.value}{comment}", task_state=last.state)
        for attempt in range(1, self._tuning.verify_attempts + 1):
            try:
                info = await self._block_info(ticket.block, Priority.TASK, deadline)
            except DeadlineExceeded as exc:
                raise self._move_deadline(what, last, exc) from exc
            if info.routed_to == ticket.target:
                return MoveOutcome(
                    ticket=ticket,
                    task=last,
                    task_seconds=task_done - started,
                    verify_seconds=loop.time() - task_done,
                )
            if attempt < self._tuning.verify_attempts and not await self._backoff(
                attempt, deadline
            ):
                break
        holder = info.routed_to or "nothing (parked)"
        raise MoveFailed(
            f"{what}: task done but {block_str(ticket.block)} is routed to {holder}",
            task_state=TaskState.DONE,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The session is closed on the worker, after any request still on the wire (the
        # gate never queues more than one); we never wait for it: it ends at its timeout.
        session = getattr(self._client, "_session", None)
        if session is not None:
            self._executor.submit(_close_session, session)
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ internals

    def _read_deadline(self) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + self._tuning.read_deadline_factor * self._api.timeout

    def _remember(self, ticket: MoveTicket) -> MoveTicket:
        now = asyncio.get_running_loop().time()
        # Only recent submissions matter (task_grace): forget the rest, a daemon runs long.
        for old in [t for t, at in self._submitted.items() if now - at > self._tuning.task_grace]:
            del self._submitted[old]
        self._submitted[ticket] = now
        return ticket

    def _move_deadline(
        self, what: str, last: TaskStatus | None, cause: BaseException | None
    ) -> DeadlineExceeded:
        seen = f"task last seen {last.state.value}" if last else "task never read"
        extra = f"; last error: {cause}" if isinstance(cause, OvhError) else ""
        return DeadlineExceeded(f"{what} not verified by its deadline ({seen}{extra})")

    async def _ask_can_be_moved_to(
        self, block: Block, target: str, priority: Priority, deadline: float
    ) -> OvhPermanentError | None:
        """GET ipCanBeMovedTo: None when OVH allows the move, else OVH's refusal.

        Missing credentials or an unknown server/block are not a refusal of this move: they
        are raised, like transient errors once the deadline is spent.
        """
        try:
            await self._call(
                "GET",
                "/dedicated/server/{serviceName}/ipCanBeMovedTo",
                f"/dedicated/server/{quote(target, safe='')}/ipCanBeMovedTo",
                params={"ip": block_str(block)},
                priority=priority,
                deadline=deadline,
            )
        except (OvhAuthError, OvhNotFound):
            raise
        except OvhPermanentError as exc:
            return exc
        return None

    def _explain_refusal(self, info: ServiceInfo, message: str) -> str:
        if _ABOUT_VMACS.search(message) and not info.vmac_supported and info.name not in message:
            # OVH's words may not say which side lacks what: say it.
            return f"{message} ({info.name} does not support virtual MACs)"
        return message

    async def _backoff(self, attempt: int, deadline: float, at_least: float = 0.0) -> bool:
        """Sleep a full-jitter backoff; False (without sleeping) if it would pass `deadline`."""
        loop = asyncio.get_running_loop()
        ceiling = min(self._tuning.backoff_cap, self._tuning.backoff_base * 2 ** (attempt - 1))
        delay = max(at_least, self._rng.uniform(0, ceiling))
        if loop.time() + delay >= deadline:
            return False
        await asyncio.sleep(delay)  # retry backoff, not synchronisation
        return True

    async def _block_info(self, block: Block, priority: Priority, deadline: float) -> BlockInfo:
        data = await self._call(
            "GET", "/ip/{ip}", f"/ip/{_quoted(block)}", priority=priority, deadline=deadline
        )
        route = "/ip/{ip}"
        if not isinstance(data, dict):
            raise OvhTransientError(f"GET /ip/{block_str(block)}: unexpected answer", route=route)
        routed = data.get("routedTo")
        name = routed.get("serviceName") if isinstance(routed, dict) else None
        regions_raw = data.get("regions") or ()
        regions = tuple(str(r) for r in regions_raw) if isinstance(regions_raw, list) else ()
        campus = data.get("campus")
        info = BlockInfo(
            block=block,
            routed_to=str(name) if name else None,
            type=str(data.get("type") or ""),
            regions=regions,
            campus=str(campus) if campus else None,
        )
        self._block_static[block] = (info.regions, info.campus)
        return info

    async def _block_regions(
        self, block: Block, priority: Priority, deadline: float
    ) -> tuple[str, ...]:
        # A block's regions never change: read them once.
        if block not in self._block_static:
            await self._block_info(block, priority, deadline)
        return self._block_static[block][0]

    async def _service_info(self, name: str, priority: Priority, deadline: float) -> ServiceInfo:
        cached = self._services.get(name)
        if cached is not None:
            return cached
        seg = quote(name, safe="")
        try:
            data = await self._call(
                "GET",
                "/dedicated/server/{serviceName}",
                f"/dedicated/server/{seg}",
                priority=priority,
                deadline=deadline,
            )
        except OvhNotFound:
            data = None
        if data is not None:
            if not isinstance(data, dict):
                raise OvhTransientError(f"GET /dedicated/server/{name}: unexpected answer")
            net = await self._call(
                "GET",
                "/dedicated/server/{serviceName}/specifications/network",
                f"/dedicated/server/{seg}/specifications/network",
                priority=priority,
                deadline=deadline,
            )
            vmac = net.get("vmac") if isinstance(net, dict) else None
            supported = bool(vmac.get("supported")) if isinstance(vmac, dict) else False
            datacenter = data.get("datacenter")
            info = ServiceInfo(
                name=name,
                kind="dedicated",
                region=str(data.get("region") or _region_of_datacenter(datacenter)),
                datacenter=str(datacenter) if datacenter else None,
                vmac_supported=supported,
            )
        else:
            try:
                vps = await self._call(
                    "GET",
                    "/vps/{serviceName}",
                    f"/vps/{seg}",
                    priority=priority,
                    deadline=deadline,
                )
            except OvhNotFound as exc:
                raise OvhNotFound(
                    f"{name} is neither a dedicated server nor a VPS of this account",
                    route="/vps/{serviceName}",
                    http_status=404,
                    query_id=exc.query_id,
                ) from exc
            if not isinstance(vps, dict):
                raise OvhTransientError(f"GET /vps/{name}: unexpected answer")
            datacenter = vps.get("datacenter") or vps.get("location")
            info = ServiceInfo(
                name=name,
                kind="vps",
                region=str(vps.get("region") or _region_of_vps(vps)),
                datacenter=str(datacenter) if isinstance(datacenter, str) else None,
                vmac_supported=False,
            )
        self._services[name] = info
        return info

    async def _task_status(
        self, ticket: MoveTicket, priority: Priority, deadline: float
    ) -> TaskStatus:
        if ticket.via == "dedicated":
            route = "/dedicated/server/{serviceName}/task/{taskId}"
            path = f"/dedicated/server/{quote(ticket.target, safe='')}/task/{ticket.task_id}"
        else:
            route = "/ip/{ip}/task/{taskId}"
            path = f"/ip/{_quoted(ticket.block)}/task/{ticket.task_id}"
        try:
            data = await self._call("GET", route, path, priority=priority, deadline=deadline)
        except OvhNotFound as exc:
            submitted = self._submitted.get(ticket)
            age = None if submitted is None else asyncio.get_running_loop().time() - submitted
            if age is None or age < self._tuning.task_grace:
                # OVH shows a task only some seconds after the POST; after a restart we
                # cannot tell how old it is, and the caller's deadline bounds the wait.
                raise OvhTransientError(
                    f"task {ticket.task_id} not readable yet",
                    route=route,
                    http_status=404,
                    error_class=exc.error_class,
                    query_id=exc.query_id,
                ) from exc
            raise
        return _parse_task(data, ticket.task_id, route)

    async def _find_move_task(
        self, block: Block, target: str, priority: Priority, deadline: float
    ) -> MoveTicket | None:
        found = await self._find_ip_move_task(block, target, priority, deadline)
        if found is not None:
            return found
        info = await self._service_info(target, priority, deadline)
        if info.kind != "dedicated":
            return None
        return await self._find_dedicated_move_task(block, target, priority, deadline)

    async def _find_dedicated_move_task(
        self, block: Block, target: str, priority: Priority, deadline: float
    ) -> MoveTicket | None:
        """A pending ipMove task on `target` that is this block's.

        A dedicated.server.Task does not name its IP. A task whose comment names the block
        is taken at once. Otherwise OVH is asked whether the block could move to the target:
        it refuses while the block has a move pending (TaskAlreadyExists), and that refusal
        may name the task; else a single pending ipMove task on the target is the block's.
        Several unattributable tasks: a transient error, since which one is ours becomes
        clear when they end.
        """
        seg = quote(target, safe="")
        address = str(block.network_address)
        candidates: list[int] = []
        pending = self._pending_tasks(
            "/dedicated/server/{serviceName}",
            f"/dedicated/server/{seg}",
            "ipMove",
            priority,
            deadline,
        )
        async with contextlib.aclosing(pending):
            async for task_id, _, status in pending:
                if status.comment and (
                    block_str(block) in status.comment or address in status.comment.split()
                ):
                    return MoveTicket(block=block, target=target, via="dedicated", task_id=task_id)
                candidates.append(task_id)
        if not candidates:
            return None
        exc = await self._ask_can_be_moved_to(block, target, priority, deadline)
        if exc is not None:
            said = _ovh_words(exc)
            if "TaskAlreadyExists" in (exc.error_class or "") or "pending" in said:
                # OVH's refusal may name the pending task: prefer that to a guess.
                text = said.replace(block_str(block), " ").replace(address, " ")
                named = [c for c in candidates if str(c) in re.findall(r"\d+", text)]
                if len(named) == 1:
                    return MoveTicket(block=block, target=target, via="dedicated", task_id=named[0])
                if len(candidates) == 1:
                    return MoveTicket(
                        block=block, target=target, via="dedicated", task_id=candidates[0]
                    )
                raise OvhTransientError(
                    f"{len(candidates)} pending ipMove tasks on {target} ({candidates}) and "
                    f"{block_str(block)} has one of them; cannot tell which until they end",
                    route="/dedicated/server/{serviceName}/task",
                ) from exc
        # The block has no move pending: the tasks on the target move other blocks.
        return None

    async def _find_ip_move_task(
        self, block: Block, target: str, priority: Priority, deadline: float
    ) -> MoveTicket | None:
        # ip.IpTask names its destination: a match is certain.
        pending = self._pending_tasks(
            "/ip/{ip}", f"/ip/{_quoted(block)}", "genericMoveFloatingIp", priority, deadline
        )
        async with contextlib.aclosing(pending):
            async for task_id, data, _ in pending:
                dest = data.get("destination")
                dest_name = dest.get("serviceName") if isinstance(dest, dict) else dest
                if dest_name == target:
                    return MoveTicket(block=block, target=target, via="ip", task_id=task_id)
        return None

    async def _pending_tasks(
        self, owner_route: str, owner_path: str, function: str, priority: Priority, deadline: float
    ) -> AsyncGenerator[tuple[int, dict[str, Any], TaskStatus], None]:
        """The pending `function` tasks listed under `owner_path`/task, newest first in each
        status, with their JSON; a task gone (404) or ended since it was listed is skipped."""
        route = f"{owner_route}/task/{{taskId}}"
        for state in PENDING_STATES:
            ids = await self._call(
                "GET",
                f"{owner_route}/task",
                f"{owner_path}/task",
                params={"function": function, "status": state.value},
                priority=priority,
                deadline=deadline,
            )
            for task_id in sorted(_int_list(ids), reverse=True):
                try:
                    data = await self._call(
                        "GET",
                        route,
                        f"{owner_path}/task/{task_id}",
                        priority=priority,
                        deadline=deadline,
                    )
                except OvhNotFound:
                    continue
                status = _parse_task(data, task_id, route)  # not a mapping: transient
                if not status.state.terminal:
                    yield task_id, data, status

    # -- one call: budget, worker thread, decoding, retries

    async def _call(
        self,
        method: str,
        route: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        priority: Priority,
        deadline: float,
        resend: bool = True,
    ) -> Any:
        """One API operation with retries; `resend=False` for non-idempotent POSTs."""
        if params:
            path = f"{path}?{urlencode(params)}"
        attempt = 0
        last: OvhTransientError | None = None
        while True:
            attempt += 1
            try:
                return await self._attempt(method, route, path, body, priority, deadline)
            except DeadlineExceeded as exc:
                if not resend and isinstance(exc, _InFlightDeadline):
                    raise MoveSubmissionUnknown(
                        f"{method} {_display(path)}: no answer before the deadline",
                        route=route,
                    ) from exc
                if last is None:
                    raise
                raise self._gave_up(method, path, route, attempt - 1, last) from exc
            except OvhTransientError as exc:
                last = exc
                if not resend and not isinstance(exc, _NotSentError):
                    raise MoveSubmissionUnknown(
                        exc.message,
                        route=route,
                        http_status=exc.http_status,
                        error_class=exc.error_class,
                        query_id=exc.query_id,
                    ) from exc
                log.info(
                    "OVH request failed, retrying",
                    route=route,
                    method=method,
                    reason=exc.message,
                    query_id=exc.query_id,
                    attempt=attempt,
                )
                wait = exc.retry_after if isinstance(exc, _NotSentError) else 0.0
                if not await self._backoff(attempt, deadline, at_least=wait):
                    raise self._gave_up(method, path, route, attempt, exc) from exc

    @staticmethod
    def _gave_up(
        method: str, path: str, route: str, attempts: int, last: OvhTransientError
    ) -> DeadlineExceeded:
        """The deadline passed while retrying: say so, with the last error's details."""
        return DeadlineExceeded(
            f"{method} {_display(path)}: gave up at the deadline after {attempts} "
            f"failed attempt(s); last error: {last.message}",
            route=route,
            http_status=last.http_status,
            error_class=last.error_class,
            query_id=last.query_id,
        )

    async def _attempt(
        self,
        method: str,
        route: str,
        path: str,
        body: Mapping[str, Any] | None,
        priority: Priority,
        deadline: float,
    ) -> Any:
        if self._closed:
            raise OvhPermanentError("the OVH client is closed", route=route)
        if not self._time_synced:
            await self._sync_time(priority, deadline)
        answer = await self._run(
            method,
            route,
            priority,
            deadline,
            lambda: self._client.raw_call(method, path, data=body, need_auth=True),
        )
        try:
            return _decode(answer, method, route, path)
        except OvhAuthError as exc:
            if not self._signed or exc.error_class != "QUERY_TIME_OUT":
                raise
            # Our clock drifted from OVH's since the offset was read (a daemon runs for
            # months): read it again and retry; OVH refused before acting on the request.
            self._time_synced = False
            self._client._time_delta = None  # the library's cache of the offset
            raise _NotSentError(
                exc.message,
                route=route,
                http_status=exc.http_status,
                error_class=exc.error_class,
                query_id=exc.query_id,
            ) from exc

    async def _sync_time(self, priority: Priority, deadline: float) -> None:
        """Read OVH's clock once (unsigned GET /auth/time) as a request of its own."""
        if self._time_lock is None:
            self._time_lock = asyncio.Lock()
        async with self._time_lock:
            if self._time_synced:
                return
            # The library caches the offset in the client; `time_delta` does the GET.
            try:
                answer = await self._run(
                    "GET", "/auth/time", priority, deadline, lambda: self._client.time_delta
                )
            except DeadlineExceeded as exc:
                # Whatever became of this GET, the request it precedes was never sent.
                raise DeadlineExceeded(exc.message, route="/auth/time") from exc
            if answer.error is not None:
                err = _from_exception(answer.error, "GET", "/auth/time", "/auth/time")
                if type(err) is OvhTransientError:
                    err = _NotSentError(err.message, route=err.route, http_status=err.http_status)
                elif isinstance(err, OvhNotFound):
                    # No clock where the API should be: the endpoint is wrong. As a 404 it
                    # would pass for the server or block the request was about.
                    err = OvhPermanentError(
                        f"{err.message}; api.endpoint ({self._api.endpoint}) does not look "
                        "like the API's base URL (e.g. https://eu.api.ovh.com/1.0)",
                        route=err.route,
                        http_status=err.http_status,
                        query_id=err.query_id,
                    )
                raise err from answer.error
            self._time_synced = True

    async def _run(
        self,
        method: str,
        route: str,
        priority: Priority,
        deadline: float,
        fn: Callable[[], Any],
    ) -> _Answer:
        loop = asyncio.get_running_loop()
        if self._gate is None:
            self._gate = _Gate(loop, self._api.requests_per_minute, self._tuning.budget_window)
        gate = self._gate
        try:
            async with asyncio.timeout_at(deadline):
                started = await gate.acquire(priority)
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"{method} {route}: deadline passed while waiting for the API request budget",
                route=route,
            ) from exc
        self._stats.log.append(RequestRecord(started, method, route, priority))
        ctx = contextvars.copy_context()
        try:
            cfut: Future[_Answer] = self._executor.submit(ctx.run, _timed, fn)
        except RuntimeError as exc:  # the executor was shut down by close()
            gate.release()
            raise OvhPermanentError("the OVH client is closed", route=route) from exc

        def finished(done: Future[_Answer]) -> None:
            # Runs on the worker thread (or here when cancelled before starting).
            try:
                if not done.cancelled():
                    answer = done.result()
                    code = str(answer.status) if answer.status is not None else "error"
                    loop.call_soon_threadsafe(self._record, route, method, code, answer.duration)
                loop.call_soon_threadsafe(gate.release)
            except RuntimeError:
                pass  # the loop is closed: an answer that came after shutdown has no reader

        cfut.add_done_callback(finished)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.wrap_future(cfut, loop=loop)
        except TimeoutError as exc:
            raise _InFlightDeadline(
                f"{method} {route}: no answer before the deadline", route=route
            ) from exc

    def _record(self, route: str, method: str, code: str, duration: float) -> None:
        if self._recorder is not None:
            self._recorder.ovh_request(route, method, code, duration)


# --------------------------------------------------------------------------- decoding


def _timed(fn: Callable[[], Any]) -> _Answer:
    """Run one request on the worker thread; never raises (the loop maps the outcome)."""
    t0 = time.monotonic()
    try:
        result = fn()
    except (OSError, ovh.exceptions.APIError) as exc:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        return _Answer(
            status=status if isinstance(status, int) else None,
            query_id=getattr(exc, "query_id", None),
            content=b"",
            error=exc,
            duration=time.monotonic() - t0,
        )
    except Exception as exc:  # anything else from the library is mapped too
        return _Answer(None, None, b"", exc, time.monotonic() - t0)
    duration = time.monotonic() - t0
    status = getattr(result, "status_code", None)
    if isinstance(status, int):
        headers = getattr(result, "headers", {})
        return _Answer(
            status,
            headers.get(QUERY_ID_HEADER),
            result.content,
            None,
            duration,
            _retry_after(headers.get("Retry-After")),
        )
    # A plain value (the clock offset): no HTTP answer object to keep.
    return _Answer(200, None, b"", None, duration)


def _close_session(session: Any) -> None:
    try:
        session.close()
    except Exception:  # closing pooled sockets must not fail a shutdown
        log.debug("closing the OVH HTTP session failed")


def _display(path: str) -> str:
    """A path for messages: blocks shown as CIDR, query string kept."""
    return path.replace("%2F", "/")


def _from_exception(exc: BaseException, method: str, route: str, path: str) -> OvhError:
    where = f"{method} {_display(path)}"
    if isinstance(exc, ovh.exceptions.InvalidResponse):
        err: OvhError = OvhTransientError(f"{where}: garbled answer (not JSON)", route=route)
    elif isinstance(exc, ovh.exceptions.OAuth2FailureError):
        err = OvhAuthError(f"{where}: OAuth2 token request refused", route=route)
    elif isinstance(exc, ovh.exceptions.InvalidKey | ovh.exceptions.InvalidConfiguration):
        err = OvhAuthError(f"{where}: invalid OVH credentials configuration", route=route)
    elif isinstance(exc, OSError | ovh.exceptions.HTTPError | ovh.exceptions.NetworkError):
        reason, maybe_sent = _network_reason(exc)
        cls = OvhTransientError if maybe_sent else _NotSentError
        err = cls(f"{where}: {reason}", route=route)
    elif isinstance(exc, ovh.exceptions.APIError) and exc.response is not None:
        status = int(exc.response.status_code)
        message = str(exc.args[0]) if exc.args and exc.args[0] else f"HTTP {status}"
        err = _by_status(status, f"{where}: {_short(message)}", route, None, exc.query_id)
    else:
        err = OvhTransientError(f"{where}: unexpected failure ({type(exc).__name__})", route=route)
    err.__cause__ = exc
    return err


def _by_status(
    status: int, message: str, route: str, error_class: str | None, query_id: str | None
) -> OvhError:
    kwargs: dict[str, Any] = {
        "route": route,
        "http_status": status,
        "error_class": error_class,
        "query_id": query_id,
    }
    auth_classes = (
        "INVALID_SIGNATURE",
        "INVALID_CREDENTIAL",
        "INVALID_KEY",
        "NOT_CREDENTIAL",
        "NOT_GRANTED_CALL",
        "QUERY_TIME_OUT",
    )
    if status == 429:
        return _NotSentError(message, **kwargs)  # refused before any processing
    if status >= 500:
        return OvhTransientError(message, **kwargs)  # may have been processed
    if status == 404:
        return OvhNotFound(message, **kwargs)
    if status in (401, 403) or (error_class or "").upper() in auth_classes:
        return OvhAuthError(message, **kwargs)
    return OvhPermanentError(message, **kwargs)


def _decode(answer: _Answer, method: str, route: str, path: str) -> Any:
    """The JSON of a 2xx answer, or the mapped error."""
    if answer.error is not None:
        raise _from_exception(answer.error, method, route, path) from answer.error
    where = f"{method} {_display(path)}"
    status = answer.status if answer.status is not None else 0
    data: Any = None
    decoded = False
    if answer.content.strip():
        try:
            data = json.loads(answer.content)
            decoded = True
        except ValueError:
            decoded = False
    if 200 <= status < 300:
        if status == 204:
            return None
        if not decoded:
            raise OvhTransientError(
                f"{where}: garbled answer (HTTP {status} without a JSON body)",
                route=route,
                http_status=status,
                query_id=answer.query_id,
            )
        return data
    message = f"HTTP {status}" + ("" if decoded else " with a non-JSON body")
    error_class: str | None = None
    if isinstance(data, dict):
        message = str(data.get("message") or message)
        raw_class = data.get("class") or data.get("errorCode")
        error_class = str(raw_class) if raw_class else None
    err = _by_status(status, f"{where}: {_short(message)}", route, error_class, answer.query_id)
    if isinstance(err, _NotSentError):
        err.retry_after = answer.retry_after
    raise err


def _retry_after(value: Any) -> float:
    """Seconds from a Retry-After header (delta-seconds form), capped at a minute."""
    try:
        return min(60.0, max(0.0, float(value)))
    except (TypeError, ValueError):
        return 0.0


def _parse_task(data: Any, task_id: int, route: str) -> TaskStatus:
    if not isinstance(data, dict):
        raise OvhTransientError(f"task {task_id}: unexpected answer", route=route)
    try:
        state = TaskState(str(data.get("status")))
    except ValueError as exc:
        raise OvhTransientError(
            f"task {task_id}: unknown status {_short(data.get('status'), 40)!r}", route=route
        ) from exc
    comment = data.get("comment")
    return TaskStatus(task_id=task_id, state=state, comment=str(comment) if comment else None)


def _task_id(answer: Any) -> int | None:
    if isinstance(answer, dict):
        value = answer.get("taskId", answer.get("id"))
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _int_list(data: Any) -> list[int]:
    if not isinstance(data, list):
        return []
    return [v for v in data if isinstance(v, int) and not isinstance(v, bool)]


def _destination_services(data: Any) -> Iterator[str]:
    """Service names in an ip.Destinations answer ({type: [{"service": name}, …]})."""
    if not isinstance(data, dict):
        return
    for entries in data.values():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, dict) and entry.get("service"):
                yield str(entry["service"])
            elif isinstance(entry, str):
                yield entry


_DATACENTER_REGIONS = {
    "gra": "eu-west-gra",
    "rbx": "eu-west-rbx",
    "sbg": "eu-west-sbg",
    "bhs": "ca-east-bhs",
    "waw": "eu-central-waw",
    "lim": "eu-west-lim",
    "eri": "eu-west-eri",
    "vin": "us-east-vin",
    "hil": "us-west-hil",
    "sgp": "ap-southeast-sgp",
    "syd": "ap-southeast-syd",
}


def _region_of_datacenter(datacenter: Any) -> str:
    """Older answers carry only a datacenter (``gra2``, ``RBX8``): derive the region."""
    if isinstance(datacenter, str):
        prefix = datacenter.strip().lower()[:3]
        if prefix in _DATACENTER_REGIONS:
            return _DATACENTER_REGIONS[prefix]
        return datacenter.lower()
    return "unknown"


def _region_of_vps(vps: Mapping[str, Any]) -> str:
    zone = vps.get("zone") or vps.get("datacenter") or vps.get("location")
    if isinstance(zone, str):
        # "Region OpenStack: os-sbg5" → sbg
        tail = zone.rsplit(":", 1)[-1].strip().lower()
        tail = tail.removeprefix("os-")
        return _region_of_datacenter(tail)
    return "unknown"


__all__ = [
    "INTEROPERABLE_REGIONS",
    "OvhClient",
    "Priority",
    "RequestRecord",
    "Tuning",
    "zones_compatible",
]
