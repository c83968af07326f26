"""Pull sync: the snapshot, incremental pages, paging, and cursor errors."""

from __future__ import annotations

from typing import Any

from tests.conftest import Stack
from tests.support import Orgs


def of_type(changes: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c["data"] for c in changes if c["type"] == kind]


async def test_first_sync_is_a_snapshot_with_the_newest_100_messages(orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    admin, medic = world.admins[0], world.medics[0]
    assert medic.conversation_id
    sent = [(await orgs.send(medic, medic.conversation_id, f"s{i}"))["id"] for i in range(105)]
    await orgs.send(admin, world.broadcast_id, "to all")

    page = await orgs.get(admin, "/v1/sync")
    assert page["reset"] is True
    assert page["has_more"] is False
    changes = page["changes"]
    assert [c["position"] for c in changes] == sorted(c["position"] for c in changes)
    assert {c["id"] for c in of_type(changes, "conversation.updated")} == {
        world.broadcast_id,
        *(m.conversation_id for m in world.medics),
    }
    direct_messages = [
        m["id"] for m in of_type(changes, "message.created") if m["conversation_id"] == medic.conversation_id
    ]
    assert direct_messages == sent[-100:]
    assert {u["id"] for u in of_type(changes, "user.updated")} == {m.id for m in world.members}

    after = await orgs.get(admin, "/v1/sync", cursor=page["next_cursor"])
    assert after == {"changes": [], "next_cursor": page["next_cursor"], "has_more": False, "reset": False}


async def test_incremental_changes_in_position_order(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    cid = medic.conversation_id
    assert cid
    cursor = (await orgs.get(medic, "/v1/sync"))["next_cursor"]

    message = await orgs.send(admin, cid, "update from the office")
    read = await stack.client.post(f"/v1/conversations/{cid}/read", headers=medic.headers)
    assert read.status_code == 200
    rename = await stack.client.patch(f"/v1/users/{medic.id}", json={"display_name": "Renamed"}, headers=medic.headers)
    assert rename.status_code == 200

    changes, _ = await orgs.sync_all(medic, cursor)
    assert [c["type"] for c in changes] == [
        "message.created",
        "read_status.updated",
        "user.updated",
        "conversation.updated",  # moved forward by the rename (admins see it under the new name)
    ]
    assert [c["position"] for c in changes] == sorted(c["position"] for c in changes)
    created = changes[0]["data"]
    assert (created["id"], created["sender_name"]) == (message["id"], "Admin")
    assert changes[1]["data"]["last_read_position"] == message["position"]
    assert changes[2]["data"]["display_name"] == "Renamed"
    conversation = changes[3]["data"]
    assert conversation["last_message_preview"] == "update from the office"
    assert conversation["unread_count"] == 0


async def test_small_pages_deliver_everything_exactly_once(orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    admin = world.admins[0]
    cursor = (await orgs.get(admin, "/v1/sync"))["next_cursor"]
    sent = []
    for i in range(9):
        medic = world.medics[i % 2]
        assert medic.conversation_id
        sent.append((await orgs.send(medic, medic.conversation_id, f"p{i}"))["id"])
    for limit in (1, 2, 3, 500):
        changes, _ = await orgs.sync_all(admin, cursor, limit=limit)
        positions = [c["position"] for c in changes]
        assert positions == sorted(set(positions)), limit  # strictly increasing: nothing twice
        assert [m["id"] for m in of_type(changes, "message.created")] == sent, limit


async def test_a_medic_cursor_moves_past_changes_it_cannot_see(orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    medic, neighbour = world.medics
    assert neighbour.conversation_id
    cursor = (await orgs.get(medic, "/v1/sync"))["next_cursor"]
    await orgs.send(neighbour, neighbour.conversation_id, "not for medic 0")
    page = await orgs.get(medic, "/v1/sync", cursor=cursor)
    assert page["changes"] == []
    assert page["next_cursor"] != cursor
    assert int(page["next_cursor"].split(".")[1]) > int(cursor.split(".")[1])


async def test_cursor_errors(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    other = await orgs.make(admins=1, medics=0)
    admin = world.admins[0]
    cursor = (await orgs.get(admin, "/v1/sync"))["next_cursor"]
    version, position, tag = cursor.split(".")
    ahead = f"{version}.{int(position) + 1000}.{tag}"
    foreign = (await orgs.get(other.admins[0], "/v1/sync"))["next_cursor"]
    cases = [(ahead, 409, "cursor_ahead"), ("v9.1.x", 422, "invalid_cursor"), (foreign, 422, "invalid_cursor")]
    for bad, status, code in cases:
        response = await stack.client.get("/v1/sync", params={"cursor": bad}, headers=admin.headers)
        assert response.status_code == status, bad
        assert response.json()["error"]["code"] == code
    for limit in (0, 1001):
        response = await stack.client.get("/v1/sync", params={"cursor": cursor, "limit": limit}, headers=admin.headers)
        assert response.status_code == 422
