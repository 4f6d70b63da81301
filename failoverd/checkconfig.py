"""``failoverd check-config [-c FILE] [--online]`` (SPEC §2, §3, §5.6).

Offline: every problem of the policy at once, one ``FILE:LINE: key.path: message`` line
each on stderr, exit 78. Valid: ``ok: N groups, N servers, N blocks (FILE)``, exit 0.

``--online`` then runs the preflight through the real OVH adapter and prints what it
found about the inventory and a table of group x candidate x block with the verdict and
its reason; exit 1 when any standby could not take over (or the inventory disagrees
with the policy), 0 otherwise. Credentials refused or the API unreachable: one line on
stderr, exit 1.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from failoverd.config import load_policy
from failoverd.errors import ConfigError, FailoverdError, OvhTransientError
from failoverd.logs import configure_logging, reset_logging
from failoverd.policy import Policy
from failoverd.preflight import PreflightReport, run_preflight

EX_OK, EX_FAIL, EX_CONFIG = 0, 1, 78


def main(config: Path, *, online: bool) -> int:
    try:
        policy = load_policy(config)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return EX_CONFIG
    print(summary(policy, config))
    if not online:
        return EX_OK
    # Unconfigured, structlog prints the adapter's retries on stdout, into the report;
    # the failure they lead to is the one line on stderr below.
    configure_logging("console", "warning", stream=sys.stderr)
    try:
        return _online(policy)
    finally:
        reset_logging()


def _online(policy: Policy) -> int:
    try:
        report = asyncio.run(_preflight(policy))
    except OvhTransientError as exc:
        print(f"failoverd: check-config --online: cannot reach the OVH API: {exc}", file=sys.stderr)
        return EX_FAIL
    except FailoverdError as exc:
        # Credentials refused or missing: the adapter's message says what is wrong and
        # where credentials go, never a value.
        print(f"failoverd: check-config --online: {exc}", file=sys.stderr)
        return EX_FAIL
    print_report(report, sys.stdout)
    if report.ok:
        return EX_OK
    problems = report.problems()
    print(
        f"failoverd: preflight found {len(problems)} problem(s); first: {problems[0]}",
        file=sys.stderr,
    )
    return EX_FAIL


def summary(policy: Policy, config: Path) -> str:
    blocks = sum(len(g.blocks) for g in policy.groups.values())
    return (
        f"ok: {_n(len(policy.groups), 'group')}, {_n(len(policy.servers), 'server')}, "
        f"{_n(blocks, 'block')} ({config})"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


async def _preflight(policy: Policy) -> PreflightReport:
    # Imported here: only --online needs the OVH library and its adapter.
    from failoverd.ovhapi import OvhClient

    client = OvhClient.from_policy(policy.api)
    try:
        return await run_preflight(policy, client)
    finally:
        await client.close()


def print_report(report: PreflightReport, out: TextIO) -> None:
    if report.findings:
        print("\ninventory:", file=out)
        width = max(len(f.subject) for f in report.findings)
        for f in report.findings:
            print(f"  {'ok  ' if f.ok else 'FAIL'}  {f.subject:<{width}}  {f.message}", file=out)
    rows = [("GROUP", "CANDIDATE", "BLOCK", "VERDICT", "REASON")]
    rows += [
        (v.group, v.server, v.block, "eligible" if v.eligible else "REFUSED", v.reason)
        for v in report.verdicts
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print("\neligibility:", file=out)
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        print("  " + "  ".join([*cells, row[4]]), file=out)
    eligible = report.standby_eligible()
    able = sum(1 for ok in eligible.values() if ok)
    print(
        f"\npreflight: {able} of {len(eligible)} group candidates can take over every block",
        file=out,
    )
