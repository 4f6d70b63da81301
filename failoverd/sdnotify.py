"""A minimal sd_notify(3): datagrams to $NOTIFY_SOCKET, no dependency.

systemd's ``Type=notify`` waits for ``READY=1``; ``WatchdogSec=`` expects ``WATCHDOG=1``
at least every $WATCHDOG_USEC microseconds (we ping at half that); ``RELOADING=1`` with
``MONOTONIC_USEC`` and ``STOPPING=1`` tell it what the daemon is doing. Outside systemd
(no $NOTIFY_SOCKET) every call is a cheap no-op, so the daemon code never branches on it.

Sending never raises: the notification socket going away (systemd restarting, a test
closing its socket) must not take the daemon down. The environment variables are removed
from ``os.environ`` once read, so exec checks and hooks do not inherit them (sd_notify's
``unset_environment``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping


class Notifier:
    """Sends state strings to the service manager."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.sent = 0  # datagrams sent successfully (for tests and debugging)
        self.last_error: str | None = None

    @classmethod
    def from_env(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        watchdog = _watchdog_usec(env)
        if unset:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when off."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram. False (never an exception) on failure."""
        if self.address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        address = self.address
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload, address)
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        # systemd ≥ 253 (Type=notify-reload) wants MONOTONIC_USEC with RELOADING=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))


def _status(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return ("STATUS=" + " ".join(text.split()),)  # one line: a newline would end the field


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    # WATCHDOG_PID names the process systemd expects pings from; a child that inherited the
    # variables must not think the watchdog is its business.
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None
