"""CLI commands that talk to the running daemon: status, history, move, pause, resume.

The daemon is found through the policy's ``daemon.listen`` (or ``--url``); admin commands
authenticate with the token from ``daemon.admin_token_file`` (or ``$FAILOVERD_TOKEN`` when
there is no readable file). Everything is plain blocking ``urllib``: one request at a time,
an explicit timeout on each, no event loop needed in a CLI.

Output is a readable table by default and JSON with ``--json``. Every expected failure
(daemon not running, wrong token, refused move) is a one-line ``FailoverdError`` that the
CLI prints without a traceback and turns into exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from failoverd.config import format_duration, load_policy
from failoverd.errors import ConfigError, FailoverdError
from failoverd.policy import DaemonPolicy, Policy, host_port

REQUEST_TIMEOUT = 10.0
POLL_INTERVAL = 0.5  # seconds between progress polls of a move
DEFAULT_MOVE_WAIT = 360.0  # without a policy: OVH's 5-minute budget plus verification
OK_RESULTS = ("success", "dry_run")  # anything else (partial, failed, vetoed...) exits 1


class DaemonUnreachable(FailoverdError):
    """No daemon answers at the URL."""


class DaemonRefused(FailoverdError):
    """The daemon answered with an error (bad token, unknown group, refused move...)."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


# --------------------------------------------------------------------------- connection


class DaemonClient:
    """A tiny JSON-over-HTTP client for the daemon's API."""

    def __init__(self, url: str, token: str | None = None, timeout: float = REQUEST_TIMEOUT):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method == "POST":
            if self.token is None:
                raise FailoverdError(
                    "no admin token: set daemon.admin_token_file in the policy (and make it "
                    "readable to you) or export FAILOVERD_TOKEN"
                )
            headers["Authorization"] = f"Bearer {self.token}"
        if not self.url.startswith(("http://", "https://")):
            raise FailoverdError(f"invalid daemon URL {self.url!r}: expected http://HOST:PORT")
        request = urllib.request.Request(  # noqa: S310 — scheme checked above
            self.url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc) from None
        except urllib.error.URLError as exc:
            raise DaemonUnreachable(self._unreachable(exc.reason)) from None
        except TimeoutError as exc:
            raise DaemonUnreachable(self._unreachable(exc)) from None
        except OSError as exc:
            raise DaemonUnreachable(self._unreachable(exc)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise FailoverdError(
                f"{self.url} answered something that is not failoverd's JSON"
            ) from None

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {self.timeout:g}s"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror.lower()
        else:
            why = str(reason)
        return f"cannot reach failoverd at {self.url}: {why} — is it running?"

    def _refusal(self, exc: urllib.error.HTTPError) -> DaemonRefused:
        message = exc.reason if isinstance(exc.reason, str) else "error"
        try:
            data = json.loads(exc.read())
            if isinstance(data, dict) and isinstance(data.get("error"), str):
                message = data["error"]
        except (ValueError, OSError):
            pass
        if exc.code == 401:
            message = f"{message} (no token was sent)"
        elif exc.code == 403 and message == "invalid token":
            message = (
                "the daemon refused the admin token (invalid token): check "
                "daemon.admin_token_file / FAILOVERD_TOKEN"
            )
        return DaemonRefused(message, exc.code)


def connect_url(daemon: DaemonPolicy) -> str:
    """The URL to reach a daemon listening on daemon.listen (wildcards → loopback)."""
    host = daemon.listen_host
    if host in ("", "0.0.0.0"):  # a wildcard listener is reached on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{host_port(host, daemon.listen_port)}"


def read_token(policy: Policy | None, environ: Mapping[str, str]) -> str | None:
    daemon = policy.daemon if policy is not None else None
    if daemon is not None and daemon.admin_token_file is not None:
        try:
            token = daemon.admin_token_file.read_text(encoding="utf-8").strip()
            if token:
                return token
        except (OSError, UnicodeDecodeError) as exc:
            if not environ.get("FAILOVERD_TOKEN"):
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise FailoverdError(
                    f"cannot read the admin token file {daemon.admin_token_file}: "
                    f"{reason} (or export FAILOVERD_TOKEN)"
                ) from None
    return environ.get("FAILOVERD_TOKEN", "").strip() or None


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Policy | None, str]:
    """The policy (when readable) and the daemon URL."""
    url: str | None = getattr(args, "url", None)
    config: Path | None = getattr(args, "config", None)
    policy: Policy | None = None
    if config is not None:
        try:
            policy = load_policy(config)
        except ConfigError:
            if url is None:
                raise  # every problem printed, exit 78: nothing tells us where the daemon is
    if url is None:
        assert policy is not None  # load_policy raised otherwise
        url = connect_url(policy.daemon)
    return policy, url


# --------------------------------------------------------------------------- commands


def main(
    args: argparse.Namespace, *, out: TextIO | None = None, poll: float = POLL_INTERVAL
) -> int:
    stream = out if out is not None else sys.stdout
    environ = os.environ
    policy, url = resolve(args, environ)
    command: str = args.command
    token = read_token(policy, environ) if command in ("move", "pause", "resume") else None
    client = DaemonClient(url, token)
    as_json = bool(getattr(args, "json", False))
    printer = Printer(stream)
    if command == "status":
        snapshot = client.get("/status")
        if as_json:
            printer.json(snapshot)
        else:
            printer.status(snapshot, now=time.time())
        return 0
    if command == "history":
        query = f"/history?limit={int(args.limit)}"
        if args.group:
            query += "&group=" + urllib.parse.quote(args.group, safe="")
        entries = client.get(query)
        if as_json:
            printer.json(entries)
        else:
            printer.history(entries, args.group)
        return 0
    if command == "move":
        wait = policy.api.move_timeout + 60.0 if policy is not None else DEFAULT_MOVE_WAIT
        return move(client, args, printer, as_json=as_json, wait=wait, poll=poll)
    if command == "pause":
        body: dict[str, Any] = {}
        if args.duration is not None:
            body["for"] = args.duration
        if args.reason is not None:
            body["reason"] = args.reason
        view = client.post(f"/groups/{_quote(args.group)}/pause", body)
        printer.json(view) if as_json else printer.paused(view)
        return 0
    if command == "resume":
        view = client.post(f"/groups/{_quote(args.group)}/resume", {})
        printer.json(view) if as_json else printer.line(f"group {view['name']} resumed")
        return 0
    raise AssertionError(f"unhandled command {command}")  # cli restricts choices


def move(
    client: DaemonClient,
    args: argparse.Namespace,
    printer: Printer,
    *,
    as_json: bool,
    wait: float,
    poll: float = POLL_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """POST the move, then follow it through /status and /history until it is final."""
    body: dict[str, Any] = {"force": bool(args.force), "dry_run": bool(args.dry_run)}
    if args.to:
        body["to"] = args.to
    try:
        accepted = client.post(f"/groups/{_quote(args.group)}/move", body)
    except DaemonRefused as exc:
        if as_json:
            printer.json({"accepted": None, "result": "refused", "reason": str(exc)})
        raise FailoverdError(f"move of {args.group} refused: {exc}") from None
    move_id = accepted["move_id"]
    blocks = ", ".join(accepted.get("blocks") or []) or "no blocks"
    if not as_json:
        what = "dry run of move" if accepted.get("dry_run") else "move"
        printer.line(
            f"{what} {move_id} accepted: {accepted['group']} → {accepted['target']} ({blocks})"
        )
    deadline = clock() + wait
    seen_ids: set[int] = set()
    entries: list[dict[str, Any]] = []
    last_phase: str | None = None
    seen_in_flight = False
    absent_polls = 0
    while True:
        snapshot = client.get("/status")
        mine = [m for m in snapshot.get("in_flight", []) if m.get("move_id") == move_id]
        history = client.get(f"/history?group={_quote(accepted['group'])}&limit=200")
        for entry in history:
            if entry.get("move_id") == move_id and entry.get("id") not in seen_ids:
                seen_ids.add(entry.get("id"))
                entries.append(entry)
                if not as_json:
                    printer.line(f"  {_clock(entry.get('at'))}  {entry.get('message', '')}")
        if mine:
            seen_in_flight = True
            absent_polls = 0
            phase = mine[0].get("phase")
            if phase != last_phase and not as_json:
                printer.line(f"  phase: {phase}")
            last_phase = phase
        else:
            absent_polls += 1
        result = _result_of(entries)
        # Final once a result is journaled, or once the move has left the in-flight list
        # after having been seen (the journal has its result by then, unless it crashed),
        # or when it never showed up at all for a while.
        if result is not None or (not mine and (seen_in_flight or absent_polls >= 20)):
            break
        if clock() >= deadline:
            raise FailoverdError(
                f"move {move_id} not finished after {format_duration(wait)}; it continues "
                f"in the daemon: see `failoverd history {accepted['group']}`"
            )
        sleep(poll)
    result = _result_of(entries) or ("success" if accepted.get("dry_run") else "unknown")
    ok = result in OK_RESULTS
    if as_json:
        printer.json({"accepted": accepted, "result": result, "entries": entries})
    else:
        printer.line(f"move {move_id}: {result}")
    if not ok:
        reason = next(
            (e.get("message") for e in reversed(entries) if e.get("message")), "no details"
        )
        if as_json:
            return 1
        raise FailoverdError(f"move {move_id} of {accepted['group']} {result}: {reason}")
    return 0


def _result_of(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """The journal closes a move with a "move" entry whose details carry its result."""
    for entry in reversed(entries):
        details = entry.get("details") or {}
        result = details.get("result") if isinstance(details, Mapping) else None
        if entry.get("kind") == "move" and isinstance(result, str) and result:
            return result
    return None


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# --------------------------------------------------------------------------- rendering


class Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, sort_keys=False), file=self.out, flush=True)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [len(h) for h in header]
        for row in rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        for row in [header, *rows]:
            cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
            self.line("  ".join(cells).rstrip())

    def status(self, snap: Mapping[str, Any], *, now: float) -> None:
        mode = "  (DRY RUN: moves are only logged)" if snap.get("dry_run") else ""
        self.line(f"failoverd status at {_clock(snap.get('taken_at'))}{mode}")
        self.line("")
        rows = []
        for g in snap.get("groups", []):
            cooldown = g.get("cooldown_remaining") or 0
            rows.append(
                [
                    g["name"],
                    g["status"],
                    g.get("holder") or "-",
                    format_duration(round(cooldown)) if cooldown > 0 else "-",
                    _paused(g, now),
                    g.get("reason") or "",
                ]
            )
        self.table(["GROUP", "STATE", "HOLDER", "COOLDOWN", "PAUSED", "REASON"], rows)
        self.line("")
        rows = []
        for s in snap.get("servers", []):
            rows.append(
                [
                    s["name"],
                    _health(s),
                    _ago(s.get("since"), now),
                    _ago(s.get("last_check"), now),
                    s.get("last_reason") or "",
                ]
            )
        self.table(["SERVER", "HEALTH", "SINCE", "LAST CHECK", "REASON"], rows)
        self.line("")
        rows = [
            [g["name"], "ACTIVE" if g.get("active") else "off", g.get("reason") or ""]
            for g in snap.get("guards", [])
        ]
        self.table(["GUARD", "STATE", "REASON"], rows)
        moves = snap.get("in_flight", [])
        if moves:
            self.line("")
            rows = [
                [
                    m["move_id"],
                    m["group"],
                    m["target"],
                    m["phase"],
                    ", ".join(m.get("blocks", [])),
                    _ago(m.get("started_at"), now),
                ]
                for m in moves
            ]
            self.table(["MOVE", "GROUP", "TARGET", "PHASE", "BLOCKS", "STARTED"], rows)

    def history(self, entries: Sequence[Mapping[str, Any]], group: str | None = None) -> None:
        if not entries:
            # A mistyped group name must not read as "nothing happened to it".
            self.line(f"no history for group {group!r}" if group else "no history yet")
            return
        rows = [
            [
                _clock(e.get("at")),
                e.get("group") or "-",
                e.get("kind", ""),
                e.get("move_id") or "",
                e.get("message", ""),
            ]
            for e in entries
        ]
        self.table(["TIME (UTC)", "GROUP", "KIND", "MOVE", "MESSAGE"], rows)

    def paused(self, view: Mapping[str, Any]) -> None:
        until = view.get("pause_until")
        when = f"until {_clock(until)} UTC" if until else "until resumed"
        reason = f" ({view['pause_reason']})" if view.get("pause_reason") else ""
        self.line(f"group {view['name']} paused {when}{reason}")


def _health(server: Mapping[str, Any]) -> str:
    health = str(server["health"])
    if server.get("failing") and health != "down":
        return f"{health} (failing)"  # failing rounds before the verdict: worth seeing
    return health


def _paused(group: Mapping[str, Any], now: float) -> str:
    if not group.get("paused"):
        return "no"
    until = group.get("pause_until")
    if until:
        return f"yes, {format_duration(max(0, round(until - now)))} left"
    return "yes"


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    delta = max(0.0, now - at)
    if delta < 1:
        return "just now"
    return f"{format_duration(round(delta))} ago"


def _clock(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
