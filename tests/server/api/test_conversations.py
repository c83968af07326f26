"""Conversation lists, unread counts, read positions, names as each role sees them, thread pages."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support import Member, Orgs


async def conversation(orgs: Orgs, member: Member, conversation_id: str) -> dict[str, Any]:
    listing = await orgs.get(member, "/v1/conversations")
    return next(c for c in listing["conversations"] if c["id"] == conversation_id)  # type: ignore[no-any-return]


async def mark_read(stack: Stack, member: Member, conversation_id: str, position: int | None = None) -> Any:
    payload = None if position is None else {"position": position}
    response = await stack.client.post(
        f"/v1/conversations/{conversation_id}/read", json=payload, headers=member.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_names_as_each_role_sees_them(orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=2)
    medic, admin = world.medics[0], world.admins[0]
    assert medic.conversation_id
    await orgs.send(admin, medic.conversation_id, "from an admin")
    await orgs.send(medic, medic.conversation_id, "from the medic")

    medic_view = {c["type"]: c for c in (await orgs.get(medic, "/v1/conversations"))["conversations"]}
    assert set(medic_view) == {"direct", "broadcast"}
    assert medic_view["direct"]["name"] == "Admin"
    assert medic_view["broadcast"]["name"] == "Broadcast"

    admin_view = (await orgs.get(admin, "/v1/conversations"))["conversations"]
    assert {c["name"] for c in admin_view} == {world.medics[0].display_name, world.medics[1].display_name, "Broadcast"}

    as_medic = (await orgs.get(medic, f"/v1/conversations/{medic.conversation_id}/messages"))["messages"]
    as_admin = (await orgs.get(world.admins[1], f"/v1/conversations/{medic.conversation_id}/messages"))["messages"]
    assert [m["sender_name"] for m in as_medic] == ["Admin", medic.display_name]
    assert [m["sender_name"] for m in as_admin] == [admin.display_name, medic.display_name]
    assert [m["sender_role"] for m in as_medic] == ["admin", "medic"]


async def test_most_recent_activity_first(orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=3)
    admin = world.admins[0]
    order = [world.medics[1], world.medics[2], world.medics[0]]
    for medic in order:
        assert medic.conversation_id
        await orgs.send(medic, medic.conversation_id, f"hi from {medic.display_name}")
    listing = (await orgs.get(admin, "/v1/conversations"))["conversations"]
    with_messages = [c["id"] for c in listing if c["last_message_at"] is not None]
    assert with_messages == [m.conversation_id for m in reversed(order)]
    assert listing[-1]["id"] == world.broadcast_id  # no messages yet: last


async def test_unread_counts_exclude_own_messages_and_follow_reads(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=1)
    medic, admin, other_admin = world.medics[0], world.admins[0], world.admins[1]
    cid = medic.conversation_id
    assert cid
    sent = [await orgs.send(medic, cid, f"m{i}") for i in range(3)]
    await orgs.send(admin, cid, "reply")
    assert (await conversation(orgs, admin, cid))["unread_count"] == 3
    # Design §1: unread = after the read position and not sent by *this* user, so a fellow admin's
    # reply is unread for the other admin.
    assert (await conversation(orgs, other_admin, cid))["unread_count"] == 4
    assert (await conversation(orgs, medic, cid))["unread_count"] == 1

    status = await mark_read(stack, admin, cid, sent[1]["position"])
    assert status["last_read_position"] == sent[1]["position"]
    assert status["user_id"] == admin.id
    assert (await conversation(orgs, admin, cid))["unread_count"] == 1
    assert (await conversation(orgs, admin, cid))["last_read_position"] == sent[1]["position"]
    assert (await conversation(orgs, other_admin, cid))["unread_count"] == 4  # reads are per user

    back = await mark_read(stack, admin, cid, sent[0]["position"])  # never moves backwards
    assert back["last_read_position"] == sent[1]["position"]
    assert (await conversation(orgs, admin, cid))["unread_count"] == 1

    everything = await mark_read(stack, admin, cid)  # no body: up to the newest message
    assert (await conversation(orgs, admin, cid))["unread_count"] == 0
    beyond = await mark_read(stack, admin, cid, 10**12)  # clamped to the newest message
    assert beyond["last_read_position"] == everything["last_read_position"]


async def test_read_marks_turn_messages_read_for_the_sender(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic, admin = world.medics[0], world.admins[0]
    cid = medic.conversation_id
    assert cid
    first = await orgs.send(medic, cid, "one")
    await orgs.send(medic, cid, "two")
    await mark_read(stack, admin, cid, first["position"])
    statuses = [m["status"] for m in (await orgs.get(medic, f"/v1/conversations/{cid}/messages"))["messages"]]
    assert statuses == ["read", "sent"]


async def test_marking_an_empty_conversation_read_changes_nothing(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    status = await mark_read(stack, medic, medic.conversation_id)
    assert status["last_read_position"] == 0
    assert status["last_read_at"] is None


async def test_medic_broadcast_unread_and_read(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    admin, medic, other = world.admins[0], world.medics[0], world.medics[1]
    await orgs.send(admin, world.broadcast_id, "all hands 1")
    await orgs.send(admin, world.broadcast_id, "all hands 2")
    assert (await conversation(orgs, medic, world.broadcast_id))["unread_count"] == 2
    await mark_read(stack, medic, world.broadcast_id)
    assert (await conversation(orgs, medic, world.broadcast_id))["unread_count"] == 0
    assert (await conversation(orgs, other, world.broadcast_id))["unread_count"] == 2
    assert (await conversation(orgs, admin, world.broadcast_id))["unread_count"] == 0  # admin sent both


async def test_mark_read_of_invisible_or_bad_input(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    medic, neighbour = world.medics
    assert neighbour.conversation_id
    hidden = await stack.client.post(f"/v1/conversations/{neighbour.conversation_id}/read", headers=medic.headers)
    assert hidden.status_code == 404
    for payload in ({"position": -1}, {"position": "soon"}, {"until": 3}):
        response = await stack.client.post(
            f"/v1/conversations/{medic.conversation_id}/read", json=payload, headers=medic.headers
        )
        assert response.status_code == 422, payload


async def test_thread_pages_walk_back_to_the_first_message(orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    cid = medic.conversation_id
    assert cid
    sent = [(await orgs.send(medic, cid, f"n{i}"))["id"] for i in range(7)]

    newest = await orgs.get(medic, f"/v1/conversations/{cid}/messages", limit=3)
    assert [m["id"] for m in newest["messages"]] == sent[4:]
    assert newest["has_more"] is True
    seen = [m["id"] for m in newest["messages"]]
    before = newest["next_before"]
    while before:
        page = await orgs.get(medic, f"/v1/conversations/{cid}/messages", limit=3, before=before)
        seen = [m["id"] for m in page["messages"]] + seen
        before = page["next_before"]
        assert (before is not None) == page["has_more"]
    assert seen == sent


@pytest.mark.parametrize("count,limit", [(0, 5), (5, 5), (6, 5), (1, 1)])
async def test_thread_page_edges(orgs: Orgs, count: int, limit: int) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    cid = medic.conversation_id
    assert cid
    for i in range(count):
        await orgs.send(medic, cid, f"e{i}")
    page = await orgs.get(medic, f"/v1/conversations/{cid}/messages", limit=limit)
    assert len(page["messages"]) == min(count, limit)
    assert page["has_more"] is (count > limit)
    assert (page["next_before"] is None) is (count <= limit)
    positions = [m["position"] for m in page["messages"]]
    assert positions == sorted(positions)


async def test_thread_bad_parameters(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    other = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    cid = medic.conversation_id
    assert cid and other.medics[0].conversation_id
    foreign_cursor = (await orgs.get(other.medics[0], "/v1/sync"))["next_cursor"]
    cases = [
        ({"limit": 0}, 422),
        ({"limit": 201}, 422),
        ({"limit": "many"}, 422),
        ({"before": "garbage"}, 422),
        ({"before": foreign_cursor}, 422),
    ]
    for params, status in cases:
        response = await stack.client.get(f"/v1/conversations/{cid}/messages", params=params, headers=medic.headers)
        assert response.status_code == status, params
    missing = await stack.client.get(f"/v1/conversations/{uuid.uuid4()}/messages", headers=medic.headers)
    assert missing.status_code == 404
    malformed = await stack.client.get("/v1/conversations/not-a-uuid/messages", headers=medic.headers)
    assert malformed.status_code == 422
