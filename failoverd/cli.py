"""argv → exit code. Parsing only; every command lives in its own module.

Exit codes (SPEC §2): 0 success, 1 runtime failure, 2 usage error, 78 invalid policy.
No traceback reaches the user for an expected failure: those are FailoverdError.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from failoverd import __version__
from failoverd.errors import ConfigError, FailoverdError

DEFAULT_CONFIG = Path("/etc/failoverd/failoverd.yaml")
EX_OK, EX_FAIL, EX_USAGE, EX_CONFIG = 0, 1, 2, 78


def _duration(text: str) -> str:
    """A `--for` value, checked here so a typo is a usage error (exit 2), sent as typed."""
    from failoverd.config import parse_duration

    try:
        if parse_duration(text) <= 0:
            raise ValueError("must be more than zero")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: {exc}") from None
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failoverd",
        description="Automatic OVHcloud Additional IP failover daemon.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            default=DEFAULT_CONFIG,
            metavar="FILE",
            help=f"policy file (default {DEFAULT_CONFIG})",
        )

    def with_daemon(p: argparse.ArgumentParser) -> None:
        with_config(p)
        p.add_argument("--url", help="daemon URL (default: the policy's daemon.listen)")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    with_config(p)

    p = sub.add_parser("check-config", help="validate the policy")
    with_config(p)
    p.add_argument("--online", action="store_true", help="also run the preflight against the API")

    p = sub.add_parser("status", help="groups, servers and guards of the running daemon")
    with_daemon(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    p = sub.add_parser("history", help="the audit trail")
    with_daemon(p)
    p.add_argument("group", nargs="?", help="only this group")
    p.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N entries")
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    p = sub.add_parser("move", help="manual switchover of a group")
    with_daemon(p)
    p.add_argument("group")
    p.add_argument("--to", metavar="SERVER", help="target server (default: first eligible)")
    p.add_argument("--force", action="store_true", help="skip cooldown and guards")
    p.add_argument("--dry-run", action="store_true", help="decide and show, do not move")
    p.add_argument("--json", action="store_true", help="print JSON instead of progress")

    p = sub.add_parser("pause", help="stop automatic moves of a group")
    with_daemon(p)
    p.add_argument("group")
    p.add_argument(
        "--for", dest="duration", type=_duration, metavar="DURATION", help="expire after (10m, 2h)"
    )
    p.add_argument("--reason", metavar="TEXT")

    p = sub.add_parser("resume", help="allow automatic moves of a group again")
    with_daemon(p)
    p.add_argument("group")

    p = sub.add_parser("fake-api", help="run the OVH API simulator")
    p.add_argument("--inventory", type=Path, metavar="FILE", help="inventory YAML")
    p.add_argument("--listen", default="127.0.0.1:8999", metavar="HOST:PORT")

    p = sub.add_parser("demo", help="the embedded end-to-end demonstration")
    p.add_argument("--keep-running", action="store_true", help="leave everything running")

    sub.add_parser("version", help="print the version")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "version":
        print(f"failoverd {__version__}")
        return EX_OK
    if command == "run":
        from failoverd import app

        return app.run(args.config)
    if command == "check-config":
        from failoverd import checkconfig

        return checkconfig.main(args.config, online=args.online)
    if command in ("status", "history", "move", "pause", "resume"):
        from failoverd import client

        return client.main(args)
    if command == "fake-api":
        from failoverd.sim import server

        return server.main(args.inventory, args.listen)
    if command == "demo":
        from failoverd.sim import demo

        return demo.main(keep_running=args.keep_running)
    raise AssertionError(f"unhandled command {command}")  # argparse restricts choices


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    except FailoverdError as exc:
        print(f"failoverd: {exc}", file=sys.stderr)
        return EX_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `failoverd status | head`: the reader left. No traceback, and none either when
        # the interpreter flushes stdout on exit.
        with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_FAIL
