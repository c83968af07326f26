"""`api/request_id.py`: each request's id (a sane `X-Request-ID` honoured, anything else replaced), its
log context (the caller's ids once known) and its access line (the route template, never the path).

The middleware wraps a small Starlette app here, driven in-process (httpx's ASGI transport, or
hand-made ASGI messages where a header value no HTTP client would send is needed); the real
server's JSON log is checked in tests/server/test_logs.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from sitecomms.server import logs
from sitecomms.server.api.request_id import ACCESS_LOGGER, RequestIds

FRESH = re.compile(r"[0-9a-f]{32}")
INNER_LOGGER = "sitecomms.tests.request_id"
WAIT = 5.0


async def thing(request: Request) -> PlainTextResponse:
    logs.identify("user-1", "org-1")
    logging.getLogger(INNER_LOGGER).info("serving a thing")
    context = logs.current()
    assert context is not None
    return PlainTextResponse(context.request_id)


async def anonymous(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def broken(request: Request) -> PlainTextResponse:
    raise RuntimeError("broken on purpose")


async def socket(ws: WebSocket) -> None:
    await ws.accept()
    logs.identify("user-2", "org-2")
    await ws.close(code=4409)


async def refused_socket(ws: WebSocket) -> None:
    await ws.close(code=4401)


APP = Starlette(
    routes=[
        Route("/v1/things/{thing_id}", thing),
        Route("/anonymous", anonymous),
        Route("/broken", broken),
        WebSocketRoute("/v1/socket", socket),
        WebSocketRoute("/v1/refused", refused_socket),
    ]
)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The JSON lines of the access logger and the endpoints' logger, formatted as they are logged."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    loggers = [logging.getLogger(name) for name in (ACCESS_LOGGER, INNER_LOGGER)]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield stream
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def records(stream: io.StringIO, logger: str | None = None) -> list[dict[str, Any]]:
    parsed = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    return [record for record in parsed if logger is None or record["logger"] == logger]


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sitecomms.test")


async def call(
    app: ASGIApp, scope: dict[str, Any], incoming: list[Message], sent: list[Message] | None = None
) -> list[Message]:
    """Run `app` on a hand-made scope; `incoming` is what it receives (then it waits forever);
    what it sends is returned (and appended to `sent`, if given, as it goes)."""
    sent = [] if sent is None else sent
    queue = list(incoming)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    async with asyncio.timeout(WAIT):
        await app(scope, receive, send)
    return sent


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


def header(message: Message, name: bytes) -> list[bytes]:
    return [value for key, value in message.get("headers", ()) if key == name]


@pytest.mark.parametrize("offered", ["abc", "Req-1.2_3:4", "a" * 128, "0f4c2a9e-77b1-4c61-9d0e-2f6b1d3c8a10"])
async def test_a_sane_request_id_is_honoured_returned_and_in_the_context(offered: str) -> None:
    async with client(RequestIds(APP)) as http:
        response = await asyncio.wait_for(http.get("/v1/things/1", headers={"X-Request-ID": offered}), WAIT)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == offered
    assert response.text == offered  # what the endpoint's context held


async def test_without_an_id_each_request_gets_a_fresh_one() -> None:
    async with client(RequestIds(APP)) as http:
        first = await asyncio.wait_for(http.get("/anonymous"), WAIT)
        second = await asyncio.wait_for(http.get("/anonymous"), WAIT)
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(FRESH.fullmatch(value) for value in ids), ids
    assert ids[0] != ids[1]
    assert logs.current() is None  # nothing of a request is left behind


@pytest.mark.parametrize(
    "hostile",
    [
        b"hostile-" + b"x" * 121,  # 129 characters
        b"hostile\nX-Injected: yes",
        b"hostile\r\n",
        b'hostile"quote',
        b"hostile'quote",
        b"hostile space",
        b"hostile<script>",
        "hostilé".encode(),
        b"hostile\x00nul",
    ],
)
async def test_a_hostile_request_id_is_replaced_never_echoed_nor_logged(hostile: bytes, json_log: io.StringIO) -> None:
    sent = await call(
        RequestIds(APP, access_log=True),
        http_scope("/v1/things/1", [(b"x-request-id", hostile)]),
        [{"type": "http.request", "body": b"", "more_body": False}],
    )
    start = next(message for message in sent if message["type"] == "http.response.start")
    (given,) = header(start, b"x-request-id")
    assert FRESH.fullmatch(given.decode()), given
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    assert body == given  # the endpoint's context has the fresh id too
    logged = json_log.getvalue()
    assert "hostil" not in logged, logged
    assert [record["request_id"] for record in records(json_log)] == [given.decode(), given.decode()]


async def test_the_access_line_has_the_route_template_status_and_the_callers_ids(json_log: io.StringIO) -> None:
    async with client(RequestIds(APP, access_log=True)) as http:
        response = await asyncio.wait_for(
            http.get("/v1/things/42?token=SECRET-IN-QUERY", headers={"X-Request-ID": "trace-1"}), WAIT
        )
    assert response.status_code == 200
    (inner,) = records(json_log, INNER_LOGGER)
    assert inner["request_id"] == "trace-1"
    assert (inner["user_id"], inner["org_id"]) == ("user-1", "org-1")
    (access,) = records(json_log, ACCESS_LOGGER)
    assert access["level"] == "info"
    assert access["method"] == "GET"
    assert access["route"] == "/v1/things/{thing_id}"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert access["request_id"] == "trace-1"
    assert (access["user_id"], access["org_id"]) == ("user-1", "org-1")
    assert access["message"] == "GET /v1/things/{thing_id} 200"
    logged = json_log.getvalue()
    assert "SECRET-IN-QUERY" not in logged and "/v1/things/42" not in logged


async def test_an_anonymous_or_unmatched_request_has_no_caller_and_no_route(json_log: io.StringIO) -> None:
    async with client(RequestIds(APP, access_log=True)) as http:
        ok = await asyncio.wait_for(http.get("/anonymous"), WAIT)
        missing = await asyncio.wait_for(http.get("/nowhere/secret-path"), WAIT)
    assert (ok.status_code, missing.status_code) == (200, 404)
    anonymous, unmatched = records(json_log, ACCESS_LOGGER)
    assert (anonymous["route"], anonymous["status"], anonymous["user_id"]) == ("/anonymous", 200, None)
    assert "user_id" in anonymous and anonymous["org_id"] is None
    assert (unmatched["route"], unmatched["status"]) == (None, 404)
    assert "secret-path" not in json_log.getvalue()


async def test_a_failing_request_still_gets_its_access_line(json_log: io.StringIO) -> None:
    sent: list[Message] = []
    with pytest.raises(RuntimeError, match="broken on purpose"):
        await call(
            RequestIds(APP, access_log=True),
            http_scope("/broken", []),
            [{"type": "http.request", "body": b"", "more_body": False}],
            sent,
        )
    start = sent[0]  # Starlette's error middleware answered 500, then raised the error again
    assert (start["type"], start["status"]) == ("http.response.start", 500)
    (given,) = header(start, b"x-request-id")
    (access,) = records(json_log, ACCESS_LOGGER)
    assert access["request_id"] == given.decode()
    assert (access["route"], access["status"]) == ("/broken", 500)


async def test_without_the_access_log_there_is_no_line_but_still_an_id(json_log: io.StringIO) -> None:
    async with client(RequestIds(APP, access_log=False)) as http:
        response = await asyncio.wait_for(http.get("/v1/things/1", headers={"X-Request-ID": "quiet"}), WAIT)
    assert response.headers["x-request-id"] == "quiet"
    assert records(json_log, ACCESS_LOGGER) == []
    (inner,) = records(json_log, INNER_LOGGER)
    assert inner["request_id"] == "quiet"


def ws_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {**http_scope(path, headers), "type": "websocket", "scheme": "ws", "subprotocols": []}


@pytest.mark.parametrize("access_log", [True, False])
async def test_a_websocket_has_its_id_in_the_handshake_and_one_access_line(
    access_log: bool, json_log: io.StringIO
) -> None:
    sent = await call(
        RequestIds(APP, access_log=access_log),
        ws_scope("/v1/socket", [(b"x-request-id", b"socket-1")]),
        [{"type": "websocket.connect"}],
    )
    accept, close = sent
    assert accept["type"] == "websocket.accept"
    assert header(accept, b"x-request-id") == [b"socket-1"]
    assert (close["type"], close["code"]) == ("websocket.close", 4409)
    if not access_log:
        assert records(json_log, ACCESS_LOGGER) == []
        return
    (access,) = records(json_log, ACCESS_LOGGER)
    assert (access["method"], access["route"], access["status"]) == ("WEBSOCKET", "/v1/socket", 101)
    assert access["close_code"] == 4409
    assert (access["request_id"], access["user_id"], access["org_id"]) == ("socket-1", "user-2", "org-2")


async def test_a_websocket_refused_before_accepting_is_logged_403_with_its_close_code(json_log: io.StringIO) -> None:
    await call(RequestIds(APP, access_log=True), ws_scope("/v1/refused", []), [{"type": "websocket.connect"}])
    (access,) = records(json_log, ACCESS_LOGGER)
    assert (access["route"], access["status"], access["close_code"]) == ("/v1/refused", 403, 4401)


async def test_a_websocket_the_client_closed_is_logged_with_the_clients_code(json_log: io.StringIO) -> None:
    async def echo_until_gone(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1001},
    ]
    sent = await call(RequestIds(echo_until_gone, access_log=True), ws_scope("/v1/socket", []), incoming)
    (given,) = header(sent[0], b"x-request-id")
    (access,) = records(json_log, ACCESS_LOGGER)
    assert (access["status"], access["close_code"], access["request_id"]) == (101, 1001, given.decode())
    assert access["route"] is None  # no router saw it


async def test_lifespan_passes_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        assert logs.current() is None

    await call(RequestIds(app, access_log=True), {"type": "lifespan"}, [])
    assert seen == ["lifespan"]
