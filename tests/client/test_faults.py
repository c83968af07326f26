"""Faults: a failing or unreachable server, a refused message, an expired or foreign token, and
corrupt realtime frames. Queued messages are never lost, and the client recovers by itself (or
after `login()` when the server no longer accepts its session)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from sitecomms.client import (
    AuthenticationError,
    Client,
    ConnectionState,
    NotFound,
    RequestRejected,
    ServerUnavailable,
    SignedOut,
)
from sitecomms.client._api import UNSPECIFIED, Api
from sitecomms.client._store import StoreCore
from sitecomms.protocol.enums import ChangeType, ConversationType, MessageStatus, Role
from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.models import (
    Change,
    ConversationView,
    ErrorBody,
    ErrorDetail,
    MessageView,
    SyncPage,
    TokenView,
    UserView,
)
from tests.client.harness import MEDIC, MEDIC_NAME, PASSWORD, ApiUser, demo_database, server
from tests.client.test_client import by_name, live, until
from tests.servers import HOST, free_port
from tests.support import JWT_SECRET
from tests.wire import wire

ME = str(uuid.UUID(int=1))
ORG = str(uuid.UUID(int=2))
CONVERSATION = str(uuid.UUID(int=3))
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
USER = UserView(ME, ORG, MEDIC, "Maya", Role.MEDIC, created_at=EPOCH, position=1, active=True)
DIRECT = ConversationView(
    CONVERSATION, ORG, ConversationType.DIRECT, "Admin", ME, last_message_at=None, last_message_preview=None,
    last_message_position=None, unread_count=0, last_read_position=0, created_at=EPOCH, position=2,
)  # fmt: skip


def refusal(status: int, code: ErrorCode, message: str) -> httpx.Response:
    return httpx.Response(status, json=wire(ErrorBody(ErrorDetail(code, message))))


class FakeServer:
    """An httpx transport standing in for a server that signs in, syncs once, then fails (or not).

    Its answers are the protocol's dataclasses, encoded as the server encodes them."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.failing = True
        self.malformed: set[str] = set()  # fields left out of the answers to sends
        self.attempted = asyncio.Event()
        self.position = 10

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/auth/login":
            expires_at = datetime.now(UTC) + timedelta(days=1)
            view = TokenView("token", "bearer", expires_at, "refresh", 30 * 86400, str(uuid.UUID(int=9)), USER)
            return httpx.Response(200, json=wire(view))
        if path == "/v1/sync" and "cursor" not in request.url.params:
            changes = [
                Change(USER.position, ChangeType.USER_UPDATED, USER),
                Change(2, ChangeType.CONVERSATION_UPDATED, DIRECT),
            ]
            return httpx.Response(200, json=wire(SyncPage(changes, "v1.2.x", has_more=False, reset=True)))
        if path == "/v1/messages":
            body = orjson.loads(request.content)
            self.posts.append(body)
            self.attempted.set()
            if body["content"] == "refused":
                return refusal(422, ErrorCode.VALIDATION_FAILED, "no")
            if self.failing:
                return refusal(503, ErrorCode.UNAVAILABLE, "down")
            self.position += 1
            sent = MessageView(
                str(uuid.uuid4()), body["conversation_id"], ME, "Maya", Role.MEDIC, body["content"],
                body["idempotency_key"], EPOCH, self.position, MessageStatus.SENT,
            )  # fmt: skip
            answer = {k: v for k, v in wire(sent).items() if k not in self.malformed}
            return httpx.Response(201, json=answer)
        return refusal(503, ErrorCode.UNAVAILABLE, "down")


async def test_a_failing_server_raises_server_unavailable_and_messages_stay_queued(tmp_path: Path) -> None:
    fake = FakeServer()
    nowhere = f"http://{HOST}:{free_port()}"  # the realtime socket finds nothing listening
    client = await Client.open(nowhere, tmp_path / "medic.db", transport=httpx.MockTransport(fake.handle))
    try:
        await client.login(MEDIC, PASSWORD)
        await client.sync_now()
        queued = await client.send(CONVERSATION, "through the outage")
        with pytest.raises(ServerUnavailable, match="503"):
            await client.sync_now()  # a cursor now: the fake fails every further sync

        await client.start()
        async with asyncio.timeout(10):
            await fake.attempted.wait()
        [message] = await client.thread(CONVERSATION)
        assert (message.local_id, message.status, message.id) == (queued.local_id, "queued", None)
        assert await client.outbox_size() == 1
        assert client.state is not ConnectionState.LIVE and not client.is_connected

        fake.failing = False  # the server recovers: the outbox's own retry delivers it
        await until(client.watch_thread(CONVERSATION), lambda t: t[0].status == "sent", "delivered after recovery")
        assert await client.outbox_size() == 0
        keys = [p["idempotency_key"] for p in fake.posts]
        assert len(keys) >= 2 and set(keys) == {queued.idempotency_key}, "every retry carries the same key"
    finally:
        await client.close()


async def test_a_message_the_server_refuses_is_marked_failed_and_does_not_block_the_rest(tmp_path: Path) -> None:
    fake = FakeServer()
    fake.failing = False
    client = await Client.open(
        f"http://{HOST}:{free_port()}", tmp_path / "m.db", transport=httpx.MockTransport(fake.handle)
    )
    try:
        await client.login(MEDIC, PASSWORD)
        await client.sync_now()
        for text in ("before", "refused", "after"):
            await client.send(CONVERSATION, text)
        await client.start()
        thread = await until(
            client.watch_thread(CONVERSATION),
            lambda t: all(m.status != "queued" for m in t),
            "nothing queued",
        )
        assert {m.content: m.status for m in thread} == {"before": "sent", "refused": "failed", "after": "sent"}
        assert [p["content"] for p in fake.posts] == ["before", "refused", "after"]
        assert await client.outbox_size() == 0
    finally:
        await client.close()


async def test_an_answer_that_is_not_the_protocols_shape_is_server_unavailable_and_the_message_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 201 without a field the protocol defines is not taken as delivered: the message stays
    queued (its retry carries the same key), and the error names the field."""
    caplog.set_level(logging.INFO, logger="sitecomms.client")
    fake = FakeServer()
    fake.failing = False
    fake.malformed = {"sender_role"}
    client = await Client.open(
        f"http://{HOST}:{free_port()}", tmp_path / "m.db", transport=httpx.MockTransport(fake.handle)
    )
    try:
        await client.login(MEDIC, PASSWORD)
        await client.sync_now()
        queued = await client.send(CONVERSATION, "answered badly")
        await client.start()
        async with asyncio.timeout(10):
            while len(fake.posts) < 2:  # answered, refused as malformed, retried
                fake.attempted.clear()
                await fake.attempted.wait()
        [message] = await client.thread(CONVERSATION)
        assert (message.status, await client.outbox_size()) == ("queued", 1)
        assert any("missing field 'sender_role'" in r.getMessage() for r in caplog.records)
        with pytest.raises(ServerUnavailable, match=r"not a MessageView: MessageView: missing field 'sender_role'"):
            await client._api.send(CONVERSATION, "again", queued.idempotency_key, token="token")

        fake.malformed = set()  # a server that speaks the protocol again: the retry delivers it
        await until(client.watch_thread(CONVERSATION), lambda t: t[0].status == "sent", "delivered")
        assert {p["idempotency_key"] for p in fake.posts} == {queued.idempotency_key}
    finally:
        await client.close()


async def test_an_unreachable_server_raises_server_unavailable(tmp_path: Path) -> None:
    client = await Client.open(f"http://{HOST}:{free_port()}", tmp_path / "medic.db")
    try:
        with pytest.raises(ServerUnavailable):
            await client.login(MEDIC, PASSWORD)
        assert client.me is None and not client.has_session
        with pytest.raises(SignedOut):  # no session: nothing to ask the server
            await client.sync_now()
        with pytest.raises(NotFound):  # nothing local to send to
            await client.send(str(uuid.uuid4()), "hello")
    finally:
        await client.close()


def token(user_id: str, org_id: str, *, secret: str, expires_in: float) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "org_id": org_id, "role": "medic", "iat": now - 60, "exp": int(now + expires_in)}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("secret", "expires_in"),
    [(JWT_SECRET, -60.0), ("another-secret-another-secret-another-secret", 3600.0)],
    ids=["expired", "foreign"],
)
async def test_a_refused_access_token_is_renewed_silently_and_the_queue_delivered(
    tmp_path: Path, secret: str, expires_in: float
) -> None:
    """The server refuses the saved access token (401): one refresh, the request again, no sign-in.
    (A refused refresh signs out: tests/client/test_session.py.)"""
    store = tmp_path / "medic.db"
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, store)
        me = await client.login(MEDIC, PASSWORD)
        await client.sync_now()
        await client.close()
        core = StoreCore(store)  # the saved session now holds an access token the server will refuse
        core.set_meta({"token": token(me.user_id, me.org_id, secret=secret, expires_in=expires_in)})
        core.close()

        client = await Client.open(srv.base_url, store)
        try:
            assert client.me == me, "the session is resumed from the store"
            conversation = by_name(await client.conversations(), "Admin")
            queued = [await client.send(conversation.id, f"kept {i}") for i in range(2)]
            await client.start()
            await live(client)
            thread = await until(
                client.watch_thread(conversation.id),
                lambda t: [m.status for m in t if m.content.startswith("kept")] == ["sent", "sent"],
                "both delivered",
            )
            assert {m.idempotency_key for m in thread if m.content.startswith("kept")} == {
                m.idempotency_key for m in queued
            }
            assert client._session.refreshes == 1, "one refresh, shared by the socket and the outbox"
        finally:
            await client.close()
        admin = await ApiUser.login(srv.base_url)
        on_server = [m["content"] for m in await admin.thread(conversation.id) if m["content"].startswith("kept")]
        assert on_server == ["kept 0", "kept 1"]


# --- corrupt realtime frames -----------------------------------------------------------------


class Tampering:
    """`Client.ws_connect` around the real one: replaces the first frame of type `kind` once."""

    def __init__(self, connect: Callable[[str], Any], kind: str, corrupt: Callable[[dict[str, Any]], str]) -> None:
        self.connect = connect
        self.kind = kind
        self.corrupt = corrupt
        self.connections = 0
        self.tampered = asyncio.Event()

    def __call__(self, url: str) -> Any:
        self.connections += 1
        return self._session(url)

    @contextlib.asynccontextmanager
    async def _session(self, url: str) -> AsyncIterator[Any]:
        async with self.connect(url) as ws:
            yield _Tampered(ws, self)


class _Tampered:
    def __init__(self, ws: Any, owner: Tampering) -> None:
        self.ws = ws
        self.owner = owner

    async def send(self, data: str) -> None:
        await self.ws.send(data)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        async for raw in self.ws:
            frame = orjson.loads(raw)
            if not self.owner.tampered.is_set() and frame.get("type") == self.owner.kind:
                self.owner.tampered.set()
                yield self.owner.corrupt(frame)
            else:
                yield raw


def garbage(_frame: dict[str, Any]) -> str:
    return '{"type": "message.created", "data": {"id": '  # cut short: not JSON


def hollow(frame: dict[str, Any]) -> str:
    """A well-formed frame whose data is not a message or conversation (missing fields)."""
    return orjson.dumps({**frame, "data": {"id": frame["data"]["id"]}}).decode()


@pytest.mark.parametrize(
    ("kind", "corrupt"),
    [("message.created", garbage), ("message.created", hollow), ("conversation.updated", hollow)],
    ids=["not-json", "message-without-fields", "last-frame-of-a-burst"],
)
async def test_a_corrupt_frame_is_logged_skipped_and_the_client_resyncs_without_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, corrupt: Callable[[dict[str, Any]], str]
) -> None:
    caplog.set_level(logging.INFO, logger="sitecomms.client")
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, tmp_path / "medic.db")
        try:
            await client.login(MEDIC, PASSWORD)
            tampering = Tampering(client.ws_connect, kind, corrupt)
            client.ws_connect = tampering
            await client.start()
            await live(client)
            conversation = by_name(await client.conversations(), "Admin")
            admin = await ApiUser.login(srv.base_url)

            first = await admin.send(conversation.id, "the frame of this one gets corrupted")
            async with asyncio.timeout(10):
                await tampering.tampered.wait()
            # recovered by the resync: the message and the conversation's new preview
            await until(
                client.watch_conversations(),
                lambda cs: by_name(cs, "Admin").last_message_preview == first["content"],
                "the preview after the resync",
                within=10.0,  # at once, not at the next heartbeat (15 s) that happens to arrive
            )
            await until(client.watch_thread(conversation.id), lambda t: t[-1].id == first["id"], "the message")
            assert tampering.connections >= 2, "the client reconnects after a corrupt frame"
            assert any(r.levelno >= logging.ERROR and "corrupt" in r.getMessage() for r in caplog.records)

            await live(client)
            second = await admin.send(conversation.id, "and this one arrives live")
            await until(client.watch_thread(conversation.id), lambda t: t[-1].id == second["id"], "the next message")

            server_thread = await admin.thread(conversation.id)
            assert [(m.id, m.content) for m in await client.thread(conversation.id)] == [
                (m["id"], m["content"]) for m in server_thread
            ]
            listing = await (await ApiUser.login(srv.base_url, MEDIC)).conversations()
            assert {c.id: c.last_message_preview for c in await client.conversations()} == {
                c["id"]: c["last_message_preview"] for c in listing
            }
            assert by_name(await client.conversations(), "Admin").name == "Admin"
            assert MEDIC_NAME in [m.sender_name for m in await client.thread(conversation.id)]
        finally:
            await client.close()


async def test_signing_in_as_someone_else_on_a_store_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """One store per user: another user's login is refused, and their session is not used either."""
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, tmp_path / "medic1.db")
        try:
            me = await client.login(MEDIC, PASSWORD)
            await client.sync_now()
            before = {c.id: c.name for c in await client.conversations()}
            with pytest.raises(AuthenticationError, match="another user"):
                await client.login("medic2@demo.example", PASSWORD)
            assert client.me == me

            # still medic1 towards the server: syncs bring medic1's data, sends go out as medic1
            await client.sync_now()
            assert {c.id: c.name for c in await client.conversations()} == before
            conversation = by_name(await client.conversations(), "Admin")
            await client.send(conversation.id, "still Maya")
            await client.start()
            thread = await until(
                client.watch_thread(conversation.id),
                lambda t: t[-1].content == "still Maya" and t[-1].status != "queued",
                "the message delivered",
            )
            assert (thread[-1].status, thread[-1].sender_id) == ("sent", me.user_id)
        finally:
            await client.close()
        admin = await ApiUser.login(srv.base_url)
        [on_server] = [m for m in await admin.thread(conversation.id) if m["content"] == "still Maya"]
        assert (on_server["sender_id"], on_server["sender_name"]) == (me.user_id, MEDIC_NAME)


async def test_after_the_servers_data_is_reset_the_client_replaces_what_it_holds(tmp_path: Path) -> None:
    """A cursor from the future (the server's database was replaced): the snapshot replaces the
    local copy, as the protocol asks, and only the user's own queued messages survive it."""
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, tmp_path / "medic.db")
        try:
            await client.login(MEDIC, PASSWORD)
            await client.start()
            await live(client)
            conversation = by_name(await client.conversations(), "Admin")
            admin = await ApiUser.login(srv.base_url)
            sent = await admin.send_many([(conversation.id, f"gone with the old database {i}") for i in range(30)])
            await until(client.watch_thread(conversation.id), lambda t: t[-1].id == sent[-1]["id"], "all 30 here")

            await srv.down()
            srv.env["SITECOMMS_DATABASE_URL"] = demo_database(tmp_path)  # the same demo, without the 30
            queued = await client.send(conversation.id, "written during the outage")
            await srv.up()
            # the new database has no session of this device: signed out, the queue kept
            await until(client.watch_connection(), lambda s: s is ConnectionState.SIGNED_OUT, "SIGNED_OUT")
            await client.login(MEDIC, PASSWORD)

            admin = await ApiUser.login(srv.base_url)
            thread = await until(
                client.watch_thread(conversation.id),
                lambda t: not any(m.content.startswith("gone with") for m in t) and t[-1].status == "sent",
                "the old messages gone and the queued one delivered",
                within=10.0,
            )
            await live(client)
            server_thread = await admin.thread(conversation.id)
            assert [(m.id, m.content) for m in thread] == [(m["id"], m["content"]) for m in server_thread]
            assert thread[-1].idempotency_key == queued.idempotency_key
            listing = await (await ApiUser.login(srv.base_url, MEDIC)).conversations()
            assert {c.id: (c.last_message_preview, c.unread_count) for c in await client.conversations()} == {
                c["id"]: (c["last_message_preview"], c["unread_count"]) for c in listing
            }
        finally:
            await client.close()


async def test_a_refusal_whose_body_is_not_the_protocols_error_still_refuses_with_its_status() -> None:
    """A proxy's 4xx (JSON, but not `{"error": {...}}`) is a refusal all the same; its code is unspecified."""

    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"detail": "blocked by policy"})

    api = Api("http://proxied.example", transport=httpx.MockTransport(proxy))
    try:
        with pytest.raises(RequestRejected) as refused:
            await api.send(CONVERSATION, "hello", "k-1", token="t")
        assert (refused.value.status, refused.value.code, refused.value.message) == (403, UNSPECIFIED, "Forbidden")
    finally:
        await api.close()


async def test_a_proxys_html_refusal_is_a_refusal_not_an_outage() -> None:
    """A 4xx page that is not JSON at all refuses (413: the message fails; 401: signed out), never retried forever."""

    def proxy(request: httpx.Request) -> httpx.Response:
        status = 401 if request.url.path == "/v1/sync" else 413
        return httpx.Response(status, text="<html>refused by the proxy</html>", headers={"content-type": "text/html"})

    api = Api("http://proxied.example", transport=httpx.MockTransport(proxy))
    try:
        with pytest.raises(RequestRejected) as refused:
            await api.send(CONVERSATION, "hello", "k-1", token="t")
        assert (refused.value.status, refused.value.code) == (413, UNSPECIFIED)
        with pytest.raises(AuthenticationError):
            await api.sync(None, token="t")
    finally:
        await api.close()
