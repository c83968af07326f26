"""JSON responses rendered with orjson straight from protocol dataclasses, and error bodies."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.models import ErrorBody

_OPTIONS = orjson.OPT_UTC_Z


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def no_content() -> Response:
    return Response(status_code=204)


def error(code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> JSON:
    if code is ErrorCode.UNAUTHENTICATED:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return JSON({"error": {"code": code.value, "message": message}}, status_code=code.http_status, headers=headers)


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("Malformed request (for example, invalid JSON)"),
    401: _doc("Missing, malformed, expired or wrongly signed access token, or its session is signed out"),
    413: _doc("Request body over 64 KiB"),
    422: _doc("A field is missing, unknown, of the wrong type or out of range"),
    503: _doc("The database is unreachable or busy; retry"),
}


def responses(*extra: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        403: "Visible, but the caller may not do this",
        404: "Not found, or not visible to the caller",
        409: "Conflicts with the current state",
        429: "Too many failed attempts: retry after the Retry-After header's seconds",
    }
    return {**ERROR_RESPONSES, **{code: _doc(descriptions[code]) for code in extra}}
