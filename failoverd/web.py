"""The daemon's HTTP API (SPEC §6): metrics, health, status, history and admin routes.

An aiohttp application run by an ``AppRunner`` inside the daemon's own event loop. It
talks to the engine only through ``ports.Engine`` and to the metrics only through
``Metrics.render()``, so it can be tested against a small fake engine.

Everything a client sends is untrusted: bodies are size-limited (``client_max_size``) and
read under a deadline, only ``application/json`` objects with known fields of the right
type are accepted, and every failure is a 4xx JSON answer ``{"error": "..."}``. A 5xx only
means a bug in failoverd; it is logged with its traceback and answered without details.

Admin routes (move, pause, resume) need ``Authorization: Bearer <token>``: 401 without
the header, 403 with a wrong one (constant-time comparison), 403 "admin API disabled" when
no token is configured. Authentication happens before the group or the body is looked at,
so an anonymous client learns nothing about the policy from them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hmac
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import http_exceptions, web

from failoverd.config import parse_duration
from failoverd.errors import FailoverdError, MoveRefused, UnknownGroup
from failoverd.metrics import CONTENT_TYPE
from failoverd.policy import host_port
from failoverd.ports import Engine

log = structlog.get_logger("failoverd.web")

MAX_BODY = 64 * 1024  # admin bodies are a few fields; anything larger is not for us
BODY_TIMEOUT = 10.0  # seconds to receive a body: a slow client cannot hold a handler
# aiohttp has no header-read timeout; its keep-alive timer (default an hour) also closes a
# connection whose request line and headers have not all arrived. Scrapers reconnect.
IDLE_TIMEOUT = 15.0
# Connections held at once. Every one is a file descriptor of the daemon, which its checks
# need too: past this, new connections get a 503 and are closed. Prometheus, an agent
# and a few operators need a handful.
MAX_CONNECTIONS = 64
MAX_HISTORY = 1000
DEFAULT_HISTORY = 50

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def to_jsonable(value: Any) -> Any:
    """Frozen values (dataclasses, enums, mappings, tuples) → JSON-ready Python values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no inf/nan
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(to_jsonable(data), status=status, dumps=_dumps)


async def large_json_response(data: Any) -> web.Response:
    """`json_response` for answers that grow with the fleet (/status: ~0.1 s of CPU for
    1,000 servers), encoded in a thread. `data` must be a value nothing changes: a
    snapshot or a list of journal entries, built fresh for this request."""
    body = await asyncio.to_thread(lambda: _dumps(to_jsonable(data)).encode())
    return web.Response(body=body, content_type="application/json")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=status, headers=headers or None, dumps=_dumps
    )


class BadRequest(Exception):
    """A client mistake; becomes a 4xx JSON answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class HttpApi:
    """Builds the aiohttp application; `token` and `healthy` may change at run time."""

    def __init__(
        self,
        engine: Engine,
        render_metrics: Callable[[], bytes],
        *,
        token: str | None,
        healthy: Callable[[], tuple[bool, str]],
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.engine = engine
        self.body_timeout = body_timeout
        self.render_metrics = render_metrics
        self.token = token or None
        self.healthy = healthy

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/status", self.status)
        app.router.add_get("/history", self.history)
        app.router.add_post("/groups/{group}/move", self._admin(self.move))
        app.router.add_post("/groups/{group}/pause", self._admin(self.pause))
        app.router.add_post("/groups/{group}/resume", self._admin(self.resume))
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except UnknownGroup as exc:
            return error(404, str(exc))
        except MoveRefused as exc:
            return error(exc.status if 400 <= exc.status < 500 else 409, str(exc))
        except web.HTTPException as exc:
            # aiohttp's own 404/405/413...: same JSON shape as ours.
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            return error(exc.status, exc.reason.lower(), **headers)
        except FailoverdError as exc:
            # An expected failure inside the engine (journal, API): the request is fine.
            log.warning("request failed", path=request.path, reason=str(exc))
            return error(503, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bug: unhandled error in HTTP handler", path=request.path)
            return error(500, "internal error; see the daemon's log")

    def _admin(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.token is None:
                return error(403, "admin API disabled: no daemon.admin_token_file configured")
            header = request.headers.get("Authorization")
            if header is None:
                return error(401, "missing bearer token", **{"WWW-Authenticate": "Bearer"})
            scheme, _, presented = header.partition(" ")
            expected = self.token.encode()
            # compare_digest on bytes: it rejects non-ASCII str, and a token may be anything.
            ok = hmac.compare_digest(presented.strip().encode(), expected)
            if scheme.lower() != "bearer" or not ok:
                return error(403, "invalid token")
            return await handler(request)

        return guarded

    # ------------------------------------------------------------------ public routes

    async def metrics(self, request: web.Request) -> web.Response:
        # Rendering is CPU work that grows with the fleet (~0.5 s for 1,000 servers): in a
        # thread, so a scrape does not stall the checks. `render_metrics` must be callable
        # from a thread (app.py has the engine's snapshot taken on the loop).
        body = await asyncio.to_thread(self.render_metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        ok, reason = self.healthy()
        return json_response({"ok": ok, "reason": reason}, status=200 if ok else 503)

    async def status(self, request: web.Request) -> web.Response:
        return await large_json_response(self.engine.snapshot())

    async def history(self, request: web.Request) -> web.Response:
        unknown = set(request.query) - {"group", "limit"}
        if unknown:
            raise BadRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
        group = request.query.get("group") or None
        raw_limit = request.query.get("limit", str(DEFAULT_HISTORY))
        try:
            limit = int(raw_limit)
        except ValueError:
            raise BadRequest(f"limit must be an integer, not {raw_limit[:40]!r}") from None
        if not 1 <= limit <= MAX_HISTORY:
            raise BadRequest(f"limit must be between 1 and {MAX_HISTORY}")
        entries = await self.engine.history(group, limit)
        return await large_json_response(entries)

    # ------------------------------------------------------------------ admin routes

    async def move(self, request: web.Request) -> web.Response:
        body = await read_body(
            request, self.body_timeout, {"to": (str, type(None)), "force": bool, "dry_run": bool}
        )
        accepted = await self.engine.request_move(
            request.match_info["group"],
            to=body.get("to"),
            force=body.get("force", False),
            dry_run=body.get("dry_run", False),
        )
        log.info(
            "manual move accepted",
            group=accepted.group,
            move_id=accepted.move_id,
            target=accepted.target,
            dry_run=accepted.dry_run,
        )
        return json_response(accepted, status=202)

    async def pause(self, request: web.Request) -> web.Response:
        body = await read_body(
            request,
            self.body_timeout,
            {"for": (str, int, float, type(None)), "reason": (str, type(None))},
        )
        duration: float | None = None
        raw = body.get("for")
        if raw is not None:
            try:
                duration = parse_duration(raw)
            except ValueError as exc:
                raise BadRequest(f"'for': {exc}") from None
            if not math.isfinite(duration) or duration <= 0:
                raise BadRequest("'for' must be a positive duration")
        reason = body.get("reason")
        if reason is not None and len(reason) > 500:
            raise BadRequest("'reason' is longer than 500 characters")
        view = await self.engine.pause(
            request.match_info["group"], duration=duration, reason=reason
        )
        log.info("group paused", group=view.name, reason=reason, duration_s=duration)
        return json_response(view)

    async def resume(self, request: web.Request) -> web.Response:
        await read_body(request, self.body_timeout, {})
        view = await self.engine.resume(request.match_info["group"])
        log.info("group resumed", group=view.name)
        return json_response(view)


FieldTypes = Mapping[str, type | tuple[type, ...]]


async def read_body(request: web.Request, timeout: float, fields: FieldTypes) -> dict[str, Any]:
    """The request's JSON object, checked against `fields`; an empty body is ``{}``."""
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise BadRequest("request body too slow", status=408) from None
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise BadRequest("body must be application/json", status=415)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(repr(k) for k in fields) or "none"
            raise BadRequest(f"unknown field {key[:40]!r} (known: {known})")
        expected = fields[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        # bool is an int subclass in Python; JSON true is not a number here.
        if isinstance(value, bool) and bool not in types:
            raise BadRequest(f"field {key!r} has the wrong type")
        if not isinstance(value, types):
            raise BadRequest(f"field {key!r} has the wrong type")
    return data


class ClientGarbageFilter(logging.Filter):
    """aiohttp logs every unparsable request at ERROR with a traceback: a client could
    flood the daemon's log with false alarms. Those become one debug line (or nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, http_exceptions.HttpProcessingError):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        first = str(exc.message).strip().splitlines()[0] if exc.message else ""
        record.msg, record.args = "malformed request: %s %s", (exc.code, first)
        record.exc_info = record.exc_text = None
        return True


_GARBAGE_FILTER = ClientGarbageFilter()


_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 29\r\n\r\n"
    b'{"error":"too many clients"}\n'
)


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503, then closed, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_TOO_MANY)
        transport.close()


class WebServer:
    """The HTTP API listening on host:port inside the running loop."""

    def __init__(
        self,
        api: HttpApi,
        host: str,
        port: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.api = api
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._full = False  # logged once per episode, not once per refused connection

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._runner is not None
        assert self._runner.server is not None
        server = self._runner.server
        if len(server.connections) >= self.max_connections:
            if not self._full:
                self._full = True
                log.warning(
                    "HTTP API connection limit reached; refusing new connections",
                    limit=self.max_connections,
                )
            return _Refused()
        self._full = False
        return server()

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        logging.getLogger("aiohttp.server").addFilter(_GARBAGE_FILTER)  # idempotent
        runner = web.AppRunner(
            self.api.app(),
            access_log=None,  # one line per scrape is noise; decisions are what we log
            handle_signals=False,  # signals belong to the daemon's main loop
            shutdown_timeout=2.0,
            keepalive_timeout=self.idle_timeout,
        )
        await runner.setup()
        self._runner = runner
        try:
            # Our own listener (not a TCPSite) so that each connection passes the cap.
            self._server = await asyncio.get_running_loop().create_server(
                self._protocol, self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            await self.stop()
            # asyncio rewords strerror ("error while attempting to bind..."): use errno's.
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise FailoverdError(f"cannot listen on {self.host}:{self.port}: {why}") from exc
        if self._server.sockets:
            self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # stop accepting; the runner then closes the connections
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{host_port(self.host, self.port)}"
