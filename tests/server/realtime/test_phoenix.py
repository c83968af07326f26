"""Phoenix frames (both serializers) and the postgres_changes bindings, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from sitecomms.protocol.enums import ChangeType, Role
from sitecomms.server.realtime import phoenix
from sitecomms.server.realtime.phoenix import BadFrame
from sitecomms.server.services import pg_changes
from sitecomms.server.services.feed import FeedItem
from sitecomms.server.services.pg_changes import BindingError
from sitecomms.server.services.visibility import Viewer
from sitecomms.store.rows import ConversationRow, MessageRow, ReadStatusRow

ORG = "0b5ad2b0-0000-4000-8000-000000000001"
NOW = datetime(2026, 12, 4, 1, 2, 3, tzinfo=UTC)


def test_both_serializers_decode_the_same_message() -> None:
    payload = {"config": {"postgres_changes": []}, "access_token": "t"}
    v1 = orjson.dumps({"topic": "realtime:a", "event": "phx_join", "payload": payload, "ref": "3", "join_ref": "3"})
    v2 = orjson.dumps(["3", "3", "realtime:a", "phx_join", payload])
    assert phoenix.decode(v1, phoenix.V1) == phoenix.decode(v2, phoenix.V2)
    heartbeat = phoenix.decode('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}', phoenix.V1)
    assert (heartbeat.join_ref, heartbeat.ref, heartbeat.payload) == (None, "7", {})


def test_encoding_is_each_serializers_shape() -> None:
    data = b'{"type":"INSERT"}'
    v2 = orjson.loads(phoenix.changes(phoenix.V2, "realtime:a", [5], data))
    assert v2 == [None, None, "realtime:a", "postgres_changes", {"ids": [5], "data": {"type": "INSERT"}}]
    v1 = orjson.loads(phoenix.changes(phoenix.V1, "realtime:a", [5], data))
    assert v1 == {
        "join_ref": None,
        "ref": None,
        "topic": "realtime:a",
        "event": "postgres_changes",
        "payload": {"ids": [5], "data": {"type": "INSERT"}},
    }


@pytest.mark.parametrize(
    ("frame", "vsn", "says"),
    [
        ("not json", phoenix.V2, "JSON"),
        ('{"topic":"a"}', phoenix.V2, "arrays"),
        ('["1","1","t","e"]', phoenix.V2, "arrays"),
        ('["1","1","t","e",{}]', phoenix.V1, "objects"),
        ('[null,{"x":1},"t","e",{}]', phoenix.V2, "ref"),
        ('[null,"1","","e",{}]', phoenix.V2, "topic"),
        ('[null,"1","' + "t" * 201 + '","e",{}]', phoenix.V2, "topic"),
        ('[null,"1","t",5,{}]', phoenix.V2, "event"),
        ('[null,"1","t","e",[1]]', phoenix.V2, "payload"),
    ],
)
def test_bad_frames_are_refused_saying_why(frame: str, vsn: str, says: str) -> None:
    with pytest.raises(BadFrame, match=says):
        phoenix.decode(frame, vsn)


def binding(table: str = "messages", event: str = "INSERT", filter_: str | None = None) -> dict[str, object]:
    raw: dict[str, object] = {"event": event, "schema": "public", "table": table}
    if filter_ is not None:
        raw["filter"] = filter_
    return raw


def test_bindings_are_echoed_exactly_with_stable_integer_ids() -> None:
    raw = [binding(filter_=f"org_id=eq.{ORG}"), binding("conversation_read_status", "UPDATE", f"org_id=eq.{ORG}")]
    first, second = pg_changes.parse_bindings(raw), pg_changes.parse_bindings(orjson.loads(orjson.dumps(raw)))
    assert [b.echo for b in first] == [b.echo for b in second]
    for sent, parsed in zip(raw, first, strict=True):
        assert parsed.echo == {**sent, "id": parsed.id}
        assert isinstance(parsed.id, int) and 0 < parsed.id < 2**31
    assert first[0].id != first[1].id


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (binding("users"), "table must be one of"),
        ({**binding(), "schema": "private"}, "schema must be"),
        (binding(event="UPDATE"), "event on messages"),
        (binding(event="DELETE"), "event on messages"),
        (binding("conversations", "DELETE"), "event on conversations"),
        (binding(filter_="content=eq.x"), "column of messages"),
        (binding(filter_=f"org_id=neq.{ORG}"), "only eq"),
        (binding(filter_=f"org_id=in.({ORG})"), "only eq"),
        (binding(filter_="org_id=eq."), "only eq"),
        (binding(filter_="org_id"), "column"),
        ({**binding(), "filter": 5}, "filter must be a string"),
        (binding(filter_="org_id=eq." + "x" * 300), "at most 200"),
        ("INSERT", "not an object"),
    ],
)
def test_bindings_not_served_are_refused_clearly(raw: object, says: str) -> None:
    with pytest.raises(BindingError, match=says):
        pg_changes.parse_bindings([raw])


def test_binding_lists_are_bounded() -> None:
    with pytest.raises(BindingError, match="at most"):
        pg_changes.parse_bindings([binding()] * (pg_changes.MAX_BINDINGS + 1))
    with pytest.raises(BindingError, match="list"):
        pg_changes.parse_bindings({"event": "INSERT"})
    assert pg_changes.parse_bindings(None) == []


def _conversation(*, medic: str | None = "m1", messages: bool = True) -> ConversationRow:
    kind = "direct" if medic else "broadcast"
    return ConversationRow("c1", ORG, kind, medic, "Medic One", NOW, "hi", 4 if messages else None, NOW, 5)


def _message(sender_role: str = "admin") -> FeedItem:
    row = MessageRow("m-id", ORG, "c1", "u-admin", "Alice Admin", sender_role, "hi", "key-1", NOW, 4)
    return FeedItem(4, ChangeType.MESSAGE_CREATED, ORG, row, _conversation())


def test_filters_only_narrow() -> None:
    item = _message()
    change = pg_changes.change_of(item)
    assert change is not None
    every, own_org, other_org, conversation, other = pg_changes.parse_bindings(
        [
            binding(),
            binding(filter_=f"org_id=eq.{ORG}"),
            binding(filter_="org_id=eq.someone-else"),
            binding(filter_="conversation_id=eq.c1"),
            binding(filter_="conversation_id=eq.c2"),
        ]
    )
    assert [b.fires_for(change) for b in (every, own_org, other_org, conversation, other)] == [
        True,
        True,
        False,
        True,
        False,
    ]
    (updates,) = pg_changes.parse_bindings([binding("conversations", "UPDATE")])
    assert not updates.fires_for(change)


def test_records_are_typed_and_named_as_the_viewer_sees_them() -> None:
    item = _message()
    medic = Viewer("m1", ORG, Role.MEDIC)
    admin = Viewer("u-admin", ORG, Role.ADMIN)
    as_medic = orjson.loads(pg_changes.data_json(item, medic, with_cursor=False))
    as_admin = orjson.loads(pg_changes.data_json(item, admin, with_cursor=True))
    assert as_medic["record"]["sender_name"] == "Admin" and as_admin["record"]["sender_name"] == "Alice Admin"
    assert [c["name"] for c in as_medic["columns"]] == list(as_medic["record"])
    assert {c["name"]: c["type"] for c in as_admin["columns"]}["cursor"] == "text"
    assert as_admin["record"]["cursor"].startswith("v1.4.") and "cursor" not in as_medic["record"]
    assert as_medic["type"] == "INSERT" and as_medic["table"] == "messages" and "old_record" not in as_medic
    assert as_medic["record"]["created_at"] == "2026-12-04T01:02:03Z"


def test_conversations_and_read_statuses_map_to_insert_and_update() -> None:
    created = FeedItem(5, ChangeType.CONVERSATION_UPDATED, ORG, _conversation(messages=False), _conversation())
    updated = FeedItem(5, ChangeType.CONVERSATION_UPDATED, ORG, _conversation(), _conversation())
    status = ReadStatusRow("c1", "m1", ORG, 4, NOW, 6)
    read = FeedItem(6, ChangeType.READ_STATUS_UPDATED, ORG, status, _conversation())
    assert [pg_changes.change_of(i).type for i in (created, updated, read)] == ["INSERT", "UPDATE", "UPDATE"]  # type: ignore[union-attr]
    data = orjson.loads(pg_changes.data_json(read, Viewer("m1", ORG, Role.MEDIC), with_cursor=False))
    assert data["table"] == "conversation_read_status"
    assert data["old_record"] == {"conversation_id": "c1", "user_id": "m1"}
    admin_sees = orjson.loads(pg_changes.data_json(updated, Viewer("a", ORG, Role.ADMIN), with_cursor=False))
    assert admin_sees["record"]["participant_name"] == "Medic One"


def test_uuid_filters_match_whatever_the_case_or_spelling_as_postgresql_compares_uuids() -> None:
    conversation = "5e0c1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b"
    row = MessageRow("m-id", ORG, conversation, "u-admin", "Alice Admin", "admin", "hi", "key-1", NOW, 4)
    change = pg_changes.change_of(FeedItem(4, ChangeType.MESSAGE_CREATED, ORG, row, _conversation()))
    assert change is not None
    spellings = [conversation, conversation.upper(), conversation.replace("-", ""), "{" + conversation + "}"]
    bindings = pg_changes.parse_bindings([binding(filter_=f"conversation_id=eq.{s}") for s in spellings])
    assert [b.fires_for(change) for b in bindings] == [True] * len(spellings)
    (other,) = pg_changes.parse_bindings([binding(filter_=f"conversation_id=eq.{ORG.upper()}")])
    assert not other.fires_for(change)
