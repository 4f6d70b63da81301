"""Health checks and their scheduler (SPEC §3, §4).

Three parts, from the wire up:

``Prober``
    Runs one probe of one check and returns a ``CheckResult`` — never raises. tcp is a bare
    non-blocking connect; http uses one shared ``aiohttp.ClientSession`` per monitor; icmp
    lives in ``failoverd.icmp``; exec runs argv in its own process group, killed with that
    group at the timeout and always reaped.

``ServerTracker``
    A pure state machine (no clock, no I/O: ``now`` is an argument) that turns probe
    results into a ``ServerHealth``. Each check has its own hysteresis: it is ``down``
    after ``fall`` consecutive failed rounds and ``up`` after ``rise`` consecutive passing
    ones; it starts ``unknown``. A server combines its checks by ``require``:

    * ``all``: down as soon as any check is down; up when every check is up.
    * ``any``: up as soon as any check is up; down when every check is down.

    Anything in between (a check still ``unknown``) keeps the server's previous verdict —
    ``unknown`` at start, or the health it had before a reload changed its checks.
    ``failing`` combines the *latest* result of each check by the same rule (all: any
    latest result failed; any: every check that has a result failed). It flips on the
    first failed round, which is what the mass-failure guard needs before any verdict.

``HealthMonitor``
    Implements ``ports.HealthSource``. Every check runs rounds on the event loop's clock
    at absolute deadlines ``phase + k * interval``; the phase is a stable hash of server
    and check, so rounds are spread over the interval (no thundering herd) and do not
    drift. A round never overlaps itself (the next one waits for the previous probe, which
    its timeout bounds; missed slots are skipped, not bunched), and a slow check never
    delays another. Most checks are a long-lived task each; TCP checks to an address —
    the kind that scales to thousands — run as plain callbacks in ``TcpRounds`` (same
    semantics, a fraction of the cost, nothing for the garbage collector to promote).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import ipaddress
import math
import os
import re
import select
import signal
import socket
import struct
import time
import weakref
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

import aiohttp
import structlog

from failoverd import __version__
from failoverd.icmp import IcmpPinger, IcmpUnavailable
from failoverd.model import CheckResult, Health, HealthChange, ServerHealth
from failoverd.policy import (
    Check,
    CheckTiming,
    ExecCheck,
    HttpCheck,
    IcmpCheck,
    Policy,
    ServerPolicy,
    TcpCheck,
)
from failoverd.ports import Recorder

log = structlog.get_logger("failoverd.checks")

HTTP_BODY_LIMIT = 64 * 1024  # bytes of an HTTP body searched by expect_body
EXEC_OUTPUT_LIMIT = 4 * 1024  # bytes of an exec check's output kept; the rest is drained
REASON_DETAIL_LIMIT = 120  # characters of an exec check's output line added to its reason
CHANGES_BACKLOG = 10_000  # changes kept per subscriber that is not reading
CANARY_PREFIX = "canary:"

ProbeObserver = Callable[[str, CheckResult, float], None]
"""Called after every probe with (server, result, scheduling lag in seconds)."""


def format_seconds(seconds: float) -> str:
    """``1.0``, ``0.5``, ``0.25``: one decimal at least, more only when they matter."""
    if abs(seconds * 10 - round(seconds * 10)) < 1e-9:
        return f"{seconds:.1f}"
    return f"{seconds:g}"


def timeout_reason(seconds: float) -> str:
    return f"timeout after {format_seconds(seconds)}s"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}
_EPOLL_BATCH = 4096
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # Linux


@lru_cache(maxsize=1024)
def _pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


@lru_cache(maxsize=65536)
def _ip_literal(host: str) -> tuple[socket.AddressFamily, str] | None:
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return (socket.AF_INET6 if addr.version == 6 else socket.AF_INET), str(addr)


# --------------------------------------------------------------------------- probes


class Prober:
    """Runs probes. Owns what probes share: the HTTP session, ICMP sockets, exec children.

    Must be used and closed on one running event loop.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._pingers: dict[socket.AddressFamily, IcmpPinger | IcmpUnavailable] = {}
        self._children: set[asyncio.subprocess.Process] = set()
        self._connect_waiter: ConnectWaiter | None = None
        self._timers: Timers | None = None
        self._closed = False

    async def probe(self, check: Check) -> CheckResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            ok, reason = await self._dispatch(check)
        except (
            Exception
        ) as exc:  # a probe is a value, never an exception: a bug must not kill a round
            log.exception("check probe crashed", kind=check.kind, target=check.target)
            ok, reason = False, f"internal error: {type(exc).__name__}"
        return CheckResult(ok=ok, duration=loop.time() - start, reason=reason, kind=check.kind)

    async def _dispatch(self, check: Check) -> tuple[bool, str]:
        if isinstance(check, TcpCheck):
            return await self._tcp(check)
        if isinstance(check, HttpCheck):
            return await self._http(check)
        if isinstance(check, IcmpCheck):
            return await self._icmp(check)
        return await self._exec(check)

    # tcp -----------------------------------------------------------------------------

    async def _tcp(self, check: TcpCheck) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        timeout = check.timing.timeout
        deadline = loop.time() + timeout
        try:
            target = _ip_literal(check.host)
            if target is None:
                async with asyncio.timeout_at(deadline):
                    target = await _resolve(check.host, check.port, socket.SOCK_STREAM)
            family, addr = target
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                # Reset instead of FIN on close: a connect check has nothing to flush, and
                # thousands of checks a second would otherwise leave TIME_WAIT sockets on
                # the management host (HAProxy does the same for connect-only checks).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                # No quick ACK: the handshake's last ACK waits and the reset goes first, so
                # the server answers the SYN but never builds a connection nor wakes its
                # application — HAProxy's connect check does exactly this.
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 0)
                # A bare non-blocking connect rather than loop.sock_connect under
                # asyncio.timeout: this is the hot path of thousands of checks a second.
                err = sock.connect_ex((addr, check.port))
                if err == errno.EINPROGRESS:
                    await self._connects(loop).wait(sock, deadline)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
            finally:
                sock.close()
        except TimeoutError:
            return False, timeout_reason(timeout)
        except socket.gaierror:
            return False, f"cannot resolve {check.host}"
        except OSError as exc:
            return False, _os_reason(exc)
        return True, "ok"

    def _connects(self, loop: asyncio.AbstractEventLoop) -> ConnectWaiter:
        if self._connect_waiter is None:
            self._connect_waiter = ConnectWaiter(loop, self.timers(loop))
        return self._connect_waiter

    def timers(self, loop: asyncio.AbstractEventLoop) -> Timers:
        """The shared timers (round deadlines and connect deadlines) of this prober."""
        if self._timers is None:
            self._timers = Timers(loop)
        return self._timers

    # http ----------------------------------------------------------------------------

    def _http_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # force_close: every probe opens a fresh connection, so a stale keep-alive socket
            # can never fake a failure, and no idle connection outlives its probe. limit=0:
            # the number of probes in flight is already bounded by the number of checks.
            connector = aiohttp.TCPConnector(force_close=True, limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # bounded by each check's timeout
                headers={"User-Agent": f"failoverd/{__version__} health check"},
                auto_decompress=True,
                trust_env=False,  # a health check must reach the server, not a proxy
            )
        return self._session

    async def _http(self, check: HttpCheck) -> tuple[bool, str]:
        session = self._http_session()
        timeout = check.timing.timeout
        try:
            async with (
                asyncio.timeout(timeout),
                session.request(
                    check.method,
                    check.url,
                    headers=dict(check.headers),
                    ssl=check.tls_verify,
                    allow_redirects=False,  # a redirect is an answer to judge, not to follow
                ) as resp,
            ):
                status = resp.status
                good = status in check.expect_status if check.expect_status else 200 <= status < 300
                if not good:
                    return False, f"status {status}"
                if check.expect_body is not None:
                    body = await _read_bounded(resp.content, HTTP_BODY_LIMIT)
                    text = body.decode(resp.charset or "utf-8", errors="replace")
                    if _pattern(check.expect_body).search(text) is None:
                        return False, "body did not match"
        except TimeoutError:
            return False, timeout_reason(timeout)
        except aiohttp.ClientConnectorCertificateError as exc:
            detail = getattr(exc.certificate_error, "verify_message", "")
            return (
                False,
                f"certificate verify failed: {detail}" if detail else "certificate verify failed",
            )
        except aiohttp.ClientConnectorSSLError:
            return False, "tls handshake failed"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, socket.gaierror):
                return False, f"cannot resolve {exc.host}"
            return False, _os_reason(exc.os_error)
        except aiohttp.ServerDisconnectedError:
            return False, "server disconnected"
        except aiohttp.ClientPayloadError:
            return False, "malformed body"
        except aiohttp.ClientResponseError as exc:
            return False, f"malformed response: {exc.message}"[:REASON_DETAIL_LIMIT]
        except aiohttp.ClientError as exc:
            return False, f"http error: {type(exc).__name__}"
        except OSError as exc:
            return False, _os_reason(exc)
        return True, "ok"

    # icmp ----------------------------------------------------------------------------

    async def _icmp(self, check: IcmpCheck) -> tuple[bool, str]:
        timeout = check.timing.timeout
        try:
            async with asyncio.timeout(timeout):
                family, addr = await _resolve(check.host, 0, socket.SOCK_RAW)
                pinger = self._pinger(family)
                if isinstance(pinger, IcmpUnavailable):
                    return False, pinger.reason
                await pinger.ping(addr)
        except TimeoutError:
            return False, timeout_reason(timeout)
        except socket.gaierror:
            return False, f"cannot resolve {check.host}"
        except OSError as exc:
            return False, _os_reason(exc)
        return True, "ok"

    def _pinger(self, family: socket.AddressFamily) -> IcmpPinger | IcmpUnavailable:
        pinger = self._pingers.get(family)
        if pinger is None:
            try:
                pinger = IcmpPinger(asyncio.get_running_loop(), family)
            except IcmpUnavailable as exc:
                log.warning("icmp checks cannot run", reason=exc.reason)
                pinger = exc
            self._pingers[family] = pinger
        return pinger

    # exec ----------------------------------------------------------------------------

    async def _exec(self, check: ExecCheck) -> tuple[bool, str]:
        timeout = check.timing.timeout
        try:
            proc = await asyncio.create_subprocess_exec(
                *check.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, so the timeout kills it all
            )
        except FileNotFoundError:
            return False, f"command not found: {check.argv[0]}"
        except PermissionError:
            return False, f"permission denied: {check.argv[0]}"
        except OSError as exc:
            return False, _os_reason(exc)
        self._children.add(proc)
        assert proc.stdout is not None  # asked for above
        reader = asyncio.ensure_future(_read_bounded(proc.stdout, EXEC_OUTPUT_LIMIT))
        try:
            async with asyncio.timeout(timeout):
                code = await proc.wait()
                output = await reader
        except TimeoutError:
            return False, timeout_reason(timeout)
        finally:
            reader.cancel()
            await _kill_and_reap(proc)
            self._children.discard(proc)
        if code == 0:
            return True, "ok"
        reason = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        line = next((ln.strip() for ln in output.decode(errors="replace").splitlines()), "")
        if line:
            reason = f"{reason}: {line}"[:REASON_DETAIL_LIMIT]
        return False, reason

    async def close(self) -> None:
        """Close the session and the ICMP sockets, kill and reap every exec child."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
        for pinger in self._pingers.values():
            if isinstance(pinger, IcmpPinger):
                pinger.close()
        self._pingers.clear()
        if self._connect_waiter is not None:
            self._connect_waiter.close()
            self._connect_waiter = None
        if self._timers is not None:
            self._timers.close()
            self._timers = None
        for proc in list(self._children):
            await _kill_and_reap(proc)
        self._children.clear()


async def _resolve(host: str, port: int, kind: int) -> tuple[socket.AddressFamily, str]:
    """An address for host: literals without a lookup (the common, cheap case)."""
    literal = _ip_literal(host)
    if literal is not None:
        family, addr = literal
        return family, addr
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=kind)
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


async def _read_bounded(stream: asyncio.StreamReader | aiohttp.StreamReader, limit: int) -> bytes:
    """The first `limit` bytes of a stream; reads (and drops) the rest so a writer never blocks
    on a full pipe. For HTTP, stops at the limit (the connection is closed anyway)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        if size < limit:
            chunks.append(chunk[: limit - size])
            size += len(chunks[-1])
        elif isinstance(stream, aiohttp.StreamReader):
            break
    return b"".join(chunks)


async def _kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group, then wait for the child so it is no zombie."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Shielded: a second cancellation must not leave the child unreaped.
    await asyncio.shield(proc.wait())


# --------------------------------------------------------------------------- health


CheckKey = tuple[Check, int]  # the check and its occurrence among equal checks of a server


def check_keys(checks: Iterable[Check]) -> list[CheckKey]:
    seen: dict[Check, int] = {}
    keys: list[CheckKey] = []
    for check in checks:
        n = seen.get(check, 0)
        seen[check] = n + 1
        keys.append((check, n))
    return keys


@dataclass
class CheckTrack:
    """Hysteresis of one check: mutable, owned by one ServerTracker."""

    timing: CheckTiming
    health: Health = Health.UNKNOWN
    ok_run: int = 0
    fail_run: int = 0
    last: CheckResult | None = None

    def record(self, result: CheckResult) -> None:
        self.last = result
        if result.ok:
            self.ok_run += 1
            self.fail_run = 0
            if self.ok_run >= self.timing.rise:
                self.health = Health.UP
        else:
            self.fail_run += 1
            self.ok_run = 0
            if self.fail_run >= self.timing.fall:
                self.health = Health.DOWN


@dataclass
class ServerTracker:
    """Pure state machine from probe results to a ServerHealth (see the module docstring).

    ``previous`` carries a server's verdict across a reload that changed its checks;
    ``tracks`` carries the hysteresis of the checks that did not change.
    """

    name: str
    require: Literal["all", "any"]
    keys: list[CheckKey]
    now: float
    canary: bool = False
    previous: ServerHealth | None = None
    tracks: dict[CheckKey, CheckTrack] = field(default_factory=dict)
    view: ServerHealth = field(init=False)
    ordered: list[CheckTrack] = field(init=False)

    def __post_init__(self) -> None:
        self.tracks = {
            key: self.tracks.get(key) or CheckTrack(timing=key[0].timing) for key in self.keys
        }
        # In check order; the hot path never hashes a check (frozen dataclasses rehash
        # every field on every lookup).
        self.ordered = [self.tracks[key] for key in self.keys]
        prev = self.previous
        self.view = ServerHealth(
            name=self.name,
            health=prev.health if prev else Health.UNKNOWN,
            failing=False,
            since=prev.since if prev else self.now,
            last_round_at=prev.last_round_at if prev else None,
            last_reason=prev.last_reason if prev else "not checked yet",
            canary=self.canary,
        )
        self.view = self._combine(self.now, touched=False)

    @classmethod
    def for_policy(cls, server: ServerPolicy, now: float, *, canary: bool = False) -> ServerTracker:
        return cls(server.name, server.require, check_keys(server.checks), now, canary)

    def record(self, key: CheckKey, result: CheckResult, now: float) -> ServerHealth:
        """Account one probe of one check; returns the server's new health."""
        return self.record_track(self.tracks[key], result, now)

    def record_track(self, track: CheckTrack, result: CheckResult, now: float) -> ServerHealth:
        """Like record(), given the check's track itself (one of ``self.ordered``)."""
        track.record(result)
        self.view = self._combine(now, touched=True)
        return self.view

    def _combine(self, now: float, *, touched: bool) -> ServerHealth:
        old = self.view
        if len(self.keys) == 1:
            # One check (the common case, and the hot path at scale): its state is the server's.
            only = self.ordered[0]
            health = old.health if only.health is Health.UNKNOWN else only.health
            return ServerHealth(
                name=self.name,
                health=health,
                failing=only.last is not None and not only.last.ok,
                since=now if health is not old.health else old.since,
                last_round_at=now if touched else old.last_round_at,
                last_reason=only.last.reason if only.last is not None else old.last_reason,
                consecutive_ok=only.ok_run,
                consecutive_fail=only.fail_run,
                canary=self.canary,
            )
        tracks = self.ordered
        healths = [t.health for t in tracks]
        results = [t.last for t in tracks if t.last is not None]
        verdict: Health | None
        if self.require == "all":
            if Health.DOWN in healths:
                verdict = Health.DOWN
            elif all(h is Health.UP for h in healths):
                verdict = Health.UP
            else:
                verdict = None
            failing = any(not r.ok for r in results)
            ok_run = min(t.ok_run for t in tracks) if tracks else 0
            fail_run = max(t.fail_run for t in tracks) if tracks else 0
        else:
            if Health.UP in healths:
                verdict = Health.UP
            elif all(h is Health.DOWN for h in healths):
                verdict = Health.DOWN
            else:
                verdict = None
            failing = bool(results) and all(not r.ok for r in results)
            ok_run = max(t.ok_run for t in tracks) if tracks else 0
            fail_run = min(t.fail_run for t in tracks) if tracks else 0
        health = old.health if verdict is None else verdict
        return ServerHealth(
            name=self.name,
            health=health,
            failing=failing,
            since=now if health is not old.health else old.since,
            last_round_at=now if touched else old.last_round_at,
            last_reason=_round_reason(self.keys, tracks) if results else old.last_reason,
            consecutive_ok=ok_run,
            consecutive_fail=fail_run,
            canary=self.canary,
        )


def _round_reason(keys: list[CheckKey], tracks: list[CheckTrack]) -> str:
    failed = [(k, t.last) for k, t in zip(keys, tracks, strict=True) if t.last and not t.last.ok]
    if not failed:
        return "ok"
    if len(keys) == 1:
        return failed[0][1].reason
    return "; ".join(f"{k[0].kind} {k[0].target}: {r.reason}" for k, r in failed)


# --------------------------------------------------------------------------- stream


class _Subscription:
    """One subscriber of the change stream. Bounded: when the reader lags more than
    `backlog` changes behind, the oldest are dropped (``current()`` stays the truth)."""

    def __init__(self, backlog: int) -> None:
        self._items: deque[HealthChange] = deque()
        self._backlog = backlog
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    def push(self, change: HealthChange) -> None:
        if self._closed:
            return
        if len(self._items) >= self._backlog:
            self._items.popleft()
            self.dropped += 1
        self._items.append(change)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> HealthChange:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    async def aclose(self) -> None:
        self.close()


# --------------------------------------------------------------------------- monitor


def check_phase(server: str, key: CheckKey) -> float:
    """A stable offset in [0, 1) of the interval for this check of this server."""
    check, n = key
    digest = zlib.crc32(f"{server}\0{n}\0{check.kind}\0{check.target}".encode())
    return digest / 2**32


def next_deadline(now: float, phase: float, interval: float) -> float:
    """The first time >= now that is ``phase * interval`` past a multiple of ``interval``."""
    offset = phase * interval
    k = math.ceil((now - offset) / interval)
    return offset + k * interval


@dataclass
class _Entry:
    policy: ServerPolicy
    tracker: ServerTracker
    tasks: dict[CheckKey, asyncio.Task[None] | TcpJob] = field(default_factory=dict)


def canary_servers(policy: Policy) -> list[ServerPolicy]:
    """Each canary as a one-check server named ``canary:<target>``."""
    out: list[ServerPolicy] = []
    names: set[str] = set()
    for check in policy.guards.canaries:
        name = f"{CANARY_PREFIX}{check.target}"
        if name in names:
            name = f"{CANARY_PREFIX}{check.kind}:{check.target}"
        n = 2
        base = name
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.add(name)
        out.append(ServerPolicy(name=name, checks=(check,), require="all"))
    return out


class HealthMonitor:
    """The health-check engine (``ports.HealthSource``): servers and canaries of a policy.

    ``since`` and ``last_round_at`` in the ServerHealth values are event-loop times.
    ``changes()`` yields a HealthChange whenever a server's ``health`` or ``failing``
    changes, and one with ``previous=None`` when a server starts being monitored.
    """

    def __init__(
        self,
        policy: Policy,
        recorder: Recorder | None = None,
        *,
        observer: ProbeObserver | None = None,
        backlog: int = CHANGES_BACKLOG,
    ) -> None:
        self._recorder = recorder
        self._observer = observer
        self._backlog = backlog
        self._entries: dict[str, _Entry] = {}
        self._health: dict[str, ServerHealth] = {}
        self._subscribers: weakref.WeakSet[_Subscription] = weakref.WeakSet()
        self._prober: Prober | None = None
        self._rounds: TcpRounds | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._policy = policy
        self._stopped = False

    # HealthSource ----------------------------------------------------------------------

    def current(self) -> Mapping[str, ServerHealth]:
        return MappingProxyType(dict(self._health))

    def changes(self) -> AsyncIterator[HealthChange]:
        sub = _Subscription(self._backlog)
        if self._stopped:
            sub.close()
        else:
            self._subscribers.add(sub)
        return sub

    def apply_policy(self, policy: Policy) -> None:
        """Servers whose policy is unchanged keep their tasks, history and state. A server
        whose checks changed keeps its verdict and the hysteresis of the unchanged checks."""
        self._policy = policy
        if self._loop is not None:
            self._sync()

    # lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._prober = Prober()
        # Linux (epoll) runs TCP checks to addresses as callbacks; elsewhere, as tasks.
        if hasattr(select, "epoll"):
            self._rounds = TcpRounds(self._loop, self._account_tcp)
        self._stopped = False
        self._sync()

    async def stop(self) -> None:
        runs = [t for e in self._entries.values() for t in e.tasks.values()]
        for run in runs:
            run.cancel()
        await asyncio.gather(
            *(t for t in runs if isinstance(t, asyncio.Task)), return_exceptions=True
        )
        for entry in self._entries.values():
            entry.tasks.clear()
        if self._rounds is not None:
            self._rounds.close()
            self._rounds = None
        if self._prober is not None:
            await self._prober.close()
            self._prober = None
        self._loop = None
        self._stopped = True
        for sub in list(self._subscribers):
            sub.close()
        self._subscribers.clear()

    def task_count(self) -> int:
        """Checks being run (a task each, or a job of the TCP rounds)."""
        return sum(len(e.tasks) for e in self._entries.values())

    # internals -------------------------------------------------------------------------

    def _wanted(self) -> dict[str, tuple[ServerPolicy, bool]]:
        wanted = {name: (sp, False) for name, sp in self._policy.servers.items()}
        for sp in canary_servers(self._policy):
            wanted[sp.name] = (sp, True)
        return wanted

    def _sync(self) -> None:
        assert self._loop is not None  # only called once started
        now = self._loop.time()
        wanted = self._wanted()
        for name in list(self._entries):
            if name not in wanted:
                for task in self._entries.pop(name).tasks.values():
                    task.cancel()
                self._health.pop(name, None)
        for name, (sp, canary) in wanted.items():
            entry = self._entries.get(name)
            if entry is None:
                tracker = ServerTracker.for_policy(sp, now, canary=canary)
                entry = _Entry(sp, tracker)
                self._entries[name] = entry
                self._publish(name, None, tracker.view)
            elif entry.policy != sp or entry.tracker.canary != canary:
                old = entry.tracker
                tracker = ServerTracker(
                    name,
                    sp.require,
                    check_keys(sp.checks),
                    now,
                    canary,
                    previous=old.view,
                    tracks=dict(old.tracks),
                )
                entry.policy, entry.tracker = sp, tracker
                self._publish(name, old.view, tracker.view)
            keys = set(entry.tracker.keys)
            for key in list(entry.tasks):
                if key not in keys:
                    entry.tasks.pop(key).cancel()
            for key in entry.tracker.keys:
                if key not in entry.tasks:
                    # The first deadline is fixed now, not when the task first runs, so a
                    # busy loop at start makes that round late (visible as lag), not skipped.
                    phase = check_phase(name, key)
                    check = key[0]
                    first = next_deadline(now, phase, check.timing.interval)
                    literal = _ip_literal(check.host) if isinstance(check, TcpCheck) else None
                    if (
                        isinstance(check, TcpCheck)
                        and literal is not None
                        and self._rounds is not None
                    ):
                        job = TcpJob(
                            name,
                            entry.tracker.tracks[key],
                            check,
                            literal[0],
                            (literal[1], check.port),
                            phase,
                            first,
                        )
                        self._rounds.add(job)
                        entry.tasks[key] = job
                        continue
                    entry.tasks[key] = self._loop.create_task(
                        self._run(name, key, first),
                        name=f"check {name} {check.kind} {check.target}",
                    )

    def _publish(self, name: str, previous: ServerHealth | None, current: ServerHealth) -> None:
        self._health[name] = current
        if (
            previous is None
            or previous.health is not current.health
            or previous.failing != current.failing
        ):
            change = HealthChange(server=name, previous=previous, current=current)
            for sub in list(self._subscribers):
                sub.push(change)

    async def _run(self, name: str, key: CheckKey, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        prober = self._prober
        assert prober is not None  # tasks exist only between start() and stop()
        check = key[0]
        interval = check.timing.interval
        timers = prober.timers(loop)
        # The track outlives reloads that keep this check (the new tracker adopts it).
        track = self._entries[name].tracker.tracks[key]
        while True:
            await timers.sleep_until(deadline)
            lag = loop.time() - deadline
            result = await prober.probe(check)
            self._account(name, track, result, lag)
            deadline += interval
            now = loop.time()
            if deadline < now:
                # The probe outlasted the interval (timeout >= interval) or the loop stalled:
                # skip the missed slots, keep the phase; never run rounds back to back.
                deadline = next_deadline(now, check_phase(name, key), interval)

    def _account_tcp(self, job: TcpJob, result: CheckResult, lag: float) -> None:
        self._account(job.name, job.track, result, lag)

    def _account(self, name: str, track: CheckTrack, result: CheckResult, lag: float) -> None:
        if self._recorder is not None:
            self._recorder.check_done(name, result.kind, result.ok, result.duration)
        if self._observer is not None:
            self._observer(name, result, lag)
        entry = self._entries.get(name)
        if entry is None or not any(t is track for t in entry.tracker.ordered):
            return  # removed by a reload while this probe ran
        assert self._loop is not None
        previous = entry.tracker.view
        self._publish(name, previous, entry.tracker.record_track(track, result, self._loop.time()))


class ConnectWaiter:
    """Waits for many non-blocking connects at once.

    On Linux the sockets go into one private epoll set (EPOLLOUT, one-shot) whose own fd is
    the only thing the event loop watches: registering a socket is one C call instead of
    the selector bookkeeping of ``loop.add_writer``/``remove_writer``, which dominated the
    cost of a TCP check at thousands of checks a second. A closed socket leaves the set by
    itself. Elsewhere it falls back to ``loop.add_writer``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timers: Timers) -> None:
        self._loop = loop
        self._timers = timers
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            loop.add_reader(self._epoll.fileno(), self._ready)
            timers.before_expire = self._ready

    async def wait(self, sock: socket.socket, deadline: float) -> None:
        """Until `sock` (connecting, non-blocking) is writable — connected or failed — or
        TimeoutError at `deadline` (loop time). The caller closes the socket afterwards,
        which also takes it out of the epoll set."""
        fd = sock.fileno()
        fut: asyncio.Future[None] = self._loop.create_future()
        self._timers.at(deadline, fut, expire=True)
        if self._epoll is None:
            self._loop.add_writer(fd, _set_done, fut)
            try:
                await fut
            finally:
                self._loop.remove_writer(fd)
            return
        self._epoll.register(fd, select.EPOLLOUT | select.EPOLLONESHOT)
        self._waiters[fd] = fut
        try:
            await fut
        finally:
            del self._waiters[fd]

    def _ready(self) -> None:
        if self._epoll is None:
            return
        # Drain everything that is ready now: a busy loop may find thousands of connects
        # done at once, and any left for the next iteration could lose to its deadline.
        while True:
            events = self._epoll.poll(0, _EPOLL_BATCH)
            for fd, _ in events:
                fut = self._waiters.get(fd)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            if len(events) < _EPOLL_BATCH:
                return

    def close(self) -> None:
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        for fut in self._waiters.values():
            fut.cancel()


@dataclass(eq=False)
class TcpJob:
    """One TCP check of one server driven by TcpRounds (mutable, owned by the rounds)."""

    name: str
    track: CheckTrack
    check: TcpCheck
    family: socket.AddressFamily
    address: tuple[str, int]
    phase: float
    deadline: float  # of the next (or current) round
    ident: int = 0
    round: int = 0  # bumped when a round ends, so a stale expiry entry is ignored
    sock: socket.socket | None = None
    started: float = 0.0
    lag: float = 0.0
    active: bool = True
    owner: TcpRounds | None = None

    def cancel(self) -> None:
        if self.owner is not None:
            self.owner.remove(self)


_START, _EXPIRE = 0, 1


def _round_of(job: TcpJob) -> int:
    return job.round  # read through a call: the attribute may change under a callback


class TcpRounds:
    """Rounds of TCP connect checks to IP addresses, as plain callbacks.

    This is the check kind that scales to thousands of targets, so it skips the per-round
    machinery of the general path (a task waking on futures): a heap of (when, seq, job,
    round, what) tuples — all atomic, so the garbage collector never tracks them — one loop
    timer for the earliest entry, and one epoll set for the connects in flight. A round
    creates no object that outlives it, so nothing is promoted to the old GC generations
    and full collections (which pause the loop) stay rare. Semantics are those of the
    general path: absolute deadlines, one round at a time per check, missed slots skipped.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_result: Callable[[TcpJob, CheckResult, float], None],
    ) -> None:
        self._loop = loop
        self._on_result = on_result
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self._jobs: dict[int, TcpJob] = {}
        self._by_fd: dict[int, TcpJob] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf
        self._slack = time.get_clock_info("monotonic").resolution
        self._epoll: select.epoll | None = select.epoll()
        loop.add_reader(self._epoll.fileno(), self._on_ready)

    def add(self, job: TcpJob) -> None:
        self._seq += 1
        job.ident, job.owner = self._seq, self
        self._jobs[job.ident] = job
        self._push(job.deadline, job, _START)

    def remove(self, job: TcpJob) -> None:
        job.active = False
        self._jobs.pop(job.ident, None)
        self._close_socket(job)

    def __len__(self) -> int:
        return len(self._jobs)

    def close(self) -> None:
        for job in list(self._jobs.values()):
            self.remove(job)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None

    # timers ----------------------------------------------------------------------------

    def _push(self, when: float, job: TcpJob, what: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, job.ident, job.round, what))
        if when < self._armed:
            self._arm(when)

    def _fire(self) -> None:
        self._handle, self._armed = None, math.inf
        end = self._loop.time() + self._slack
        heap, jobs = self._heap, self._jobs
        drained = False
        while heap and heap[0][0] <= end:
            _, _, ident, rnd, what = heapq.heappop(heap)
            job = jobs.get(ident)
            if job is None or job.round != rnd:
                continue  # removed, or the round already ended
            if what == _START:
                self._start(job)
            elif job.sock is not None:
                if not drained:
                    # A busy loop may run this long after its I/O poll: collect the
                    # connects that finished meanwhile, so only silence times out.
                    self._on_ready()
                    drained = True
                    if _round_of(job) != rnd:
                        continue  # it answered meanwhile
                timeout = job.check.timing.timeout
                self._finish(job, False, timeout_reason(timeout))
        # Rounds started above may have armed an earlier timer already.
        if heap and heap[0][0] < self._armed:
            self._arm(heap[0][0])

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._fire)
        self._armed = when

    # a round -------------------------------------------------------------------------

    def _start(self, job: TcpJob) -> None:
        now = self._loop.time()
        job.started, job.lag = now, now - job.deadline
        try:
            sock = socket.socket(job.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self._finish(job, False, _os_reason(exc))
            return
        job.sock = sock
        try:
            # As in Prober._tcp: reset on close, and no final ACK before it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 0)
            err = sock.connect_ex(job.address)
            if err == errno.EINPROGRESS and self._epoll is not None:
                fd = sock.fileno()
                self._by_fd[fd] = job
                self._epoll.register(fd, select.EPOLLOUT | select.EPOLLONESHOT)
                self._push(now + job.check.timing.timeout, job, _EXPIRE)
                return
        except OSError as exc:
            self._finish(job, False, _os_reason(exc))
            return
        self._finish(job, err == 0, "ok" if err == 0 else _os_reason(OSError(err, "")))

    def _on_ready(self) -> None:
        if self._epoll is None:
            return
        by_fd = self._by_fd
        while True:
            events = self._epoll.poll(0, _EPOLL_BATCH)
            for fd, _ in events:
                job = by_fd.get(fd)
                if job is None or job.sock is None:
                    continue
                err = job.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._finish(job, False, _os_reason(OSError(err, os.strerror(err))))
                else:
                    self._finish(job, True, "ok")
            if len(events) < _EPOLL_BATCH:
                return

    def _close_socket(self, job: TcpJob) -> None:
        sock, job.sock = job.sock, None
        if sock is not None:
            self._by_fd.pop(sock.fileno(), None)
            sock.close()  # also leaves the epoll set

    def _finish(self, job: TcpJob, ok: bool, reason: str) -> None:
        self._close_socket(job)
        now = self._loop.time()
        result = CheckResult(ok=ok, duration=now - job.started, reason=reason, kind="tcp")
        job.round += 1
        if not job.active:
            return
        interval = job.check.timing.interval
        job.deadline += interval
        if job.deadline < now:
            # Missed slots (a stalled loop) are skipped, keeping the phase.
            job.deadline = next_deadline(now, job.phase, interval)
        self._push(job.deadline, job, _START)
        try:
            self._on_result(job, result, job.lag)
        except Exception:  # a bug in accounting must not stop this check's rounds
            log.exception("recording a check result failed", server=job.name)


class Timers:
    """Many timers behind one event-loop timer.

    asyncio keeps every ``call_at`` in one heap ordered by a Python-level ``__lt__``; with a
    sleeping round and a connect deadline per check, thousands of checks a second spent
    most of their time comparing timer handles. Here deadlines live in a heap of tuples
    (compared in C) and only the earliest one is armed on the loop; a fired batch wakes
    every due waiter at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[None], bool]] = []
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf
        # asyncio fires a timer up to one clock resolution early; so do we, consistently.
        self._slack = time.get_clock_info("monotonic").resolution
        self.before_expire: Callable[[], None] | None = None

    def at(self, deadline: float, fut: asyncio.Future[None], *, expire: bool) -> None:
        """At `deadline`, complete `fut` (or fail it with TimeoutError when `expire`)."""
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, fut, expire))
        if deadline < self._armed:
            self._arm(deadline)

    async def sleep_until(self, deadline: float) -> None:
        """Wake at an absolute loop time (asyncio.sleep takes a delay, which drifts)."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self.at(deadline, fut, expire=False)
        await fut

    def _arm(self, deadline: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(deadline, self._fire)
        self._armed = deadline

    def _fire(self) -> None:
        self._handle, self._armed = None, math.inf
        end = self._loop.time() + self._slack
        heap = self._heap
        checked = False
        while heap and heap[0][0] <= end:
            _, _, fut, expire = heapq.heappop(heap)
            if fut.done():  # a waiter that finished or was cancelled meanwhile
                continue
            if not expire:
                fut.set_result(None)
                continue
            if not checked and self.before_expire is not None:
                # A busy loop may run this long after its I/O poll: collect what finished
                # meanwhile first, so only what really did not answer times out.
                self.before_expire()
                checked = True
                if fut.done():
                    continue
            fut.set_exception(TimeoutError())
        if heap and heap[0][0] < self._armed:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle, self._armed = None, math.inf
        for _, _, fut, _ in self._heap:
            fut.cancel()
        self._heap.clear()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
