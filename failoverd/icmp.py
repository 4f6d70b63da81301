"""ICMP echo on the event loop, without a ``ping`` subprocess.

One socket per address family serves every ICMP check of a monitor. It is an unprivileged
ping socket (``SOCK_DGRAM``/``IPPROTO_ICMP``) when ``net.ipv4.ping_group_range`` includes
our group, otherwise a raw socket (needs ``CAP_NET_RAW``); when neither can be opened every
ICMP check fails with a reason that says what to change. Replies are read with
``loop.add_reader`` and matched to their request by source address and sequence number
(and, on a raw socket, our identifier: a raw socket sees every ICMP packet of the host).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct

ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
PAYLOAD = b"failoverd health check\0"


class IcmpUnavailable(Exception):
    """No ICMP socket can be opened; ``reason`` is the check's failure reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def open_icmp_socket(family: socket.AddressFamily) -> tuple[socket.socket, bool]:
    """(socket, raw). Tries the unprivileged ping socket first."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), False
    except OSError:
        try:
            return socket.socket(family, socket.SOCK_RAW, proto), True
        except OSError as raw_error:
            range_file = "/proc/sys/net/ipv4/ping_group_range"
            try:
                with open(range_file) as f:
                    allowed = " ".join(f.read().split())
            except OSError:
                allowed = "unreadable"
            raise IcmpUnavailable(
                f"icmp unavailable: gid {os.getgid()} not in net.ipv4.ping_group_range "
                f"({allowed}) and no CAP_NET_RAW"
            ) from raw_error


class IcmpPinger:
    """Echo requests for one address family, replies dispatched to waiting futures."""

    def __init__(self, loop: asyncio.AbstractEventLoop, family: socket.AddressFamily) -> None:
        self._loop = loop
        self._family = family
        self._sock, self._raw = open_icmp_socket(family)
        self._sock.setblocking(False)
        # On a ping socket the kernel replaces the identifier with the socket's own.
        self._ident = random.getrandbits(16)
        self._seq = random.getrandbits(16)
        self._waiters: dict[tuple[str, int], asyncio.Future[None]] = {}
        loop.add_reader(self._sock.fileno(), self._on_readable)

    @property
    def raw(self) -> bool:
        return self._raw

    async def ping(self, addr: str) -> None:
        """Send one echo request to `addr` (a literal) and wait for its reply.

        The caller bounds the wait with its timeout; OSError when sending fails.
        """
        seq = self._next_seq(addr)
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters[(addr, seq)] = fut
        try:
            header = struct.pack("!BBHHH", ECHO_REQUEST[self._family], 0, 0, self._ident, seq)
            if self._family == socket.AF_INET:
                # The kernel fills the ICMPv6 checksum, and ping sockets recompute it anyway.
                csum = checksum(header + PAYLOAD)
                header = header[:2] + struct.pack("!H", csum) + header[4:]
            self._sock.sendto(header + PAYLOAD, (addr, 0))
            await fut
        finally:
            self._waiters.pop((addr, seq), None)

    def _next_seq(self, addr: str) -> int:
        for _ in range(65536):
            self._seq = (self._seq + 1) & 0xFFFF
            if (addr, self._seq) not in self._waiters:
                return self._seq
        raise OSError("too many icmp probes in flight")

    def _on_readable(self) -> None:
        for _ in range(1024):  # bounded, so a flood cannot starve the loop
            try:
                data, src = self._sock.recvfrom(4096)
            except BlockingIOError:
                return
            except OSError:
                continue  # a queued ICMP error for an earlier packet; the probe times out
            self._dispatch(data, str(src[0]).split("%", 1)[0])

    def _dispatch(self, data: bytes, src: str) -> None:
        if self._raw and self._family == socket.AF_INET:
            if not data:
                return
            data = data[(data[0] & 0x0F) * 4 :]  # skip the IPv4 header a raw socket returns
        if len(data) < 8:
            return
        kind, _code, _csum, ident, seq = struct.unpack("!BBHHH", data[:8])
        if kind != ECHO_REPLY[self._family]:
            return
        if self._raw and ident != self._ident:
            return
        fut = self._waiters.get((src, seq))
        if fut is not None and not fut.done():
            fut.set_result(None)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        self._waiters.clear()
