"""sd_notify against a real AF_UNIX datagram socket bound by the test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from failoverd.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_messages_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier(path)
    assert n.ready("serving 2 groups\non :9877")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 2 groups on :9877"
    assert n.reloading()
    fields = sock.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert int(fields[1].split("=")[1]) > 0
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert n.sent == 4


def test_abstract_socket_names() -> None:
    name = f"failoverd-test-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier("@" + name).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_without_socket_everything_is_a_no_op(tmp_path: Path) -> None:
    n = Notifier(None)
    assert not n.enabled
    assert not n.ready()
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert not gone.watchdog()  # never raises
    assert gone.last_error is not None


def test_from_env_reads_watchdog_and_unsets() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_env(env)
    assert n.address == "/run/x"
    assert n.watchdog_interval == 15.0
    assert env == {}  # children (exec checks, hooks) do not inherit them


def test_watchdog_for_another_pid_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_env(env).watchdog_interval is None
    assert Notifier.from_env({"WATCHDOG_USEC": "junk"}).watchdog_interval is None
