"""Receipts: "read by R of N" for a message, and who; admins only in the broadcast.

`GET /v1/conversations/{id}/messages/{message_id}/receipts` on both engines: the counts and
the lists, who may ask (a medic never learns another medic's read state: 403 in the
broadcast), what is not found (another org's, a message of another conversation). Then the
stream side: an admin's snapshot carries every medic's read status and every user, so the
counts an admin's client derives from it (the rule of `web/static/receipts.js`) are the
endpoint's; a medic's snapshot and live feed carry no other medic's read status.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sitecomms.protocol.enums import ChangeType, Role
from sitecomms.protocol.errors import ErrorCode
from sitecomms.server.services.feed import Feed
from tests.conftest import Stack
from tests.server.api.test_conversations import mark_read
from tests.support import Member, Orgs

TIMEOUT = 60.0


def receipts_path(conversation_id: str, message_id: str) -> str:
    return f"/v1/conversations/{conversation_id}/messages/{message_id}/receipts"


async def receipts(stack: Stack, member: Member, conversation_id: str, message_id: str, expect: int = 200) -> Any:
    response = await stack.client.get(receipts_path(conversation_id, message_id), headers=member.headers)
    assert response.status_code == expect, response.text
    return response.json()


def ids(readers: list[dict[str, Any]]) -> list[str]:
    return [r["user_id"] for r in readers]


async def test_broadcast_receipts_count_the_active_medics_who_read_that_far(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=5)
    admin, other_admin = world.admins
    m = world.medics
    first = await orgs.send(admin, world.broadcast_id, "first")
    second = await orgs.send(admin, world.broadcast_id, "second")
    await mark_read(stack, m[0], world.broadcast_id)  # read both
    await mark_read(stack, m[1], world.broadcast_id, first["position"])  # only the first
    await mark_read(stack, m[2], world.broadcast_id)  # read both, then deactivated
    await mark_read(stack, other_admin, world.broadcast_id)  # an admin's read counts for nobody
    await stack.accounts.set_active(None, m[2].id, False)

    of_first = await receipts(stack, admin, world.broadcast_id, first["id"])
    assert (of_first["recipient_count"], of_first["read_count"]) == (4, 2)
    assert set(ids(of_first["read"])) == {m[0].id, m[1].id}
    assert set(ids(of_first["unread"])) == {m[3].id, m[4].id}
    assert (of_first["message_id"], of_first["conversation_id"], of_first["position"]) == (
        first["id"],
        world.broadcast_id,
        first["position"],
    )

    of_second = await receipts(stack, other_admin, world.broadcast_id, second["id"])
    assert (of_second["recipient_count"], of_second["read_count"]) == (4, 1)
    assert ids(of_second["read"]) == [m[0].id]
    assert ids(of_second["unread"]) == sorted([m[1].id, m[3].id, m[4].id], key=lambda i: ids_by_name(world, i))
    reader = of_second["read"][0]
    assert reader["display_name"] == m[0].display_name
    assert reader["last_read_position"] >= second["position"] and reader["last_read_at"] is not None
    never = next(r for r in of_second["unread"] if r["user_id"] == m[3].id)
    assert (never["last_read_position"], never["last_read_at"]) == (0, None)
    late = next(r for r in of_second["unread"] if r["user_id"] == m[1].id)
    assert late["last_read_position"] == first["position"]

    # Reactivated: counted again, with the reads they had made.
    await stack.accounts.set_active(None, m[2].id, True)
    again = await receipts(stack, admin, world.broadcast_id, second["id"])
    assert (again["recipient_count"], again["read_count"]) == (5, 2)
    # Promoted to admin: no longer a recipient of the broadcast.
    await stack.accounts.set_role(None, m[0].id, Role.ADMIN)
    promoted = await receipts(stack, admin, world.broadcast_id, second["id"])
    assert (promoted["recipient_count"], promoted["read_count"]) == (4, 1)
    assert m[0].id not in ids(promoted["read"]) + ids(promoted["unread"])


def ids_by_name(world: Any, user_id: str) -> str:
    member = next(x for x in world.members if x.id == user_id)
    return f"{member.display_name.casefold()}\x00{member.id}"


async def test_a_medic_never_learns_other_medics_read_state_of_the_broadcast(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    admin, medic, other = world.admins[0], world.medics[0], world.medics[1]
    sent = await orgs.send(admin, world.broadcast_id, "to everyone")
    await mark_read(stack, other, world.broadcast_id)
    for asker in (medic, other):
        refused = await receipts(stack, asker, world.broadcast_id, sent["id"], expect=403)
        assert refused["error"]["code"] == ErrorCode.FORBIDDEN
        assert other.id not in str(refused)
    # A message id that does not exist is refused the same way: nothing to probe.
    await receipts(stack, medic, world.broadcast_id, str(uuid.uuid4()), expect=403)


async def test_either_side_of_a_direct_conversation_sees_the_other_sides_reads(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=2)
    (admin, other_admin), medic = world.admins, world.medics[0]
    cid = medic.conversation_id
    assert cid
    question = await orgs.send(medic, cid, "need water")
    answer = await orgs.send(admin, cid, "on its way")
    await mark_read(stack, other_admin, cid, question["position"])

    # To the admins: each admin. To the medic: the admins as one team, read once any admin read
    # it, never who or how many they are.
    by_admin = await receipts(stack, admin, cid, question["id"])
    assert (by_admin["recipient_count"], by_admin["read_count"]) == (2, 1)
    assert (ids(by_admin["read"]), ids(by_admin["unread"])) == ([other_admin.id], [admin.id])
    assert by_admin["read"][0]["display_name"] == other_admin.display_name
    by_medic = await receipts(stack, medic, cid, question["id"])
    assert (by_medic["recipient_count"], by_medic["read_count"], by_medic["unread"]) == (1, 1, [])
    team = by_medic["read"][0]
    assert (team["user_id"], team["display_name"]) == (None, "Admin")
    assert team["last_read_position"] == question["position"]
    assert team["last_read_at"] == by_admin["read"][0]["last_read_at"]
    assert admin.id not in str(by_medic) and other_admin.id not in str(by_medic)
    later = await orgs.send(medic, cid, "still need water")
    unread_by_team = await receipts(stack, medic, cid, later["id"])
    assert (unread_by_team["recipient_count"], unread_by_team["read_count"], unread_by_team["read"]) == (1, 0, [])
    assert [(r["user_id"], r["display_name"]) for r in unread_by_team["unread"]] == [(None, "Admin")]

    of_answer = await receipts(stack, admin, cid, answer["id"])
    assert (of_answer["recipient_count"], of_answer["read_count"]) == (1, 0)
    assert ids(of_answer["unread"]) == [medic.id]
    await mark_read(stack, medic, cid)
    of_answer = await receipts(stack, other_admin, cid, answer["id"])
    assert (of_answer["recipient_count"], of_answer["read_count"], ids(of_answer["read"])) == (1, 1, [medic.id])
    assert (await receipts(stack, medic, cid, answer["id"]))["read_count"] == 1

    # Another medic's direct conversation is not found for this medic.
    other_cid = world.medics[1].conversation_id
    assert other_cid
    theirs = await orgs.send(world.medics[1], other_cid, "mine")
    await receipts(stack, medic, other_cid, theirs["id"], expect=404)


async def test_what_is_not_found(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    stranger = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    cid = medic.conversation_id
    assert cid
    sent = await orgs.send(admin, world.broadcast_id, "to everyone")
    direct = await orgs.send(medic, cid, "hello")

    for outsider in (stranger.admins[0], stranger.medics[0]):
        await receipts(stack, outsider, world.broadcast_id, sent["id"], expect=404)
        await receipts(stack, outsider, cid, direct["id"], expect=404)
    # A message of another conversation, or none at all, under a visible conversation.
    await receipts(stack, admin, world.broadcast_id, direct["id"], expect=404)
    await receipts(stack, admin, cid, sent["id"], expect=404)
    await receipts(stack, medic, cid, sent["id"], expect=404)
    await receipts(stack, admin, cid, str(uuid.uuid4()), expect=404)
    await receipts(stack, admin, str(uuid.uuid4()), sent["id"], expect=404)
    # Not an id at all: the path is validated.
    await receipts(stack, admin, cid, "not-a-uuid", expect=422)
    unauthenticated = await stack.client.get(receipts_path(cid, direct["id"]))
    assert unauthenticated.status_code == 401


async def test_an_admins_snapshot_carries_what_the_counts_need_and_a_medics_does_not(stack: Stack, orgs: Orgs) -> None:
    """The dashboard counts from the stream: every medic's read status in the broadcast and every
    user (role, active) reach an admin, in the snapshot and live; none of another medic's reaches
    a medic, in either."""
    world = await orgs.make(admins=1, medics=4)
    admin, m = world.admins[0], world.medics
    start = (await orgs.get(admin, "/v1/sync"))["next_cursor"]
    sent = await orgs.send(admin, world.broadcast_id, "to everyone")
    for medic in m[:3]:
        await mark_read(stack, medic, world.broadcast_id)
    await stack.accounts.set_active(None, m[2].id, False)

    snapshot = (await orgs.get(admin, "/v1/sync"))["changes"]
    users = {c["data"]["id"]: c["data"] for c in snapshot if c["type"] == ChangeType.USER_UPDATED}
    readers = {
        c["data"]["user_id"]: c["data"]["last_read_position"]
        for c in snapshot
        if c["type"] == ChangeType.READ_STATUS_UPDATED and c["data"]["conversation_id"] == world.broadcast_id
    }
    assert set(users) == {x.id for x in world.members}
    assert set(readers) == {x.id for x in m[:3]}
    # The counting rule of web/static/receipts.js, on the snapshot, agrees with the endpoint.
    recipients = [u for u in users.values() if u["role"] == Role.MEDIC and u["active"]]
    derived = (sum(readers.get(u["id"], 0) >= sent["position"] for u in recipients), len(recipients))
    served = await receipts(stack, admin, world.broadcast_id, sent["id"])
    assert derived == (served["read_count"], served["recipient_count"]) == (2, 3)

    # The same changes as pull sync from before them (what a reconnecting socket replays).
    changes, _ = await orgs.sync_all(admin, start)
    kinds = {(c["type"], c["data"].get("user_id") or c["data"].get("id")) for c in changes}
    assert {(ChangeType.READ_STATUS_UPDATED.value, x.id) for x in m[:3]} <= kinds
    assert (ChangeType.USER_UPDATED.value, m[2].id) in kinds

    # A medic: only their own read status of the broadcast, only their own user.
    mine = (await orgs.get(m[0], "/v1/sync"))["changes"]
    statuses = {
        c["data"]["user_id"]
        for c in mine
        if c["type"] == ChangeType.READ_STATUS_UPDATED and c["data"]["conversation_id"] == world.broadcast_id
    }
    assert statuses == {m[0].id}
    assert {c["data"]["id"] for c in mine if c["type"] == ChangeType.USER_UPDATED} == {m[0].id}

    # The live feed: each read status reaches the admin; a medic only their own.
    batch = await asyncio.wait_for(Feed(stack.db).read(world.org_id, 0, 1000), TIMEOUT)
    read_items = [i for i in batch.items if i.type is ChangeType.READ_STATUS_UPDATED]
    assert len(read_items) == 3
    for item in read_items:
        assert item.visible_to(admin.viewer)
        for medic in m:
            assert item.visible_to(medic.viewer) == (getattr(item.row, "user_id", None) == medic.id)
