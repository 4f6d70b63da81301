"""Operator hooks around a move (SPEC §3 ``groups.*.hooks``, §5.5).

``pre`` is a veto: it runs before anything is sent; a non-zero exit, a timeout or a hook
that cannot even start cancels the move (failing safe: an operator who asked to be asked
was not asked). The first line of its stderr is the reason. ``post`` is a notification:
started and forgotten, it never blocks a move; it is killed at its timeout and always
reaped. Both get the move's details as ``FAILOVERD_*`` environment variables.

Hooks run without a shell, in their own process group (so a timeout kills the hook's
children too), with stdin closed and the daemon's OVH credentials and admin token removed
from the environment they inherit: a notification script has no business holding them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

import structlog

log = structlog.get_logger()

PRE_TIMEOUT = 10.0
POST_TIMEOUT = 60.0
STDERR_KEEP = 4096  # bytes of a hook's stderr kept for the reason; the rest is drained
KILL_WAIT = 2.0  # seconds to see a killed pre hook reaped
STDERR_GRACE = 1.0  # seconds to read a failed pre hook's stderr to its end after its exit

# Variables never handed down to a hook: credentials (SPEC §3 api.config_file) and the token.
_SECRET_PREFIXES = ("OVH_",)
_SECRET_NAMES = frozenset({"FAILOVERD_TOKEN"})


def hook_environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SECRET_PREFIXES) and k not in _SECRET_NAMES
    }
    env.update(extra)
    return env


class Hooks:
    """Implements ``ports.Hooks`` with subprocesses."""

    def __init__(self, *, pre_timeout: float = PRE_TIMEOUT, post_timeout: float = POST_TIMEOUT):
        self.pre_timeout = pre_timeout
        self.post_timeout = post_timeout
        self._posts: set[asyncio.Task[None]] = set()

    async def pre(self, argv: Sequence[str], env: Mapping[str, str]) -> str | None:
        name = argv[0] if argv else "?"
        loop = asyncio.get_running_loop()
        hook = _PreHook(loop)
        try:
            if not argv:
                raise OSError(0, "empty command")
            transport, _ = await loop.subprocess_exec(
                lambda: hook,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=hook_environment(env),
                start_new_session=True,  # its own process group: a timeout kills its children
            )
        except OSError as exc:
            return f"pre hook {name} could not run: {exc.strerror or exc}"
        deadline = loop.time() + self.pre_timeout
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(hook.exited)
            except TimeoutError:
                return f"pre hook {name} timed out after {self.pre_timeout:g}s"
            code = transport.get_returncode()
            if code == 0:
                return None
            # The reason is on stderr: read it to its end, but a child the hook left in
            # the background may hold it open; it does not get to delay the answer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(STDERR_GRACE, deadline - loop.time()))):
                    await asyncio.shield(hook.stderr_closed)
            text = hook.stderr.decode(errors="replace")
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            return first or f"pre hook {name} exited {code}"
        finally:
            if transport.get_returncode() is None:  # timed out or cancelled
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(transport.get_pid(), signal.SIGKILL)
                # Reaped before we answer (bounded: a process in D state is not ours to wait).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KILL_WAIT):
                        await asyncio.shield(hook.exited)
            transport.close()  # our end of the pipe

    def post(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run_post(tuple(argv), dict(env)), name=f"post-hook {argv[0] if argv else '?'}"
        )
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _run_post(self, argv: tuple[str, ...], env: dict[str, str]) -> None:
        name = argv[0] if argv else "?"
        try:
            proc = await _spawn(argv, env)
        except OSError as exc:
            log.warning("post hook could not run", hook=name, reason=exc.strerror or str(exc))
            return
        try:
            code = await asyncio.wait_for(proc.wait(), self.post_timeout)
        except TimeoutError:
            await _kill(proc)
            log.warning("post hook killed", hook=name, reason=f"timeout {self.post_timeout:g}s")
            return
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        if code != 0:
            log.warning("post hook failed", hook=name, reason=f"exit {code}")

    @property
    def running(self) -> int:
        """Post hooks not yet finished (for tests and shutdown)."""
        return len(self._posts)

    async def close(self) -> None:
        tasks = list(self._posts)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _spawn(argv: Sequence[str], env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """A post hook: no pipes, so its wait() ends when it exits."""
    if not argv:
        raise OSError(0, "empty command")
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=hook_environment(env),
        start_new_session=True,  # its own process group: a timeout kills its children too
    )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Reaped here, shielded: a cancelled caller must not leave a zombie behind.
    await asyncio.shield(proc.wait())


class _PreHook(asyncio.SubprocessProtocol):
    """A pre hook's exit and the start of its stderr.

    Its exit is known when the hook's process ends (``process_exited``), not when every
    holder of its stderr has closed it, as ``Process.wait()`` has it: a hook that left a
    child in the background (a notification, a logger) has still answered.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()
        self.stderr_closed: asyncio.Future[None] = loop.create_future()
        self.stderr = bytearray()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if len(self.stderr) < STDERR_KEEP and isinstance(data, bytes):
            self.stderr.extend(data[: STDERR_KEEP - len(self.stderr)])

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.stderr_closed.done():
            self.stderr_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
