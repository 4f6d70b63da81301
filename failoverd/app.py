"""The composition root: ``failoverd run``.

Builds everything from the policy (metrics, OVH adapter, health monitor, journal, hooks,
supervisor, HTTP API), runs it in one event loop, and owns the process lifecycle:

- **Signals only set flags.** SIGTERM/SIGINT ask for a stop, SIGHUP for a reload; the main
  loop below acts on them between its own steps, never inside a handler.
- **Root tasks are supervised.** The supervisor runs as a named task; if it ever returns or
  dies while no stop was asked for, the daemon logs one clear line and exits 1 (systemd's
  ``Restart=on-failure`` brings it back) rather than serving a healthy-looking /healthz
  over a dead engine.
- **Reload is atomic.** The new file is parsed and validated completely; only then is it
  handed to the health monitor and the supervisor (each swaps it in one step). A broken
  file is logged problem by problem, ``failoverd_config_last_reload_successful`` drops to
  0 and the old policy keeps running. ``daemon.listen``, ``daemon.state_dir`` and ``api``
  are read at start only; a reload that changes them says so.
- **sd_notify.** ``READY=1`` once the HTTP API listens and the supervisor runs;
  ``RELOADING=1``/``READY=1`` around a reload; ``WATCHDOG=1`` from the main loop only while
  the supervisor completed a cycle recently (a wedged engine is restarted by systemd);
  ``STOPPING=1`` on the way out.
- **Graceful, then bounded shutdown.** The supervisor is asked to stop (it lets an
  in-flight move reach its task id in the journal); after ``SHUTDOWN_GRACE`` seconds it is
  cancelled; the other parts close within what is left of ``STOP_BUDGET`` (25 s), inside
  systemd's ``TimeoutStopSec=30s``.

Degraded operation, by decision: failoverd keeps running when the OVH API cannot be used
(no credentials, bad credentials, API unreachable). Health checks, ``/status``,
``/metrics`` and the alerts on them stay useful, and the first move that is needed fails
with the API's reason in the log and the metrics instead of the daemon crash-looping.
Only what makes the daemon itself unusable stops it: an invalid policy at start (exit 78),
a state directory held by another instance or unusable, a listen address that cannot be
bound (exit 1).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import configparser
import contextlib
import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import structlog

from failoverd import __version__
from failoverd.checks import HealthMonitor
from failoverd.config import load_policy
from failoverd.errors import ConfigError, FailoverdError, OvhAuthError
from failoverd.hooks import Hooks
from failoverd.journal import Journal, StateDirLock
from failoverd.logs import configure_logging, register_secret, set_level
from failoverd.metrics import Metrics
from failoverd.model import BlockInfo, Eligibility, MoveOutcome, MoveTicket, ServiceInfo, TaskStatus
from failoverd.ovhapi import OvhClient
from failoverd.policy import Block, DaemonPolicy, Policy
from failoverd.ports import OvhApi
from failoverd.sdnotify import Notifier
from failoverd.supervisor import Supervisor
from failoverd.web import HttpApi, WebServer

log = structlog.get_logger("failoverd.app")
T = TypeVar("T")

EX_OK, EX_FAIL = 0, 1
# Shutdown stays inside systemd's TimeoutStopSec=30s: the supervisor gets 20 s to let a
# submission reach the journal (its own grace is 15 s), 2 s more once cancelled, and the
# rest of the parts share what is left of 25 s.
STOP_BUDGET = 25.0
SHUTDOWN_GRACE = 20.0
CANCEL_GRACE = 2.0
CLEANUP_GRACE = 5.0  # at most, per part
MIN_CLEANUP = 0.5  # at least, per part, even past the budget
MAIN_TICK = 1.0  # the main loop's heartbeat (watchdog pings, root task checks)
MAIN_STALE = 10.0  # /healthz fails when the main loop has not ticked for this long
SUPERVISOR_STALE = 30.0  # ... or the supervisor has not completed a cycle for this long
STARTUP_GRACE = 60.0  # time the supervisor gets for its first cycle (journal, routing)
ON_LOOP_TIMEOUT = 10.0  # a thread waiting for the loop (a scrape's snapshot) gives up then

# Environment variables whose values must never be printed (registered with the logs).
SECRET_ENV = ("OVH_APPLICATION_SECRET", "OVH_CONSUMER_KEY", "OVH_CLIENT_SECRET", "FAILOVERD_TOKEN")
SECRET_CONF_KEYS = ("application_secret", "consumer_key", "client_secret")


def run(config: Path) -> int:
    """``failoverd run -c FILE``: the exit code (0, 1; ConfigError → 78 by the CLI)."""
    policy = load_policy(config)  # ConfigError: the CLI prints every problem, exit 78
    daemon = policy.daemon
    configure_logging(daemon.log_format, daemon.log_level)
    register_secrets(policy, os.environ)
    notifier = Notifier.from_env()
    try:
        return asyncio.run(Daemon(config, policy, notifier).serve())
    except FailoverdError as exc:
        # Startup failures (lock held, port taken, state dir unusable): one clear line in
        # the log; the CLI prints it on stderr too and exits 1.
        log.error("failoverd cannot start", reason=str(exc))
        raise


def register_secrets(policy: Policy, environ: Mapping[str, str]) -> None:
    """Defence in depth: mask credentials and the admin token in every log line."""
    register_secret(*(environ.get(name) for name in SECRET_ENV))
    conf = policy.api.config_file
    if conf is not None:
        parser = configparser.RawConfigParser()
        with contextlib.suppress(OSError, configparser.Error, UnicodeDecodeError):
            parser.read(conf)
        for section in parser.sections():
            register_secret(*(parser.get(section, k, fallback=None) for k in SECRET_CONF_KEYS))


def read_admin_token(daemon: DaemonPolicy, environ: Mapping[str, str]) -> str | None:
    """The admin token: daemon.admin_token_file, else $FAILOVERD_TOKEN; None disables."""
    if daemon.admin_token_file is not None:
        try:
            token = daemon.admin_token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            log.error(
                "cannot read the admin token file; admin API disabled",
                path=str(daemon.admin_token_file),
                reason=getattr(exc, "strerror", None) or type(exc).__name__,
            )
            return None
        if not token:
            log.warning(
                "admin token file is empty; admin API disabled",
                path=str(daemon.admin_token_file),
            )
            return None
    else:
        token = environ.get("FAILOVERD_TOKEN", "").strip()
        if not token:
            return None
    register_secret(token)
    return token


class UnavailableApi:
    """``ports.OvhApi`` when no usable credentials exist: every call fails with the reason.

    Lets the daemon run degraded (checks, /status, /metrics) instead of refusing to start;
    the supervisor sees ordinary permanent API errors.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _fail(self) -> OvhAuthError:
        return OvhAuthError(self.reason)

    async def block_info(self, block: Block) -> BlockInfo:
        raise self._fail()

    async def service_info(self, name: str) -> ServiceInfo:
        raise self._fail()

    async def can_move(self, block: Block, target: str) -> Eligibility:
        raise self._fail()

    async def submit_move(self, block: Block, target: str, *, deadline: float) -> MoveTicket:
        raise self._fail()

    async def task_status(self, ticket: MoveTicket) -> TaskStatus:
        raise self._fail()

    async def find_move_task(self, block: Block, target: str) -> MoveTicket | None:
        raise self._fail()

    async def wait_for_move(self, ticket: MoveTicket, *, deadline: float) -> MoveOutcome:
        raise self._fail()

    async def close(self) -> None:
        return None


class Daemon:
    """One run of the daemon: build, serve, reload, stop."""

    def __init__(
        self,
        config: Path,
        policy: Policy,
        notifier: Notifier,
        *,
        environ: Mapping[str, str] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.policy = policy
        # What the process started with: listen, state_dir and the OVH client's settings
        # stay as they were then, whatever later reloads say.
        self.started_with = policy
        self.notifier = notifier
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.wall = wall
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._stop_signal: str | None = None
        self._reload_requested = False
        self._started_at = 0.0
        self._main_tick = 0.0
        self.heap_frozen = False  # gc.freeze() done after start-up (see _main_loop)
        self.supervisor: Supervisor | None = None
        self.metrics: Metrics | None = None
        self.http: HttpApi | None = None
        self.health_monitor: HealthMonitor | None = None
        self.journal: Journal | None = None
        # Shutdown timings (module defaults; a test may shorten them on its instance).
        self.stop_budget = STOP_BUDGET
        self.shutdown_grace = SHUTDOWN_GRACE
        self.cancel_grace = CANCEL_GRACE
        self.cleanup_grace = CLEANUP_GRACE

    # ------------------------------------------------------------------ signals

    def request_stop(self, why: str = "request") -> None:
        self._stop_requested = True
        self._stop_signal = self._stop_signal or why
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    @staticmethod
    def _remove_signals(loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    # ------------------------------------------------------------------ health

    def health(self) -> tuple[bool, str]:
        """For /healthz and the watchdog: is the daemon doing its job right now?"""
        loop = asyncio.get_running_loop()
        now = loop.time()
        main_age = now - self._main_tick
        if main_age > MAIN_STALE:
            return False, f"main loop has not ticked for {main_age:.0f}s"
        sup = self.supervisor
        last = sup.last_tick if sup is not None else None
        if last is None or last <= 0:
            if now - self._started_at < STARTUP_GRACE:
                return True, "starting: the supervisor has not completed its first cycle yet"
            return (
                False,
                f"the supervisor has not completed a cycle in {now - self._started_at:.0f}s",
            )
        age = now - last
        if age > SUPERVISOR_STALE:
            return False, f"the supervisor has not completed a cycle for {age:.0f}s"
        return True, f"supervisor cycle {age:.1f}s ago"

    # ------------------------------------------------------------------ lifecycle

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_exception)
        self._started_at = self._main_tick = loop.time()
        self._install_signals(loop)
        policy = self.policy
        lock = StateDirLock(policy.daemon.state_dir)
        lock.acquire()  # AlreadyRunning: one clear line, exit 1
        cleanups: list[tuple[str, Callable[[], Any]]] = []
        sup_stop = asyncio.Event()
        sup_task: asyncio.Task[None] | None = None
        try:
            journal = Journal.open(policy.daemon.state_dir)
            self.journal = journal
            cleanups.append(("journal", journal.close))
            metrics = Metrics()
            self.metrics = metrics
            metrics.declare(policy)
            metrics.config_reloaded(True, self.wall())
            api = self._build_api(metrics)
            cleanups.append(("OVH client", api.close))
            monitor = HealthMonitor(policy, metrics)
            self.health_monitor = monitor
            hooks = Hooks()
            cleanups.append(("hooks", hooks.close))
            sup = Supervisor(
                policy, api=api, health=monitor, journal=journal, recorder=metrics, hooks=hooks
            )
            self.supervisor = sup
            metrics.bind_snapshot(on_loop(sup.snapshot, loop))  # /metrics renders in a thread
            await monitor.start()
            cleanups.append(("health checks", monitor.stop))
            http = HttpApi(
                sup,
                metrics.render,
                token=read_admin_token(policy.daemon, self.environ),
                healthy=self.health,
            )
            self.http = http
            web = WebServer(http, policy.daemon.listen_host, policy.daemon.listen_port)
            await web.start()
            cleanups.append(("HTTP API", web.stop))
            sup_task = asyncio.create_task(sup.run(sup_stop), name="supervisor")
            sup_task.add_done_callback(lambda _: self._wake.set())
            log.info(
                "failoverd started",
                version=__version__,
                listen=web.url,
                state_dir=str(policy.daemon.state_dir),
                groups=len(policy.groups),
                servers=len(policy.servers),
                dry_run=policy.daemon.dry_run,
                admin_api=http.token is not None,
                pid=os.getpid(),
            )
            self.notifier.ready(self._status_line(web.url))
            return await self._main_loop(sup_task)
        finally:
            self.notifier.stopping()
            await self._shutdown(sup_task, sup_stop, cleanups)
            self._remove_signals(loop)
            lock.release()

    def _build_api(self, metrics: Metrics) -> OvhApi:
        try:
            return OvhClient.from_policy(self.policy.api, metrics)
        except OvhAuthError as exc:
            log.error(
                "no usable OVH credentials; running degraded: health checks, /status and "
                "/metrics work, but no block can be moved",
                reason=str(exc),
            )
            return UnavailableApi(f"no usable OVH credentials: {exc}")

    async def _main_loop(self, sup_task: asyncio.Task[None]) -> int:
        loop = asyncio.get_running_loop()
        interval = MAIN_TICK
        if self.notifier.watchdog_interval is not None:
            interval = min(interval, self.notifier.watchdog_interval)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wake.wait()
                self._wake.clear()
                self._main_tick = loop.time()
                if sup_task.done() and not self._stop_requested:
                    self._report_dead_root(sup_task)
                    return EX_FAIL
                if self._stop_requested:
                    log.info("stopping", reason=f"{self._stop_signal} received")
                    return EX_OK
                if self._reload_requested:
                    self._reload_requested = False
                    await self.reload()
                    self._main_tick = loop.time()
                ok, _ = self.health()
                if ok:
                    self.notifier.watchdog()
                sup = self.supervisor
                if not self.heap_frozen and sup is not None and sup.last_tick:
                    self._freeze_start_up_heap()
                    self._main_tick = loop.time()
        finally:
            if self.heap_frozen:
                gc.unfreeze()
                self.heap_frozen = False

    def _freeze_start_up_heap(self) -> None:
        """Once start-up is done (the supervisor completed a cycle): what exists now
        (modules, policy, metric series, checkers) lives as long as the process. Frozen,
        the cyclic GC no longer walks it on every full pass: with 10,000 servers a pass
        took ~290 ms of loop time (checks late), afterwards next to nothing. Frozen objects
        are still freed by reference counting; only a cycle among them that dies later is
        kept, and the frozen set does not grow."""
        began = time.perf_counter()
        gc.collect()  # free start-up garbage rather than keep it forever
        gc.freeze()
        self.heap_frozen = True
        log.debug(
            "start-up heap frozen",
            objects=gc.get_freeze_count(),
            took_ms=round((time.perf_counter() - began) * 1000, 1),
        )

    @staticmethod
    def _report_dead_root(task: asyncio.Task[None]) -> None:
        exc = task.exception() if not task.cancelled() else None
        if task.cancelled():
            why = "was cancelled"
        elif exc is None:
            why = "returned although no stop was requested"
        else:
            why = f"died: {type(exc).__name__}: {exc}"
        log.error(
            f"root task {task.get_name()} {why}; exiting",
            reason=why,
            exc_info=exc,
        )

    async def _shutdown(
        self,
        sup_task: asyncio.Task[None] | None,
        sup_stop: asyncio.Event,
        cleanups: list[tuple[str, Callable[[], Any]]],
    ) -> None:
        """Stop everything within STOP_BUDGET seconds, whatever hangs."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self.stop_budget
        if sup_task is not None and not sup_task.done():
            sup_stop.set()
            done, _ = await asyncio.wait({sup_task}, timeout=self.shutdown_grace)
            if not done:
                log.warning(
                    "supervisor did not stop in time; cancelling it",
                    took_s=round(loop.time() - began, 3),
                )
                sup_task.cancel()
                await asyncio.wait({sup_task}, timeout=self.cancel_grace)
        if sup_task is not None and sup_task.done() and not sup_task.cancelled():
            exc = sup_task.exception()
            if exc is not None and self._stop_requested:
                log.error("supervisor failed while stopping", reason=f"{type(exc).__name__}: {exc}")
        for name, close in reversed(cleanups):
            # Each part gets what is left of the budget (but a moment at least), so one that
            # hangs cannot keep the others from closing or the process from exiting in time.
            budget = min(self.cleanup_grace, max(MIN_CLEANUP, deadline - loop.time()))
            try:
                async with asyncio.timeout(budget):
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result
            except Exception as exc:  # a cleanup failure must not hide the others
                why = f"no answer in {budget:.1f}s" if isinstance(exc, TimeoutError) else exc
                log.warning(f"closing the {name} failed", reason=f"{type(exc).__name__}: {why}")
        log.info("failoverd stopped", took_s=round(loop.time() - began, 3))

    # ------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """SIGHUP: validate the file fully, then swap; on any problem keep the old policy."""
        self.notifier.reloading("reloading policy")
        assert self.metrics is not None  # reload is only reachable after start
        log.info("reloading policy", file=str(self.config))
        try:
            new = await asyncio.to_thread(load_policy, self.config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("policy problem", reason=str(problem))
            log.error(
                "policy reload refused; the previous policy keeps running",
                file=str(self.config),
                reason=f"{len(exc.problems)} problem(s) in the new policy",
            )
            self.metrics.config_reloaded(False, self.wall())
            await self._journal_reload(False, f"reload refused: {len(exc.problems)} problem(s)")
            self.notifier.ready("reload refused; running the previous policy")
            return False
        self._warn_restart_only(self.started_with, new)
        try:
            if self.health_monitor is not None:
                self.health_monitor.apply_policy(new)
            if self.supervisor is not None:
                self.supervisor.apply_policy(new)
        except Exception:  # a bug, not a bad file: say so loudly and keep serving
            log.exception("applying the new policy failed; some parts may run the old one")
            self.metrics.config_reloaded(False, self.wall())
            self.notifier.ready("reload failed")
            return False
        old = self.policy
        self.policy = new
        if (new.daemon.log_format, new.daemon.log_level) != (
            old.daemon.log_format,
            old.daemon.log_level,
        ):
            if new.daemon.log_format != old.daemon.log_format:
                configure_logging(new.daemon.log_format, new.daemon.log_level)
            else:
                set_level(new.daemon.log_level)
        if self.http is not None:
            self.http.token = read_admin_token(new.daemon, self.environ)
        self.metrics.declare(new)
        self.metrics.config_reloaded(True, self.wall())  # the supervisor journals the reload
        log.info(
            "policy reloaded",
            file=str(self.config),
            groups=len(new.groups),
            servers=len(new.servers),
            dry_run=new.daemon.dry_run,
        )
        self.notifier.ready("running")
        return True

    async def _journal_reload(self, ok: bool, message: str) -> None:
        if self.journal is None:
            return
        try:
            await self.journal.record("reload", message, at=self.wall(), details={"ok": ok})
        except FailoverdError as exc:
            log.warning("could not journal the reload", reason=str(exc))

    @staticmethod
    def _warn_restart_only(running: Policy, new: Policy) -> None:
        changed = restart_only_changes(running, new)
        if changed:
            log.warning(
                "some settings only take effect on restart",
                reason=", ".join(changed) + " changed; restart failoverd to apply",
            )

    def _status_line(self, url: str) -> str:
        p = self.policy
        mode = " (dry run)" if p.daemon.dry_run else ""
        return f"watching {len(p.groups)} groups, {len(p.servers)} servers on {url}{mode}"


def on_loop(fn: Callable[[], T], loop: asyncio.AbstractEventLoop) -> Callable[[], T]:
    """`fn` made callable from any thread: it always runs on `loop`'s thread.

    The supervisor's state belongs to the loop; a scrape rendering in a worker thread
    must not read it while the loop changes it. The loop answers between two callbacks.
    """
    loop_thread = threading.get_ident()

    def call() -> T:
        if threading.get_ident() == loop_thread:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as exc:  # handed to the caller, in its thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=ON_LOOP_TIMEOUT)

    return call


def restart_only_changes(running: Policy, new: Policy) -> list[str]:
    """Keys of `new` that differ from what the process runs with and need a restart.

    `running` is the policy the process started with: the listener, the state directory
    and the OVH client are built once. (``api.move_timeout`` is read per move: it reloads.)
    """
    changed = []
    if (running.daemon.listen_host, running.daemon.listen_port) != (
        new.daemon.listen_host,
        new.daemon.listen_port,
    ):
        changed.append("daemon.listen")
    if running.daemon.state_dir != new.daemon.state_dir:
        changed.append("daemon.state_dir")
    for key in ("endpoint", "config_file", "timeout", "requests_per_minute"):
        if getattr(running.api, key) != getattr(new.api, key):
            changed.append(f"api.{key}")
    return changed


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Exceptions nobody awaited (a callback, a forgotten task): never silent.
    exc = context.get("exception")
    log.error(
        "unhandled error in the event loop",
        reason=str(context.get("message", "")),
        exc_info=exc if isinstance(exc, BaseException) else None,
    )
