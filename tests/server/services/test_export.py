"""The compliance export (services/export.py), on both engines: one org's records only, every
kind, no password hash, paged reads that give the same lines as one big page."""

from __future__ import annotations

import uuid

import orjson
import pytest

from sitecomms.server.services.errors import NotFound
from sitecomms.server.services.export import KINDS, Export
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store import users
from sitecomms.store.database import Connection
from tests.conftest import Stack
from tests.support import Member, Orgs, World


def hashes(conn: Connection, members: list[Member]) -> list[str]:
    found = [users.get_user(conn, member.id) for member in members]
    return [row.password_hash for row in found if row is not None]


async def populated(stack: Stack, world: World, tag: str) -> list[str]:
    """Two messages and a read status in `world`; the messages' texts."""
    messaging = Messaging(stack.db, NoPublisher())
    medic, admin = world.medics[0], world.admins[0]
    assert medic.conversation_id
    texts = [f"{tag}: to the admins", f"{tag}: to everyone"]
    await messaging.send(medic.viewer, medic.conversation_id, texts[0], uuid.uuid4().hex)
    await messaging.send(admin.viewer, world.broadcast_id, texts[1], uuid.uuid4().hex)
    await messaging.mark_read(admin.viewer, medic.conversation_id, None)
    return texts


async def test_an_export_holds_one_org_every_kind_and_no_password_hash(stack: Stack, orgs: Orgs) -> None:
    mine = await orgs.make(admins=1, medics=2)
    theirs = await orgs.make(admins=1, medics=1)
    my_texts = await populated(stack, mine, f"mine {uuid.uuid4().hex[:6]}")
    their_texts = await populated(stack, theirs, f"theirs {uuid.uuid4().hex[:6]}")
    lines: list[bytes] = []
    exported = await Export(stack.db).write_org(mine.org_id, lines.append, page_size=2)

    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    records = [orjson.loads(line) for line in lines]
    assert [r["kind"] for r in records[:1]] == ["org"] and records[0]["name"] == mine.name
    assert {r["kind"] for r in records} == set(KINDS)
    assert exported.counts == {kind: sum(r["kind"] == kind for r in records) for kind in KINDS}
    assert {r["org_id"] for r in records} == {mine.org_id}

    by_kind = {kind: [r for r in records if r["kind"] == kind] for kind in KINDS}
    assert {u["id"] for u in by_kind["user"]} == {m.id for m in mine.members}
    assert {u["email"] for u in by_kind["user"]} == {m.email for m in mine.members}
    assert len(by_kind["conversation"]) == 1 + len(mine.medics)
    assert [m["content"] for m in by_kind["message"]] == my_texts, "every message, in stream order"
    assert [(r["user_id"], r["conversation_id"]) for r in by_kind["read_status"]] == [
        (mine.admins[0].id, mine.medics[0].conversation_id)
    ]
    events = by_kind["audit"]
    assert {e["subject_id"] for e in events if e["event"] == "user_created"} == {m.id for m in mine.members}
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True), "newest first"
    positions = [r["position"] for kind in ("user", "conversation", "message", "read_status") for r in by_kind[kind]]
    assert max(positions) <= records[0]["stream_position"]

    blob = b"".join(lines)
    for secret in await stack.db.read("test_hashes", hashes, mine.members):
        assert secret.encode() not in blob
    assert not [key for r in records for key in r if "password" in key or "hash" in key]
    for foreign in [theirs.org_id, *(m.id for m in theirs.members), *(m.email for m in theirs.members), *their_texts]:
        assert foreign.encode() not in blob, f"another org's {foreign!r} leaked into the export"

    one_page: list[bytes] = []
    await Export(stack.db).write_org(mine.org_id, one_page.append)
    assert one_page[1:] == lines[1:], "small pages give the same records as one big page"


async def test_an_unknown_org_is_not_found(stack: Stack) -> None:
    lines: list[bytes] = []
    with pytest.raises(NotFound):
        await Export(stack.db).write_org(str(uuid.uuid4()), lines.append)
    assert lines == []


async def test_hostile_text_stays_one_record_per_line_whatever_splits_the_lines(stack: Stack, orgs: Orgs) -> None:
    """Message text may hold newlines, quotes, bidi controls and U+2028/U+2029, which str.splitlines
    and JavaScript's line terminators take for line breaks: the export escapes those two."""
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    hostile = 'a\nb "q" \\ \u2028 \u2029 \u202eevil\u202c \u200f \ufeff \U0001f600 {"kind": "user"}'
    await Messaging(stack.db, NoPublisher()).send(medic.viewer, medic.conversation_id, hostile, uuid.uuid4().hex)
    lines: list[bytes] = []
    await Export(stack.db).write_org(world.org_id, lines.append)
    blob = b"".join(lines)
    records = [orjson.loads(line) for line in blob.decode().splitlines()]
    assert len(records) == len(lines) and [r["kind"] for r in records].count("user") == len(world.members)
    assert [r["content"] for r in records if r["kind"] == "message"] == [hostile]
    assert b"\\u2028" in blob and "\u2028".encode() not in blob
