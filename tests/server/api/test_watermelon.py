"""WatermelonDB sync (`/v1/watermelon/sync`): pull shapes and labels, push exactly once, conflicts,
refusals, schema versions and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sitecomms.protocol.cursors import Cursor
from sitecomms.server.services.watermelon import PUSH_MAX_MESSAGES
from tests.conftest import Stack
from tests.support import Member, Orgs, World

PATH = "/v1/watermelon/sync"
CONVERSATION_COLUMNS = {
    "id",
    "server_id",
    "org_id",
    "type",
    "medic_id",
    "last_message_at",
    "participant_name",
    "unread_count",
    "last_read_at",
}
MESSAGE_COLUMNS = {
    "id",
    "server_id",
    "conversation_id",
    "sender_id",
    "sender_name",
    "content",
    "status",
    "idempotency_key",
    "created_at",
}


def wm_id() -> str:
    return uuid.uuid4().hex[:16]


async def pull(
    stack: Stack, member: Member, since: int | None = None, *, version: int = 5, migration: Any = None
) -> dict[str, Any]:
    params = {
        "last_pulled_at": "null" if since is None else str(since),
        "schema_version": str(version),
        "migration": json.dumps(migration),
    }
    response = await stack.client.get(PATH, params=params, headers=member.headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    for table in ("conversations", "messages"):
        assert set(answer["changes"][table]) == {"created", "updated", "deleted"}
        ids = [r["id"] for r in answer["changes"][table]["created"] + answer["changes"][table]["updated"]]
        ids += answer["changes"][table]["deleted"]
        assert len(ids) == len(set(ids)), f"an id twice in {table}"
    assert isinstance(answer["timestamp"], int) and answer["timestamp"] > 0
    return answer


def table(created: Any = (), updated: Any = (), deleted: Any = ()) -> dict[str, Any]:
    return {"created": list(created), "updated": list(updated), "deleted": list(deleted)}


async def push(stack: Stack, member: Member, since: int, changes: dict[str, Any], *, status: int = 200) -> Any:
    body = {"conversations": table(), "messages": table(), **changes}
    response = await stack.client.post(PATH, params={"last_pulled_at": str(since)}, json=body, headers=member.headers)
    assert response.status_code == status, response.text
    return response.json()


def new_message(conversation_id: str, content: str, record_id: str | None = None) -> dict[str, Any]:
    return {
        "id": record_id or wm_id(),
        "_status": "created",
        "_changed": "",
        "server_id": "",
        "conversation_id": conversation_id,
        "sender_id": "",
        "sender_name": "",
        "content": content,
        "status": "queued",
        "idempotency_key": "",
        "created_at": 1795234346695,
    }


async def thread(orgs: Orgs, member: Member, conversation_id: str) -> list[dict[str, Any]]:
    page = await orgs.get(member, f"/v1/conversations/{conversation_id}/messages", limit=200)
    messages: list[dict[str, Any]] = page["messages"]
    return messages


async def test_first_sync_has_the_schema_v5_rows_the_viewer_may_see(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    other = await orgs.make(admins=1, medics=1)
    admin, medic, stranger = world.admins[0], world.medics[0], world.medics[1]
    assert medic.conversation_id and stranger.conversation_id
    hello = await orgs.send(admin, medic.conversation_id, "hello from the office")
    await orgs.send(stranger, stranger.conversation_id, "not for medic 0")
    await orgs.send(other.medics[0], str(other.medics[0].conversation_id), "another org")

    answer = await pull(stack, medic)
    conversations = answer["changes"]["conversations"]["created"]
    assert {c["id"] for c in conversations} == {medic.conversation_id, world.broadcast_id}
    assert all(set(c) == CONVERSATION_COLUMNS for c in conversations)
    direct = next(c for c in conversations if c["id"] == medic.conversation_id)
    assert direct["participant_name"] == "Admin"
    assert (direct["server_id"], direct["org_id"], direct["type"], direct["medic_id"]) == (
        medic.conversation_id,
        world.org_id,
        "direct",
        medic.id,
    )
    assert direct["unread_count"] == 1 and direct["last_read_at"] is None
    assert isinstance(direct["last_message_at"], int) and direct["last_message_at"] > 1.7e12
    messages = answer["changes"]["messages"]["created"]
    assert [m["content"] for m in messages] == ["hello from the office"]
    (message,) = messages
    assert set(message) == MESSAGE_COLUMNS
    assert (message["id"], message["server_id"], message["sender_name"], message["status"]) == (
        hello["id"],
        hello["id"],
        "Admin",
        "sent",
    )
    assert isinstance(message["created_at"], int)
    assert answer["changes"]["messages"]["updated"] == answer["changes"]["conversations"]["deleted"] == []
    text = json.dumps(answer)
    for secret in ("not for medic 0", "another org", stranger.conversation_id, other.org_id, admin.display_name):
        assert secret not in text

    admins_view = await pull(stack, admin)
    names = {c["id"]: c["participant_name"] for c in admins_view["changes"]["conversations"]["created"]}
    assert names == {
        world.broadcast_id: "Broadcast",
        medic.conversation_id: medic.display_name,
        stranger.conversation_id: stranger.display_name,
    }


async def test_incremental_pull_labels_and_the_timestamp_is_the_stream_position(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    cid = str(medic.conversation_id)
    first = await pull(stack, medic)
    assert (await pull(stack, medic, first["timestamp"]))["changes"] == {
        "conversations": table(),
        "messages": table(),
    }

    theirs = await orgs.send(admin, cid, "from the office")
    mine = await orgs.send(medic, cid, "from the field", key="webKey0123")
    answer = await pull(stack, medic, first["timestamp"])
    assert answer["timestamp"] == mine["position"] + 1  # the conversation's preview came last
    assert [m["id"] for m in answer["changes"]["messages"]["created"]] == [theirs["id"]]
    (own,) = answer["changes"]["messages"]["updated"]  # never `created`: WatermelonDB #649
    assert (own["id"], own["server_id"]) == ("webKey0123", mine["id"])
    (conversation,) = answer["changes"]["conversations"]["updated"]
    assert conversation["id"] == cid and conversation["unread_count"] == 1
    assert answer["changes"]["conversations"]["created"] == []

    # The caller's read mark elsewhere (the web app) moves the conversation's unread count.
    assert (await stack.client.post(f"/v1/conversations/{cid}/read", headers=medic.headers)).status_code == 200
    after_read = await pull(stack, medic, answer["timestamp"])
    (conversation,) = after_read["changes"]["conversations"]["updated"]
    assert conversation["unread_count"] == 0 and isinstance(conversation["last_read_at"], int)
    assert after_read["changes"]["messages"] == table()
    # The admin's device sees the message the medic's read as read.
    admin_first = await pull(stack, admin)
    statuses = {m["server_id"]: m["status"] for m in admin_first["changes"]["messages"]["created"]}
    assert statuses[theirs["id"]] == "read"


async def test_pushed_messages_are_sent_exactly_once_and_come_back_as_updated(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    cid = str(medic.conversation_id)
    since = (await pull(stack, medic))["timestamp"]
    records = [new_message(cid, f"offline {i}") for i in range(3)]
    changes = {"messages": table(created=records), "local_only_table": table(created=[{"id": "x"}])}
    answer = await push(stack, medic, since, changes)
    assert answer == {"experimentalRejectedIds": {"conversations": [], "messages": []}}
    # The device crashed before marking them synced: the same push again, then once more as updates.
    await push(stack, medic, since, changes)
    await push(stack, medic, since, {"messages": table(updated=records)})
    stored = await thread(orgs, admin, cid)
    assert [(m["content"], m["idempotency_key"]) for m in stored] == [(r["content"], r["id"]) for r in records]

    echo = await pull(stack, medic, since)
    assert echo["changes"]["messages"]["created"] == []
    assert [m["id"] for m in echo["changes"]["messages"]["updated"]] == [r["id"] for r in records]
    assert [m["server_id"] for m in echo["changes"]["messages"]["updated"]] == [m["id"] for m in stored]
    seen_by_admin = await pull(stack, admin, since)
    assert [m["id"] for m in seen_by_admin["changes"]["messages"]["created"]] == [m["id"] for m in stored]

    # An edit of a pushed message, and deletes, are ignored: the server keeps what was sent.
    edited = {**records[0], "content": "edited on the device", "_status": "updated", "_changed": "content"}
    deleted = [records[1]["id"], stored[2]["id"], "nonexistent1"]
    answer = await push(stack, medic, echo["timestamp"], {"messages": table(updated=[edited], deleted=deleted)})
    assert answer["experimentalRejectedIds"]["messages"] == []
    assert [m["content"] for m in await thread(orgs, admin, cid)] == [r["content"] for r in records]


async def test_a_push_is_refused_whole_when_a_pushed_conversation_changed(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    cid = str(medic.conversation_id)
    await orgs.send(admin, cid, "before the pull")
    first = await pull(stack, medic)
    (conversation,) = [c for c in first["changes"]["conversations"]["created"] if c["id"] == cid]
    read_locally = {**conversation, "unread_count": 0, "_status": "updated", "_changed": "unread_count"}
    offline = new_message(cid, "sent with the read")
    await orgs.send(admin, cid, "after the pull")  # the server changed the conversation

    refused = await push(
        stack,
        medic,
        first["timestamp"],
        {"conversations": table(updated=[read_locally]), "messages": table(created=[offline])},
        status=409,
    )
    assert refused["error"]["code"] == "conflict"
    assert cid in refused["error"]["message"]
    assert [m["content"] for m in await thread(orgs, admin, cid)] == ["before the pull", "after the pull"]

    again = await pull(stack, medic, first["timestamp"])  # the client pulls, merges and pushes again
    changes = {"conversations": table(updated=[read_locally]), "messages": table(created=[offline])}
    await push(stack, medic, again["timestamp"], changes)
    assert [m["content"] for m in await thread(orgs, admin, cid)][-1] == "sent with the read"
    listed = await orgs.get(medic, "/v1/conversations")
    (direct,) = [c for c in listed["conversations"] if c["id"] == cid]
    assert direct["unread_count"] == 0  # read up to last_pulled_at: both office messages


async def test_writes_outside_the_callers_reach_are_rejected_or_ignored(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    other = await orgs.make(admins=1, medics=1)
    admin, medic, stranger = world.admins[0], world.medics[0], world.medics[1]
    theirs = await orgs.send(admin, str(stranger.conversation_id), "private to medic 1")
    to_medic = await orgs.send(admin, str(medic.conversation_id), "to medic 0")
    since = (await pull(stack, medic))["timestamp"]
    attempts = {
        "into another medic's conversation": new_message(str(stranger.conversation_id), "intrusion"),
        "into the broadcast": new_message(world.broadcast_id, "medics do not broadcast"),
        "into another org": new_message(str(other.medics[0].conversation_id), "cross-org"),
        "into nothing": new_message(str(uuid.uuid4()), "nowhere"),
        "empty content": new_message(str(medic.conversation_id), ""),
        "no content": {"id": wm_id(), "conversation_id": str(medic.conversation_id)},
        # The id of a message the medic may not see is no server row of theirs: a new message.
        "another's message": {**new_message(str(stranger.conversation_id), "overwrite"), "id": theirs["id"]},
    }
    server_row = {**new_message(str(medic.conversation_id), "edited"), "id": to_medic["id"]}  # server-owned: ignored
    created_conversation = {"id": wm_id(), "type": "direct", "medic_id": medic.id}
    foreign_conversation = {"id": str(stranger.conversation_id), "unread_count": 0}
    answer = await push(
        stack,
        medic,
        since,
        {
            "messages": table(created=attempts.values(), updated=[server_row], deleted=[theirs["id"]]),
            "conversations": table(
                created=[created_conversation], updated=[foreign_conversation], deleted=[world.broadcast_id]
            ),
        },
    )
    assert sorted(answer["experimentalRejectedIds"]["messages"]) == sorted(r["id"] for r in attempts.values())
    assert answer["experimentalRejectedIds"]["conversations"] == [created_conversation["id"]]
    assert [m["content"] for m in await thread(orgs, admin, str(stranger.conversation_id))] == ["private to medic 1"]
    assert [m["content"] for m in await thread(orgs, admin, str(medic.conversation_id))] == ["to medic 0"]
    assert await thread(orgs, admin, world.broadcast_id) == []
    assert await thread(orgs, other.admins[0], str(other.medics[0].conversation_id)) == []
    statuses = await orgs.get(admin, "/v1/sync")
    assert not [
        c for c in statuses["changes"] if c["type"] == "read_status.updated" and c["data"]["user_id"] == medic.id
    ]


async def test_a_changed_account_or_a_reset_stream_gets_a_replacement(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    since = (await pull(stack, medic))["timestamp"]
    ahead = await pull(stack, medic, since + 1000)
    assert ahead["experimentalStrategy"] == "replacement" and ahead["timestamp"] == since
    assert {c["id"] for c in ahead["changes"]["conversations"]["updated"]} == {
        medic.conversation_id,
        world.broadcast_id,
    }
    renamed = await stack.client.patch(
        f"/v1/users/{medic.id}", json={"display_name": "Renamed Medic"}, headers=admin.headers
    )
    assert renamed.status_code == 200
    replaced = await pull(stack, medic, since)
    assert replaced["experimentalStrategy"] == "replacement"
    assert replaced["changes"]["conversations"]["created"] == []
    assert len(replaced["changes"]["conversations"]["updated"]) == 2
    assert "experimentalStrategy" not in await pull(stack, medic, replaced["timestamp"])


async def test_schema_versions_migrations_and_bad_input(stack: Stack, orgs: Orgs) -> None:
    world: World = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    await orgs.send(admin, str(medic.conversation_id), "kept through the migration")
    since = (await pull(stack, medic))["timestamp"]

    bad = [
        ({"schema_version": "4"}, "schema_version 4 is not supported"),
        ({"schema_version": "five"}, ""),
        ({"schema_version": "5", "last_pulled_at": "yesterday"}, "last_pulled_at"),
        ({"schema_version": "5", "last_pulled_at": str(2**60)}, "out of range"),
        ({"schema_version": "5", "last_pulled_at": "-1"}, "last_pulled_at"),
        ({"schema_version": "5", "last_pulled_at": "1.5"}, "last_pulled_at"),
        # What Python's int() reads as a number, and no JavaScript number prints as.
        ({"schema_version": "5", "last_pulled_at": "+5"}, "last_pulled_at"),
        ({"schema_version": "5", "last_pulled_at": " 5"}, "last_pulled_at"),
        ({"schema_version": "5", "last_pulled_at": "1_0"}, "last_pulled_at"),
        ({"schema_version": "5", "last_pulled_at": "\u0665"}, "last_pulled_at"),  # ARABIC-INDIC DIGIT FIVE
        ({"schema_version": "6", "migration": "{"}, "not JSON"),
        ({"schema_version": "6", "migration": '{"from": 6, "tables": [], "columns": []}'}, "'from'"),
        ({"schema_version": "6", "migration": '{"from": 5, "tables": "messages", "columns": []}'}, "migration"),
        ({"schema_version": "6", "migration": '{"from": 5, "tables": [], "columns": [{"table": 1}]}'}, "migration"),
        ({"schema_version": "6", "migration": "[1]"}, "migration"),
    ]
    for params, said in bad:
        response = await stack.client.get(PATH, params=params, headers=medic.headers)
        assert response.status_code == 422, (params, response.text)
        assert said in response.json()["error"]["message"], (params, response.text)
    missing = await stack.client.post(PATH, json={}, headers=medic.headers)
    assert missing.status_code == 422 and "last_pulled_at" in missing.json()["error"]["message"]
    unauthenticated = await stack.client.get(PATH, params={"schema_version": "5"})
    assert unauthenticated.status_code == 401

    later = await pull(stack, medic, since, version=7)  # a later app schema (local additions) syncs as v5
    assert later["changes"] == {"conversations": table(), "messages": table()}
    added_column = await pull(
        stack,
        medic,
        since,
        version=6,
        migration={"from": 5, "tables": [], "columns": [{"table": "messages", "columns": ["priority"]}]},
    )
    assert [m["content"] for m in added_column["changes"]["messages"]["updated"]] == ["kept through the migration"]
    added_table = await pull(
        stack, medic, since, version=6, migration={"from": 5, "tables": ["conversations"], "columns": []}
    )
    assert len(added_table["changes"]["conversations"]["created"]) == 2
    unrelated = await pull(stack, medic, since, version=6, migration={"from": 5, "tables": ["notes"], "columns": []})
    assert unrelated["changes"] == {"conversations": table(), "messages": table()}


async def test_a_push_may_be_larger_than_other_requests_but_is_bounded(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    cid = str(medic.conversation_id)
    since = (await pull(stack, medic))["timestamp"]
    records = [new_message(cid, f"{i} " + "x" * 3000) for i in range(60)]  # about 190 KB, over the API's 64 KiB
    answer = await push(stack, medic, since, {"messages": table(created=records)})
    assert answer["experimentalRejectedIds"]["messages"] == []
    assert len(await thread(orgs, medic, cid)) == 60
    huge = [new_message(cid, "y" * 3900) for _ in range(300)]
    refused = await push(stack, medic, since, {"messages": table(created=huge)}, status=413)
    assert refused["error"]["code"] == "payload_too_large"
    other = await stack.client.post(
        "/v1/messages",
        json={"conversation_id": cid, "content": "z", "idempotency_key": "k", "padding": "p" * 70_000},
        headers=medic.headers,
    )
    assert other.status_code == 413


async def test_a_read_by_the_other_side_turns_own_messages_read_in_a_later_pull(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    cid = str(medic.conversation_id)
    since = (await pull(stack, medic))["timestamp"]
    record = new_message(cid, "please confirm")
    await push(stack, medic, since, {"messages": table(created=[record])})
    echo = await pull(stack, medic, since)
    assert [(m["id"], m["status"]) for m in echo["changes"]["messages"]["updated"]] == [(record["id"], "sent")]
    theirs = await orgs.send(admin, cid, "confirmed")
    assert (await stack.client.post(f"/v1/conversations/{cid}/read", headers=admin.headers)).status_code == 200

    after = await pull(stack, medic, echo["timestamp"])
    assert [m["id"] for m in after["changes"]["messages"]["created"]] == [theirs["id"]]
    assert [(m["id"], m["status"]) for m in after["changes"]["messages"]["updated"]] == [(record["id"], "read")]
    assert (await pull(stack, medic, after["timestamp"]))["changes"]["messages"] == table()


async def test_the_same_push_from_two_requests_at_once_stores_each_message_once(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    cid = str(medic.conversation_id)
    since = (await pull(stack, medic))["timestamp"]
    records = [new_message(cid, f"raced {i}") for i in range(5)]
    changes = {"messages": table(created=records)}
    answers = await asyncio.wait_for(
        asyncio.gather(*(push(stack, medic, since, changes) for _ in range(4))), timeout=30
    )
    assert all(a["experimentalRejectedIds"]["messages"] == [] for a in answers)
    stored = await thread(orgs, medic, cid)
    assert sorted(m["idempotency_key"] for m in stored) == sorted(r["id"] for r in records)


async def test_a_push_of_many_records_is_answered(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    since = (await pull(stack, medic))["timestamp"]
    conversations = [{"id": f"c{i}", "unread_count": 0} for i in range(20_000)]
    messages = [{"id": f"m{i}", "conversation_id": f"c{i}", "content": "x"} for i in range(5_000)]
    answer = await push(
        stack, medic, since, {"conversations": table(updated=conversations), "messages": table(created=messages)}
    )
    assert len(answer["experimentalRejectedIds"]["messages"]) == 5_000


async def test_send_created_as_updated_puts_every_row_in_updated(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    await orgs.send(admin, str(medic.conversation_id), "hello")
    params = {"last_pulled_at": "null", "schema_version": "5", "send_created_as_updated": "true"}
    response = await stack.client.get(PATH, params=params, headers=medic.headers)
    assert response.status_code == 200, response.text
    changes = response.json()["changes"]
    assert changes["conversations"]["created"] == changes["messages"]["created"] == []
    assert len(changes["conversations"]["updated"]) == 2 and len(changes["messages"]["updated"]) == 1


async def test_pushed_fields_the_database_cannot_hold_are_refused_not_crashed_on(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    cid = str(medic.conversation_id)
    since = (await pull(stack, medic))["timestamp"]
    # Raw JSON: a lone surrogate is valid JSON but no text a database stores (PostgreSQL refuses
    # NUL as well); an integer of 400 digits is beyond a float. Each refused record is reported.
    records = [
        f'{{"id": "nul1", "conversation_id": "{cid[:8]}\\u0000", "content": "x"}}',
        '{"id": "surrogate1", "conversation_id": "\\ud800", "content": "x"}',
        f'{{"id": "long1", "conversation_id": "{"c" * 10_000}", "content": "x"}}',
        f'{{"id": "far1", "conversation_id": "{cid}", "content": "sent last", "created_at": {"9" * 400}}}',
        f'{{"id": "first1", "conversation_id": "{cid}", "content": "sent first", "created_at": 1}}',
    ]
    body = '{"messages": {"created": [' + ", ".join(records) + "]}}"
    response = await stack.client.post(
        PATH,
        params={"last_pulled_at": str(since)},
        content=body.encode(),
        headers={**medic.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert sorted(response.json()["experimentalRejectedIds"]["messages"]) == ["long1", "nul1", "surrogate1"]
    assert [m["content"] for m in await thread(orgs, medic, cid)] == ["sent first", "sent last"]


async def test_a_push_sends_at_most_push_max_messages_and_the_rest_with_the_next_sync(stack: Stack, orgs: Orgs) -> None:
    # One push is one transaction holding the org's stream lock (every other send of the org
    # waits): a device's long offline spell is sent over several syncs, oldest first.
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    cid = str(medic.conversation_id)
    since = (await pull(stack, medic))["timestamp"]
    count = PUSH_MAX_MESSAGES + 3
    records = [{**new_message(cid, f"offline {i}", f"spell{i}"), "created_at": 1795234346695 + i} for i in range(count)]
    records.reverse()  # the order they are pushed in is not the order they were written in
    answer = await push(stack, medic, since, {"messages": table(created=records)})
    later = [f"spell{i}" for i in range(PUSH_MAX_MESSAGES, count)]
    assert sorted(answer["experimentalRejectedIds"]["messages"]) == sorted(later)

    # The next sync pushes what stayed unsynced (and, after a crash, everything again).
    since = (await pull(stack, medic))["timestamp"]
    answer = await push(stack, medic, since, {"messages": table(created=records[:3])})
    assert answer["experimentalRejectedIds"]["messages"] == []
    stored, _ = await orgs.sync_all(medic, str(Cursor(0, world.org_id)))
    sent = [c["data"]["idempotency_key"] for c in stored if c["type"] == "message.created"]
    assert sent == [f"spell{i}" for i in range(count)]


async def test_a_pushed_id_of_a_message_the_caller_may_not_see_is_a_new_message(stack: Stack, orgs: Orgs) -> None:
    # Ignoring it as "a server row edited on the device" would tell the caller that a message
    # with that id exists somewhere, and drop their message while marking it synced.
    world = await orgs.make(admins=1, medics=2)
    other = await orgs.make(admins=1, medics=1)
    medic, colleague = world.medics
    cid = str(medic.conversation_id)
    foreign = await orgs.send(other.admins[0], str(other.medics[0].conversation_id), "another org")
    colleagues = await orgs.send(world.admins[0], str(colleague.conversation_id), "for the colleague")
    since = (await pull(stack, medic))["timestamp"]
    records = [new_message(cid, "mine, 1", foreign["id"]), new_message(cid, "mine, 2", colleagues["id"])]
    answer = await push(stack, medic, since, {"messages": table(created=records)})
    assert answer["experimentalRejectedIds"]["messages"] == []
    stored = await thread(orgs, medic, cid)
    assert [(m["content"], m["idempotency_key"]) for m in stored] == [
        ("mine, 1", foreign["id"]),
        ("mine, 2", colleagues["id"]),
    ]
    assert [m["content"] for m in await thread(orgs, other.admins[0], str(other.medics[0].conversation_id))] == [
        "another org"
    ]
