"""The preflight (SPEC §5.6): could every standby take over every block of its group?

Run by ``failoverd check-config --online`` and periodically by the engine, so that a
standby that could not take over pages someone before the incident, not during it.

It reaches OVH only through the :class:`~failoverd.ports.OvhApi` port and asks each
question once: one ``service_info`` per server and one ``block_info`` per block (however
many groups name them), then one ``can_move`` per group x candidate x block. The adapter
explains zone, VPS and vMAC refusals in plain words and answers the ones it can decide
from what it already knows without a request. Calls run a few at a time: the adapter
serialises them under the request budget anyway, and a flood would only make calls time
out in its queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from failoverd.errors import (
    DeadlineExceeded,
    OvhAuthError,
    OvhError,
    OvhNotFound,
    OvhTransientError,
)
from failoverd.model import BlockInfo, Eligibility, ServiceInfo
from failoverd.policy import Block, GroupPolicy, Policy, block_str
from failoverd.ports import OvhApi

__all__ = ["Finding", "PreflightReport", "Verdict", "run_preflight"]

CONCURRENCY = 4
# A read that waited its whole deadline in the adapter's budget queue is asked again; the
# budget window has moved on by then. Past this, it is reported as not checked.
ATTEMPTS = 3

T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    """Could `server` take `block` of `group` over right now?"""

    group: str
    server: str
    block: str
    eligible: bool
    reason: str


@dataclass(frozen=True)
class Finding:
    """One inventory fact: a server exists, a block exists, is a failover IP, is routed
    within its group."""

    subject: str  # "server ns1001.ip-51-68-100.eu", "block 203.0.113.8/29", "group web"
    ok: bool
    message: str


@dataclass(frozen=True)
class PreflightReport:
    findings: tuple[Finding, ...]
    verdicts: tuple[Verdict, ...]

    def standby_eligible(self) -> dict[tuple[str, str], bool]:
        """(group, server) → whether the server could take every block of the group."""
        out: dict[tuple[str, str], bool] = {}
        for v in self.verdicts:
            key = (v.group, v.server)
            out[key] = out.get(key, True) and v.eligible
        return out

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings) and all(v.eligible for v in self.verdicts)

    def problems(self) -> list[str]:
        """Every failed finding and refused verdict, one sentence each."""
        out = [f"{f.subject}: {f.message}" for f in self.findings if not f.ok]
        out += [
            f"group {v.group}: {v.server} cannot take {v.block}: {v.reason}"
            for v in self.verdicts
            if not v.eligible
        ]
        return out


async def run_preflight(
    policy: Policy, api: OvhApi, *, check_inventory: bool = True
) -> PreflightReport:
    """Check every group x standby x block (and, with `check_inventory`, that every server
    and block exists and every block is routed within its group).

    Without `check_inventory` (the cheap periodic form) no server is read and nothing is
    found about the inventory: only the blocks' routing, which decides the candidates (the
    primary too once a group has failed over; never the holder, which OVH would refuse for
    holding the block already), and ``can_move``. Raises OvhAuthError when the credentials
    are refused and OvhTransientError when the very first request fails (the API is
    unreachable): a dead API is one problem, not a verdict per standby.
    """
    runner = _Runner()
    groups = list(policy.groups.values())
    if not groups:
        return PreflightReport(findings=(), verdicts=())
    services: dict[str, ServiceInfo | OvhError] = {}
    blocks: dict[Block, BlockInfo | OvhError] = {}
    findings: list[Finding] = []
    all_blocks = list(dict.fromkeys(b for g in groups for b in g.blocks))
    # The first request alone: bad credentials or no API stop everything at once.
    if check_inventory:
        names = list(dict.fromkeys(n for g in groups for n in g.members))
        services[names[0]] = await runner.first(partial(api.service_info, names[0]))
        rest = await runner.gather([partial(api.service_info, n) for n in names[1:]])
        services.update(zip(names[1:], rest, strict=True))
        got = await runner.gather([partial(api.block_info, b) for b in all_blocks])
    else:
        got = [await runner.first(partial(api.block_info, all_blocks[0]))]
        got += await runner.gather([partial(api.block_info, b) for b in all_blocks[1:]])
    blocks.update(zip(all_blocks, got, strict=True))
    if check_inventory:
        findings += [_server_finding(n, services[n]) for n in names]
        for group in groups:
            findings += _block_findings(group, blocks)

    pairs: list[tuple[GroupPolicy, str, Block]] = []
    settled: dict[tuple[str, str, Block], Verdict] = {}
    for group in groups:
        for server in _candidates(group, blocks):
            for block in group.blocks:
                early = _settled_without_asking(group, server, block, services, blocks)
                if early is not None:
                    settled[(group.name, server, block)] = early
                else:
                    pairs.append((group, server, block))

    answers = await runner.gather([partial(api.can_move, b, s) for _, s, b in pairs])
    for (group, server, block), answer in zip(pairs, answers, strict=True):
        settled[(group.name, server, block)] = _verdict(group, server, block, answer)

    verdicts: list[Verdict] = []
    for group in groups:
        for server in _candidates(group, blocks):
            verdicts += [settled[(group.name, server, block)] for block in group.blocks]
    return PreflightReport(findings=tuple(findings), verdicts=tuple(verdicts))


# --------------------------------------------------------------------------- internals


class _Runner:
    """Runs port calls a few at a time, turning expected failures into values."""

    def __init__(self) -> None:
        self.sem = asyncio.Semaphore(CONCURRENCY)

    async def first(self, call: Callable[[], Awaitable[T]]) -> T | OvhError:
        try:
            return await call()
        except OvhNotFound as exc:
            return exc
        # Anything else on the very first request (auth, unreachable, budget) is raised.

    async def one(self, call: Callable[[], Awaitable[T]]) -> T | OvhError:
        async with self.sem:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    return await call()
                except OvhAuthError:
                    raise
                except DeadlineExceeded as exc:
                    if attempt == ATTEMPTS:
                        return exc
                except OvhError as exc:
                    return exc
        raise AssertionError("unreachable")  # the loop always returns

    async def gather(self, calls: Iterable[Callable[[], Awaitable[T]]]) -> list[T | OvhError]:
        tasks = [asyncio.ensure_future(self.one(c)) for c in calls]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


def _describe_error(exc: OvhError) -> str:
    if isinstance(exc, OvhTransientError):
        return f"could not check: {exc}"
    return str(exc)


def _unreadable(subject: str, exc: OvhError) -> str:
    """Why a verdict on `subject` (a server or a block) could not even be asked for."""
    if isinstance(exc, OvhNotFound):
        return f"{subject} does not exist in this OVH account"
    return f"{subject}: {_describe_error(exc)}"


def _server_finding(name: str, info: ServiceInfo | OvhError) -> Finding:
    subject = f"server {name}"
    if isinstance(info, OvhNotFound):
        return Finding(subject, False, "no such dedicated server or VPS in this OVH account")
    if isinstance(info, OvhError):
        return Finding(subject, False, _describe_error(info))
    kind = "dedicated server" if info.kind == "dedicated" else "VPS"
    where = f"{info.region} ({info.datacenter})" if info.datacenter else info.region
    vmac = "vMAC supported" if info.vmac_supported else "no vMAC support"
    return Finding(subject, True, f"{kind} in {where}, {vmac}")


def _block_findings(group: GroupPolicy, blocks: dict[Block, BlockInfo | OvhError]) -> list[Finding]:
    out: list[Finding] = []
    holders: dict[str, str | None] = {}
    for block in group.blocks:
        subject = f"block {block_str(block)}"
        info = blocks.get(block)
        if info is None:
            continue
        if isinstance(info, OvhNotFound):
            out.append(Finding(subject, False, "no such IP block in this OVH account"))
            continue
        if isinstance(info, OvhError):
            out.append(Finding(subject, False, _describe_error(info)))
            continue
        if info.type and info.type != "failover":
            out.append(
                Finding(
                    subject,
                    False,
                    f"is a {info.type!r} IP, not an Additional (failover) IP; only those move",
                )
            )
            continue
        holders[block_str(block)] = info.routed_to
        where = f" ({', '.join(info.regions)})" if info.regions else ""
        if info.routed_to is None:
            out.append(
                Finding(
                    subject,
                    False,
                    f"is parked (routed to no service){where}; group "
                    f"{group.name} expects it on {group.primary} or a standby",
                )
            )
        elif info.routed_to not in group.members:
            out.append(
                Finding(
                    subject,
                    False,
                    f"is routed to {info.routed_to}, outside group {group.name} "
                    f"({', '.join(group.members)})",
                )
            )
        else:
            role = "primary" if info.routed_to == group.primary else "standby"
            out.append(
                Finding(subject, True, f"failover IP{where} routed to {info.routed_to} ({role})")
            )
    placed = {h for h in holders.values() if h is not None}
    if len(placed) > 1:
        spread = ", ".join(f"{b} on {h or 'nothing'}" for b, h in holders.items())
        out.append(
            Finding(
                f"group {group.name}",
                False,
                f"its blocks are routed to different servers ({spread}); they move together",
            )
        )
    return out


def _candidates(group: GroupPolicy, blocks: dict[Block, BlockInfo | OvhError]) -> list[str]:
    """The standbys; plus the primary when its blocks are known to be elsewhere (failback)."""
    away = any(
        isinstance(info, BlockInfo) and info.routed_to != group.primary
        for b in group.blocks
        if (info := blocks.get(b)) is not None
    )
    return [group.primary, *group.standbys] if away else list(group.standbys)


def _settled_without_asking(
    group: GroupPolicy,
    server: str,
    block: Block,
    services: dict[str, ServiceInfo | OvhError],
    blocks: dict[Block, BlockInfo | OvhError],
) -> Verdict | None:
    """A verdict that needs no request: the answer is already known from the inventory."""
    b = block_str(block)
    service = services.get(server)
    if isinstance(service, OvhError):
        return Verdict(group.name, server, b, False, _unreadable(server, service))
    info = blocks.get(block)
    if isinstance(info, OvhError):
        return Verdict(group.name, server, b, False, _unreadable(b, info))
    if isinstance(info, BlockInfo):
        if info.type and info.type != "failover":
            return Verdict(group.name, server, b, False, f"{b} is not a failover IP")
        if info.routed_to == server:
            return Verdict(group.name, server, b, True, f"{server} holds {b} now")
    return None


def _verdict(
    group: GroupPolicy, server: str, block: Block, answer: Eligibility | OvhError
) -> Verdict:
    b = block_str(block)
    if isinstance(answer, OvhNotFound):
        return Verdict(group.name, server, b, False, f"not found: {answer}")
    if isinstance(answer, OvhError):
        return Verdict(group.name, server, b, False, _describe_error(answer))
    return Verdict(group.name, server, b, answer.ok, answer.reason)
