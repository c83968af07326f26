"""One mapping from a failure to what the client is told (`services.errors.describe`), and the
two boundaries that answer from it: HTTP (503 with `Retry-After` for an unavailable database)
and the realtime endpoint (close 1013, try again later). The database here cannot be used at
all: an SQLite file in a directory that does not exist, or a PostgreSQL nobody listens for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from sitecomms.protocol.enums import Role
from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.frames import CloseCode
from sitecomms.server.app import create_app
from sitecomms.server.keys import Keyring
from sitecomms.server.services.errors import (
    DATABASE_UNAVAILABLE,
    REPORTED,
    Conflict,
    Failure,
    NotFound,
    describe,
)
from sitecomms.server.services.tokens import Tokens
from sitecomms.store.errors import Duplicate, Unavailable
from tests.support import JWT_SECRET, fast_settings

UNUSABLE = [
    "sqlite:////nonexistent-dir/sitecomms.db",
    pytest.param("postgresql://postgres@127.0.0.1:1/nothing_listens_here", marks=pytest.mark.postgres),
]
UNAVAILABLE_BODY = {"error": {"code": "unavailable", "message": "the database is unavailable; retry shortly"}}


def test_each_reportable_failure_is_described_once() -> None:
    assert describe(NotFound("no such conversation")) == Failure(ErrorCode.NOT_FOUND, "no such conversation")
    assert describe(Conflict("reused", ErrorCode.IDEMPOTENCY_KEY_REUSED)) == Failure(
        ErrorCode.IDEMPOTENCY_KEY_REUSED, "reused"
    )
    unavailable = describe(Unavailable("send_message: database is locked"))
    assert unavailable == DATABASE_UNAVAILABLE and unavailable.retry_after == 1
    assert "locked" not in unavailable.message, "the client is not told the driver's words"
    assert describe(Duplicate("pk_orgs", "create_org")) is None, "a duplicate no service expected is a bug"
    assert describe(ValueError("a bug")) is None
    assert all(describe(kind("x")) is not None for kind in REPORTED)


def _token() -> str:
    token, _ = Tokens(Keyring.fixed(JWT_SECRET), timedelta(minutes=5)).issue(
        user_id=str(uuid.uuid4()), org_id=str(uuid.uuid4()), role=Role.ADMIN, session_id=str(uuid.uuid4())
    )
    return token


@pytest.fixture(params=UNUSABLE, ids=["sqlite", "postgresql"])
def unusable_url(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(unusable_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(fast_settings(unusable_url, migrate_on_start=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test", timeout=30) as http:
            yield http


async def test_an_unavailable_database_is_a_503_with_retry_after_on_reads_and_writes(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Authorization": f"Bearer {_token()}"}
    read = await client.get("/v1/me", headers=headers)
    write = await client.post(
        "/v1/messages",
        headers=headers,
        json={"conversation_id": str(uuid.uuid4()), "content": "hello", "idempotency_key": "k1"},
    )
    for response in (read, write):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json() == UNAVAILABLE_BODY


async def test_readiness_says_the_database_is_not_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert response.json()["error"]["message"].startswith("database not ready")


def test_a_socket_is_told_to_come_back_later() -> None:
    """The org's reader cannot start, so joining the hub times out (10 s) and the socket is
    closed 1013, as a failure of the session's own reads would be (`Session.run`)."""
    app = create_app(fast_settings("sqlite:////nonexistent-dir/sitecomms.db", migrate_on_start=False))
    with TestClient(app) as http, http.websocket_connect("/v1/realtime") as ws:
        ws.send_json({"type": "hello", "token": _token()})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == CloseCode.TRY_AGAIN_LATER
