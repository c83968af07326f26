"""Turning every failure into the one error shape, `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from sitecomms.protocol.errors import ErrorCode
from sitecomms.server.api.responses import error
from sitecomms.server.services.errors import ServiceError
from sitecomms.store.database import DatabaseUnavailable

log = logging.getLogger("sitecomms.server.api")

_BY_STATUS = {code.http_status: code for code in reversed(ErrorCode)}


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return error(ErrorCode.MALFORMED_REQUEST, "request body is not valid JSON")
    return error(ErrorCode.VALIDATION_FAILED, _describe(exc))


async def _service(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error(exc.code, exc.message)


def answer_for(exc: Exception) -> Response | None:
    """The answer to a service or database failure, for handlers outside FastAPI's routing."""
    if isinstance(exc, ServiceError):
        return error(exc.code, exc.message)
    if isinstance(exc, DatabaseUnavailable):
        return _unavailable_answer(exc)
    return None


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
    return error(code, message, headers or None)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return _unavailable_answer(exc)


def _unavailable_answer(exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return error(ErrorCode.UNAVAILABLE, "the database is unavailable; retry shortly", {"Retry-After": "1"})


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error(ErrorCode.INTERNAL, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ServiceError, _service)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(DatabaseUnavailable, _unavailable)
    app.add_exception_handler(Exception, _internal)
