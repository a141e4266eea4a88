"""Typed errors carrying the reason lanes gave (its `{"error": "..."}`)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class LanesError(Exception):
    """Base of every error this package raises.

    `reason` is what lanes said (the `error` of its JSON answer) or, for an error raised on
    this side, why; `status` is the HTTP status when there was one.
    """

    status: Optional[int] = None
    #: The API's whole JSON answer, when there was one.
    body: Optional[Dict[str, Any]] = None

    def __init__(self, reason: str, status: Optional[int] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.reason if self.status is None else f"{self.status}: {self.reason}"


class BadRequest(LanesError):
    """400: lanes refused the input (an unknown field, an unknown task, a bad id...)."""

    status = 400


class Unauthorized(LanesError):
    """401: the token is missing or unknown."""

    status = 401


class Forbidden(LanesError):
    """403: the token lacks the scope the call needs (the reason names it)."""

    status = 403


class NotFound(LanesError):
    """404: no such job (or worker)."""

    status = 404


class Conflict(LanesError):
    """409: the job's state does not allow it (cancel or retry of an ended job, a report for
    an attempt that is no longer the job's, a report after the end)."""

    status = 409


class TooLarge(LanesError):
    """413: the request is larger than the server takes (`LANES_MAX_PAYLOAD`)."""

    status = 413


class Unavailable(LanesError):
    """503, or the server (or every AMQP node) could not be reached (then `status` is None):
    try again later, or on another server."""

    status: Optional[int] = 503


class Timeout(LanesError):
    """A bounded wait ran out (the job has not ended, no confirm, no reply)."""


_BY_STATUS: Dict[int, Type[LanesError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    503: Unavailable,
}


def error_for_status(status: int, reason: str) -> LanesError:
    """The typed error for an HTTP status (a plain `LanesError` for the others)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return LanesError(reason, status)
    return cls(reason, status)
