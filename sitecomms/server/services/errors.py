"""Failures a service reports to its caller, each carrying its protocol error code, and the one
mapping from any reportable failure to what a client is told.

`describe(exc)` turns a `ServiceError` or the store's `Unavailable` into a `Failure`: the
protocol code, a message fit for the client and, for a failure that passes, the seconds after
which to retry. The HTTP error handler and the realtime endpoint both answer from it, so a
failure is told the same way on every channel; `REPORTED` lists the exceptions it describes
(boundaries catch those, and anything else is a bug). Health and the CLI, boundaries of their
own, catch the store's `Unavailable` themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.rules import RuleViolation
from sitecomms.store import errors as store_errors


class ServiceError(Exception):
    default_code = ErrorCode.INTERNAL
    retry_after: int | None = None  # seconds after which the same call may succeed; None: do not retry

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class InvalidInput(ServiceError):
    default_code = ErrorCode.VALIDATION_FAILED


class Unauthenticated(ServiceError):
    default_code = ErrorCode.UNAUTHENTICATED


def obey(rule: Callable[[str], str], field: str, value: str) -> str:
    """`value` as `rule` (one of `protocol.rules`) keeps it; InvalidInput naming `field` when it breaks it."""
    try:
        return rule(value)
    except RuleViolation as exc:
        raise InvalidInput(f"{field}: {exc}") from None


class Forbidden(ServiceError):
    default_code = ErrorCode.FORBIDDEN


class NotFound(ServiceError):
    default_code = ErrorCode.NOT_FOUND


class Conflict(ServiceError):
    default_code = ErrorCode.CONFLICT


class Unavailable(ServiceError):
    default_code = ErrorCode.UNAVAILABLE


class Busy(ServiceError):
    """Too much work of this kind waits already: retry after `retry_after` seconds (503)."""

    default_code = ErrorCode.UNAVAILABLE

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Failure:
    """What the client is told: the code, a message, and when to retry (None: do not)."""

    code: ErrorCode
    message: str
    retry_after: int | None = None


REPORTED: tuple[type[Exception], ...] = (ServiceError, store_errors.Unavailable)

DATABASE_UNAVAILABLE = Failure(ErrorCode.UNAVAILABLE, "the database is unavailable; retry shortly", retry_after=1)


def describe(exc: BaseException) -> Failure | None:
    """The answer to a reportable failure (one of `REPORTED`); None for anything else (a bug)."""
    if isinstance(exc, ServiceError):
        return Failure(exc.code, exc.message, exc.retry_after)
    if isinstance(exc, store_errors.Unavailable):
        return DATABASE_UNAVAILABLE
    return None
