"""`route.Route` serves every API route: one way to authenticate, parse, validate and answer.

Every route of the app is a `Route`; a route that declares something `Route` does not serve
(a new dependency, a header, a sync endpoint) fails at start-up instead of being skipped;
requests are answered with FastAPI's documented behaviour (error locations, status codes), and
OpenAPI documents the send exactly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import orjson
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel

from sitecomms.server.api.errors import install
from sitecomms.server.api.responses import JSON
from sitecomms.server.api.route import Route
from tests.conftest import Stack
from tests.support import Orgs


def test_every_api_route_is_served_by_route(stack: Stack) -> None:
    api_routes = [r for r in stack.app.routes if isinstance(r, APIRoute)]
    assert {r.path for r in api_routes} >= {"/v1/messages", "/v1/sync", "/v1/auth/login", "/v1/users/{user_id}"}
    assert all(isinstance(r, Route) for r in api_routes), [r.path for r in api_routes if not isinstance(r, Route)]
    assert api_routes[0].path == "/v1/messages"  # the hot route is matched first


async def _limit() -> None:
    return None


def test_a_dependency_route_does_not_serve_fails_at_start_up() -> None:
    api = APIRouter(route_class=Route)
    with pytest.raises(TypeError, match="no dependency but the Authenticator"):

        @api.get("/limited")
        async def limited(_: None = Depends(_limit)) -> JSON:
            return JSON({})


def test_a_header_parameter_or_a_sync_endpoint_fails_at_start_up() -> None:
    api = APIRouter(route_class=Route)
    with pytest.raises(TypeError, match="Route serves"):

        @api.get("/header")
        async def header(x_thing: str = Header()) -> JSON:
            return JSON({})

    with pytest.raises(TypeError, match="async"):

        @api.get("/sync")
        def blocking() -> JSON:
            return JSON({})


class _Item(BaseModel):
    name: str


def test_what_route_would_not_serve_as_declared_fails_at_start_up() -> None:
    async def gate() -> None:
        return None

    api = APIRouter(route_class=Route)
    refused: list[tuple[str, Callable[[], object]]] = []

    async def aliased(page: int = Query(5, alias="page-size")) -> JSON:
        return JSON({})

    async def listed(tag: list[str] = Query(None)) -> JSON:  # noqa: B008
        return JSON({})

    async def many(items: list[_Item]) -> JSON:
        return JSON({})

    async def two(a: _Item, b: _Item) -> JSON:
        return JSON({})

    async def embedded(item: _Item = Body(embed=True)) -> JSON:  # noqa: B008
        return JSON({})

    for endpoint, says in [
        (aliased, "aliases"),
        (listed, "single-valued"),
        (many, "one model"),
        (two, "one body model"),
        (embedded, "embedded"),
    ]:
        with pytest.raises(TypeError, match=says):
            api.add_api_route(f"/{endpoint.__name__}", endpoint, methods=["POST"])
    with pytest.raises(TypeError, match="no route or router dependencies"):
        api.add_api_route("/gated", aliased, dependencies=[Depends(gate)])
    assert refused == []


async def test_path_constraints_apply_and_an_optional_body_may_be_absent() -> None:
    api = FastAPI()
    api.router.route_class = Route

    @api.post("/p/{code}")
    async def coded(code: str = Path(max_length=3), item: _Item | None = None) -> JSON:
        return JSON({"code": code, "item": item.name if item else None})

    install(api)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as client:
        assert (await client.post("/p/abc")).json() == {"code": "abc", "item": None}
        assert (await client.post("/p/abcd")).status_code == 422
        named = await client.post("/p/abc", json={"name": "n"})
        assert named.json() == {"code": "abc", "item": "n"}


async def test_deep_json_and_a_vanished_client_are_answered_not_crashed(stack: Stack) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    answer = await stack.client.post("/v1/auth/login", content=deep, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "malformed_request")

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/auth/login",
        "raw_path": b"/v1/auth/login",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await asyncio.wait_for(stack.app(scope, receive, send), 5)
    assert sent[0]["status"] == 400


async def test_the_caller_is_checked_before_the_input(stack: Stack) -> None:
    answer = await stack.client.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"]["code"] == "unauthenticated"
    basic = await stack.client.get("/v1/sync", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


async def test_input_errors_name_where_they_are(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    cid = medic.conversation_id
    assert cid

    query = await stack.client.get(f"/v1/conversations/{cid}/messages?limit=0", headers=medic.headers)
    assert query.status_code == 422
    assert query.json()["error"]["message"].startswith("query.limit:")

    path = await stack.client.get("/v1/conversations/not-a-uuid/messages", headers=medic.headers)
    assert path.status_code == 422
    assert path.json()["error"]["message"].startswith("path.conversation_id:")

    headers = {**medic.headers, "content-type": "application/json"}
    missing = await stack.client.post("/v1/messages", content=b"", headers=headers)
    assert (missing.status_code, missing.json()["error"]["message"]) == (422, "body: Field required")

    null = await stack.client.post("/v1/messages", content=b"null", headers=headers)
    assert (null.status_code, null.json()["error"]["message"]) == (422, "body: Field required")
    no_position = await stack.client.post(f"/v1/conversations/{cid}/read", content=b"null", headers=headers)
    assert no_position.status_code == 200, no_position.text

    malformed = await stack.client.post("/v1/messages", content=b'{"content": ', headers=headers)
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "malformed_request")

    body = {"conversation_id": cid, "content": "   ", "idempotency_key": "k"}
    blank = await stack.client.post("/v1/messages", content=orjson.dumps(body), headers=headers)
    assert blank.status_code == 422
    assert blank.json()["error"]["message"] == "content: must not be empty or only whitespace"

    text = await stack.client.post(
        "/v1/messages", content=orjson.dumps(body), headers={**medic.headers, "content-type": "text/plain"}
    )
    assert text.status_code == 422  # not JSON: the body is not an object

    several = await stack.client.post(
        "/v1/messages", content=orjson.dumps({"content": "", "extra": 1}), headers=headers
    )
    message = several.json()["error"]["message"]
    assert several.status_code == 422
    assert all(part in message for part in ("conversation_id", "content", "idempotency_key", "extra")), message


async def test_a_json_lone_surrogate_is_a_field_error_not_malformed_json(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    raw = (
        b'{"conversation_id": "%s", "content": "a\\ud800b", "idempotency_key": "k"}'
        % str(medic.conversation_id).encode()
    )
    answer = await stack.client.post(
        "/v1/messages", content=raw, headers={**medic.headers, "content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["message"].startswith("content: ")
    # the fallback decoder for such bodies still refuses what is not JSON, as orjson does
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        odd = raw.replace(b'"idempotency_key": "k"', b'"idempotency_key": "k", "n": ' + constant)
        refused = await stack.client.post(
            "/v1/messages", content=odd, headers={**medic.headers, "content-type": "application/json"}
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "malformed_request", refused.text


async def test_send_answers_201_then_200_for_the_same_key(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    body = {"conversation_id": medic.conversation_id, "content": "hello", "idempotency_key": uuid.uuid4().hex}
    first = await stack.client.post("/v1/messages", json=body, headers=medic.headers)
    again = await stack.client.post(
        "/v1/messages", json=body, headers={**medic.headers, "content-type": "application/vnd.sitecomms+json"}
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert first.headers["content-type"] == "application/json"


def test_openapi_documents_the_send_exactly(stack: Stack) -> None:
    operation = stack.app.openapi()["paths"]["/v1/messages"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/SendMessageRequest")
    assert {"200", "201", "401", "403", "404", "409", "413", "422", "503"} <= set(operation["responses"])
    assert operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/MessageView")
