"""Turning every failure into the one error shape, `{"error": {"code", "message"}}` (under
`/auth/v1/`, GoTrue's shape instead: gotrue.py, for supabase-js's auth client)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from sitecomms.protocol.errors import ErrorCode
from sitecomms.server.api import gotrue
from sitecomms.server.api.responses import JSON
from sitecomms.server.api.responses import error as sitecomms_error
from sitecomms.server.services.errors import REPORTED, describe

log = logging.getLogger("sitecomms.server.api")


def _answer(request: Request, code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> JSON:
    shape = gotrue.error_body if request.url.path.startswith(gotrue.PREFIX) else sitecomms_error
    return shape(code, message, headers)


_BY_STATUS = {code.http_status: code for code in reversed(ErrorCode)}


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        message = str(err.get("msg", "invalid")).removeprefix(
            "Value error, "
        )  # a rule's own words, as the services say them
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "invalid request"


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return _answer(request, ErrorCode.MALFORMED_REQUEST, "request body is not valid JSON")
    return _answer(request, ErrorCode.VALIDATION_FAILED, _describe(exc))


async def _reported(request: Request, exc: Exception) -> Response:
    """A service or store failure (one of `REPORTED`), answered as `services.errors.describe` says."""
    failure = describe(exc)
    assert failure is not None
    if failure.retry_after is None:
        return _answer(request, failure.code, failure.message)
    log.warning("%s: %s", failure.code.value, exc)  # a passing failure: worth a line, not a traceback
    return _answer(request, failure.code, failure.message, {"Retry-After": str(failure.retry_after)})


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str | None:
    """Every method served at this path: Starlette's 405 names only the first route whose path matched."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed) or None


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _BY_STATUS.get(exc.status_code, ErrorCode.MALFORMED_REQUEST)
    message = exc.detail if isinstance(exc.detail, str) else code.value.replace("_", " ")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return _answer(request, code, message, headers or None)


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _answer(request, ErrorCode.INTERNAL, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    for reported in REPORTED:
        app.add_exception_handler(reported, _reported)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _internal)
