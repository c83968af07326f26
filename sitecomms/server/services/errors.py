"""Failures a service reports to its caller, each carrying its protocol error code."""

from __future__ import annotations

from sitecomms.protocol.errors import ErrorCode


class ServiceError(Exception):
    default_code = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class InvalidInput(ServiceError):
    default_code = ErrorCode.VALIDATION_FAILED


class Unauthenticated(ServiceError):
    default_code = ErrorCode.UNAUTHENTICATED


class Forbidden(ServiceError):
    default_code = ErrorCode.FORBIDDEN


class NotFound(ServiceError):
    default_code = ErrorCode.NOT_FOUND


class Conflict(ServiceError):
    default_code = ErrorCode.CONFLICT


class Unavailable(ServiceError):
    default_code = ErrorCode.UNAVAILABLE
