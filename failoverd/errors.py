"""failoverd's own error hierarchy.

Library exceptions (ovh, aiohttp, sqlite3, OSError) are mapped to these once, at the edge
that meets them, and chained with ``from`` so the original is never lost. Anything that is
an *expected* failure for a user (bad file, unreachable API, refused move) is one of these
and is shown as a one-line message, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class FailoverdError(Exception):
    """Base of every error failoverd raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One policy problem: rendered as ``FILE:LINE: key.path: message``."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(FailoverdError):
    """The policy is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class OvhError(FailoverdError):
    """An OVH API call failed. Keeps OVH's query id for support tickets."""

    def __init__(
        self,
        message: str,
        *,
        route: str = "",
        http_status: int | None = None,
        error_class: str | None = None,
        query_id: str | None = None,
    ) -> None:
        self.message = message
        self.route = route
        self.http_status = http_status
        self.error_class = error_class
        self.query_id = query_id
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.http_status is not None:
            parts.append(f"(HTTP {self.http_status}")
            parts[-1] += f" {self.error_class})" if self.error_class else ")"
        if self.query_id:
            parts.append(f"[query id {self.query_id}]")
        return " ".join(parts)


class OvhTransientError(OvhError):
    """Worth retrying: 5xx, 429, network error, timeout, garbled answer."""


class OvhPermanentError(OvhError):
    """Not worth retrying: the API said no (4xx)."""


class OvhNotFound(OvhPermanentError):
    """The service, block or task does not exist (404)."""


class OvhAuthError(OvhPermanentError):
    """Credentials are missing, invalid or lack the needed access rules."""


class DeadlineExceeded(OvhTransientError):
    """The operation's deadline passed while retrying or waiting for budget."""


class MoveFailed(FailoverdError):
    """A move's task ended badly, or the block was not routed to the target afterwards."""

    def __init__(self, message: str, *, task_state: str | None = None) -> None:
        self.task_state = task_state
        super().__init__(message)


class AlreadyRunning(FailoverdError):
    """Another failoverd holds the state directory's lock."""


class UnknownGroup(FailoverdError):
    """An operator named a group that the policy does not have (HTTP 404)."""


class MoveRefused(FailoverdError):
    """A manual move cannot proceed: 409 (cooldown, guard, in flight) or 422 (ineligible)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class MoveSubmissionUnknown(OvhTransientError):
    """A move POST failed in a way that may have reached OVH (timeout, reset, 5xx).

    The move may be in flight: follow it with ``OvhApi.find_move_task`` / ``block_info``
    before sending it again or moving the block elsewhere.
    """
