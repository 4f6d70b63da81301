"""Logging: structlog JSON lines on stdout (or a console renderer), one pipeline for all.

Our own code logs through ``structlog.get_logger()``; the libraries we use (ovh, aiohttp,
urllib3, asyncio) log through the standard library. Both go through the same
``ProcessorFormatter`` so every line on stdout has the same shape: an ISO UTC
``timestamp``, ``level``, ``logger``, ``event``, then the fixed keys in a fixed order
(``group``, ``server``, ``block``, ``task_id``, ``query_id``, ``reason``, ``took_s``), then
the rest. journald and log shippers get one JSON object per line.

Secrets are kept out of logs by construction (nobody logs them), and this module adds
defence in depth as the last processor before rendering: values of keys that name a secret
are replaced, and every registered secret string (the OVH application secret and consumer
key, the admin token) is masked wherever it appears, including in rendered tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

FIXED_KEYS = ("group", "server", "block", "task_id", "query_id", "reason", "took_s")
LEADING_KEYS = ("timestamp", "level", "logger", "event")
REDACTED = "[redacted]"

# Keys whose values are secret whatever they hold. `application_key` is an identifier, not
# a secret (OVH shows it in the console), so it is not in the list.
_SECRET_KEY = re.compile(
    r"secret|token|consumer_key|authorization|signature|password|passwd|credential|cookie",
    re.IGNORECASE,
)
# Shorter strings would mask ordinary words; real secrets are long.
_MIN_SECRET_LEN = 6

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR

# Libraries whose chatter at INFO is noise for an operator.
_QUIET_LIBRARIES = {"aiohttp.access": logging.WARNING, "urllib3": logging.WARNING}

_HANDLER_NAME = "failoverd"


class SecretRegistry:
    """Strings that must never be printed. Thread-safe: the ovh executor thread logs too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *values: str | None) -> None:
        new = {v for v in values if v and len(v) >= _MIN_SECRET_LEN}
        if not new:
            return
        with self._lock:
            self._secrets = self._secrets | new
            # Longest first so a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def clear(self) -> None:
        with self._lock:
            self._secrets = frozenset()
            self._pattern = None

    def mask(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(REDACTED, text)


SECRETS = SecretRegistry()


def register_secret(*values: str | None) -> None:
    """Mask these strings in every log line from now on (empty/None/short values ignored)."""
    SECRETS.add(*values)


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(key, str) and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return SECRETS.mask(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value("", v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # Anything else is rendered by repr/str later: mask its text now.
    return SECRETS.mask(str(value))


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Processor: mask secret-named keys and registered secret strings anywhere."""
    return {k: _redact_value(k, v) for k, v in event_dict.items()}


def order_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Processor: timestamp, level, logger, event, the fixed keys, then the rest."""
    ordered: dict[str, Any] = {}
    for key in (*LEADING_KEYS, *FIXED_KEYS):
        if key in event_dict:
            ordered[key] = event_dict[key]
    for key, value in event_dict.items():
        if key not in ordered:
            ordered[key] = value
    return ordered


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn-style duplicate of the message some libraries attach; never useful twice.
    event_dict.pop("color_message", None)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        _drop_color_message,
    ]


def configure_logging(
    fmt: Literal["json", "console"] = "json",
    level: str = "info",
    *,
    stream: TextIO | None = None,
) -> None:
    """Route structlog and the stdlib loggers to one handler on `stream` (stdout).

    Idempotent: calling it again (on reload, in tests) replaces our handler and keeps the
    registered secrets.
    """
    out = stream if stream is not None else sys.stdout
    shared = _shared_processors()
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    else:
        renderer = structlog.processors.JSONRenderer(default=str)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become a string first, so the redactor sees them too.
            structlog.processors.format_exc_info,
            redact_secrets,
            order_keys,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    set_level(level)
    for name, lib_level in _QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(lib_level, _LEVELS.get(level, logging.INFO)))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def set_level(level: str) -> None:
    """Change the level at run time (a reload may change daemon.log_level)."""
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def reset_logging() -> None:
    """Undo configure_logging (for tests and embedders): our handler removed, the root
    level back to the stdlib default, structlog back to its own defaults."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()
