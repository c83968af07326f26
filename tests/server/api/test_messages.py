"""Sending: idempotency (also racing and across restarts), validation, visibility and rights."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import func, select

from sitecomms.server.app import create_app
from sitecomms.store.schema import messages
from tests.conftest import Stack
from tests.sql import execute
from tests.support import Orgs


def body(conversation_id: str, content: str = "hello", key: str | None = None) -> dict[str, str]:
    return {"conversation_id": conversation_id, "content": content, "idempotency_key": key or uuid.uuid4().hex}


async def count_rows_with_key(stack: Stack, sender_id: str, key: str) -> int:
    query = select(func.count()).where(messages.c.sender_id == sender_id, messages.c.idempotency_key == key)
    return int(await stack.db.read("test_count", lambda conn: execute(conn, query).scalar_one()))


async def test_send_returns_the_message_and_same_key_returns_it_again(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    first = await stack.client.post("/v1/messages", json=body(medic.conversation_id, key="k"), headers=medic.headers)
    again = await stack.client.post("/v1/messages", json=body(medic.conversation_id, key="k"), headers=medic.headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    message = first.json()
    assert message["content"] == "hello"
    assert message["idempotency_key"] == "k"
    assert message["sender_id"] == medic.id
    assert message["status"] == "sent"
    assert await count_rows_with_key(stack, medic.id, "k") == 1


async def test_twenty_concurrent_sends_with_one_key_make_one_row(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    payload = body(medic.conversation_id, "only once", key="racing-key")
    responses = await asyncio.wait_for(
        asyncio.gather(*(stack.client.post("/v1/messages", json=payload, headers=medic.headers) for _ in range(20))),
        timeout=60,
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_rows_with_key(stack, medic.id, "racing-key") == 1


async def test_same_key_after_a_restart_returns_the_same_message(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    first = await orgs.send(medic, medic.conversation_id, "before restart", key="survives")
    restarted = create_app(stack.settings)
    async with (
        restarted.router.lifespan_context(restarted),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=restarted), base_url="http://restarted") as client,
    ):
        again = await client.post(
            "/v1/messages", json=body(medic.conversation_id, "before restart", "survives"), headers=medic.headers
        )
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]


async def test_reusing_a_key_for_a_different_message_is_a_conflict(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    await orgs.send(medic, medic.conversation_id, "one", key="dup")
    response = await stack.client.post(
        "/v1/messages", json=body(medic.conversation_id, "two", "dup"), headers=medic.headers
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert await count_rows_with_key(stack, medic.id, "dup") == 1


async def test_keys_are_per_sender(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=2)
    a, b = world.medics
    assert a.conversation_id and b.conversation_id
    first = await orgs.send(a, a.conversation_id, "from a", key="shared")
    second = await orgs.send(b, b.conversation_id, "from b", key="shared")
    assert first["id"] != second["id"]


async def test_preview_and_last_message_at_follow_the_newest_message(orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic, admin = world.medics[0], world.admins[0]
    assert medic.conversation_id
    long_text = "word " * 100
    sent = await orgs.send(medic, medic.conversation_id, long_text)
    listing = await orgs.get(admin, "/v1/conversations")
    direct = next(c for c in listing["conversations"] if c["id"] == medic.conversation_id)
    assert direct["last_message_at"] == sent["created_at"]
    assert direct["last_message_position"] == sent["position"]
    assert len(direct["last_message_preview"]) == 100
    assert direct["last_message_preview"].endswith("…")
    assert direct["last_message_preview"].startswith("word word")


async def test_admins_post_broadcasts_and_medics_may_not(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    ok = await stack.client.post("/v1/messages", json=body(world.broadcast_id, "all hands"), headers=admin.headers)
    assert ok.status_code == 201
    refused = await stack.client.post("/v1/messages", json=body(world.broadcast_id, "me too"), headers=medic.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"


async def test_invisible_conversations_are_not_found(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    other_org = await orgs.make(admins=1, medics=1)
    medic, neighbour = world.medics
    assert neighbour.conversation_id and other_org.medics[0].conversation_id
    for who, target in [
        (medic, neighbour.conversation_id),
        (medic, other_org.medics[0].conversation_id),
        (world.admins[0], other_org.medics[0].conversation_id),
        (world.admins[0], other_org.broadcast_id),
        (medic, str(uuid.uuid4())),
    ]:
        response = await stack.client.post("/v1/messages", json=body(target), headers=who.headers)
        assert response.status_code == 404, (who.role, response.text)
        assert response.json() == {"error": {"code": "not_found", "message": "conversation not found"}}


async def test_bad_input_gets_a_clear_error_and_stores_nothing(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    cid = medic.conversation_id
    assert cid
    cases: list[tuple[object, int, str]] = [
        (body(cid, ""), 422, "content"),
        (body(cid, "   \n\t "), 422, "content"),
        (body(cid, "x" * 4001), 422, "content"),
        (body(cid, "nul\x00byte"), 422, "content"),
        (body(cid, "\x1b[31mred"), 422, "found U+001B"),
        (body(cid, "title\x1b]0;owned\x07"), 422, "control characters"),
        ({**body(cid), "extra": 1}, 422, "extra"),
        ({**body(cid), "content": 5}, 422, "content"),
        ({**body(cid), "conversation_id": "not-a-uuid"}, 422, "conversation_id"),
        ({"content": "no conversation", "idempotency_key": "k"}, 422, "conversation_id"),
        ({**body(cid), "idempotency_key": ""}, 422, "idempotency_key"),
        ([1, 2, 3], 422, "body"),
    ]
    for payload, status, field in cases:
        response = await stack.client.post("/v1/messages", json=payload, headers=medic.headers)
        assert response.status_code == status, (payload, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_failed"
        assert field in error["message"]
    malformed = await stack.client.post(
        "/v1/messages", content=b'{"content": ', headers={**medic.headers, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_request"
    huge = await stack.client.post("/v1/messages", json=body(cid, "x" * 70_000), headers=medic.headers)
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"
    thread = await orgs.get(medic, f"/v1/conversations/{cid}/messages")
    assert thread["messages"] == []


async def test_content_of_exactly_4000_characters_is_accepted(orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    sent = await orgs.send(medic, medic.conversation_id, "é" * 4000)
    assert len(sent["content"]) == 4000
