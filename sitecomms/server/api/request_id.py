"""Every HTTP request and WebSocket has an id, in its log records and in its answer's `X-Request-ID`.

`RequestIds` (pure ASGI middleware, outermost: `install` wraps the whole stack) takes the
client's `X-Request-ID` when it is sane, else makes one (`logs.request_id`: a hostile value is
never echoed or logged), sets the request's `logs.RequestContext` for everything done while
serving it (the `Authenticator` and the realtime hello add the user and org ids) and appends
the id to the response's headers (`http.response.start`, or the WebSocket's `websocket.accept`).
With `access_log` (JSON logs), it writes one line per request when the request is done on the
logger `sitecomms.requests`: method (`WEBSOCKET` for a socket), the route template
(`/v1/conversations/{conversation_id}`, never the path or its query: null when no route
matched), status (101 for an accepted socket, then its `close_code`), `duration_ms`, and the
context's ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sitecomms.server import logs

ACCESS_LOGGER = "sitecomms.requests"
_HEADER = logs.REQUEST_ID_HEADER
_WEBSOCKET_ACCEPTED = 101
_WEBSOCKET_REFUSED = 403  # closed before it was accepted: uvicorn answers the handshake 403


class RequestIds:
    """Pure ASGI middleware: the request id and context of every request (see the module doc)."""

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self._log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        offered: bytes | None = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                offered = value
                break
        context = logs.RequestContext(logs.request_id(offered))
        header = (_HEADER, context.request_id.encode("ascii"))
        token = logs.enter(context)
        if not self.access_log:
            try:
                await self.app(scope, receive, _with_header(send, header))
            finally:
                logs.leave(token)
            return
        started = time.perf_counter()
        outcome: dict[str, Any] = {}

        async def send_noted(message: Message) -> None:
            event = message["type"]
            if event == "http.response.start" or event == "websocket.http.response.start":
                outcome["status"] = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            elif event == "websocket.accept":
                outcome["status"] = _WEBSOCKET_ACCEPTED
                message["headers"] = [*message.get("headers", ()), header]
            elif event == "websocket.close":
                outcome.setdefault("status", _WEBSOCKET_REFUSED)
                outcome.setdefault("close_code", message.get("code", 1000))
            await send(message)

        async def receive_noted() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                outcome.setdefault("close_code", message.get("code", 1005))
            return message

        try:
            await self.app(scope, receive_noted if kind == "websocket" else receive, send_noted)
        finally:
            try:
                self._access(scope, context, outcome, started)
            finally:
                logs.leave(token)

    def _access(self, scope: Scope, context: logs.RequestContext, outcome: dict[str, Any], started: float) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        method = scope["method"] if scope["type"] == "http" else "WEBSOCKET"
        route = getattr(scope.get("route"), "path", None)
        status = outcome.get("status")
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": context.request_id,  # also in the context: for a handler that formats later
            "user_id": context.user_id,
            "org_id": context.org_id,
        }
        if "close_code" in outcome:
            fields["close_code"] = outcome["close_code"]
        self._log.info("%s %s %s", method, route or "-", status, extra={logs.FIELDS: fields})


def _with_header(send: Send, header: tuple[bytes, bytes]) -> Send:
    async def send_with_id(message: Message) -> None:
        event = message["type"]
        if event == "http.response.start" or event == "websocket.accept" or event == "websocket.http.response.start":
            present: Sequence[tuple[bytes, bytes]] = message.get("headers", ())
            message["headers"] = [*present, header]
        await send(message)

    return send_with_id


def install(app: FastAPI, *, access_log: bool = False) -> None:
    """Wrap `app`'s whole middleware stack (outside the security headers and the error middleware) in `RequestIds`."""
    build = app.build_middleware_stack

    def build_identified() -> ASGIApp:
        return RequestIds(build(), access_log=access_log)

    app.build_middleware_stack = build_identified  # type: ignore[method-assign]
