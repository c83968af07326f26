"""Decoding the server's JSON into the protocol dataclasses: exact on what is declared, clear on
what is wrong, tolerant of fields and change kinds a newer server adds."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from sitecomms.protocol.decoding import DATA_OF, WireError, decode
from sitecomms.protocol.enums import ChangeType, ConversationType, MessageStatus, Role
from sitecomms.protocol.models import (
    Change,
    ChangeFrame,
    ConversationView,
    ErrorBody,
    MessageView,
    ReadStatusView,
    SyncPage,
    TokenView,
    UserView,
)
from tests.wire import wire

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
ORG = str(uuid.UUID(int=1))
USER = UserView(str(uuid.UUID(int=2)), ORG, "maya@example.org", "Maya", Role.MEDIC, NOW, 3, active=True)
CONVERSATION = ConversationView(
    str(uuid.UUID(int=4)), ORG, ConversationType.DIRECT, "Admin", USER.id, NOW, "hi", 7, 1, 5, NOW, 8
)
MESSAGE = MessageView(
    str(uuid.UUID(int=9)), CONVERSATION.id, USER.id, "Maya", Role.MEDIC, "hi", "k-1", NOW, 7, MessageStatus.READ
)
READ = ReadStatusView(CONVERSATION.id, USER.id, 7, None, 10)
VIEWS = [USER, CONVERSATION, MESSAGE, READ]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: type(v).__name__)
def test_a_view_as_the_server_renders_it_decodes_to_the_same_view(view: Any) -> None:
    assert decode(type(view), wire(view)) == view


def test_a_sync_page_decodes_each_change_as_the_view_its_type_names() -> None:
    changes = [Change(v.position, t, v) for t, v in zip(DATA_OF, [MESSAGE, CONVERSATION, READ, USER], strict=True)]
    page = SyncPage(changes, "v1.10.x", has_more=False, reset=True)
    assert decode(SyncPage, wire(page)) == page
    assert set(DATA_OF) == set(ChangeType), "every change type has its view"


def test_a_change_frame_and_a_token_decode() -> None:
    frame = ChangeFrame(ChangeType.MESSAGE_CREATED, 7, "v1.7.x", MESSAGE)
    assert decode(ChangeFrame, wire(frame)) == frame
    token = TokenView("t", "bearer", NOW, "r", 60, "s", USER)
    assert decode(TokenView, wire(token)) == token


def test_fields_a_newer_server_adds_are_ignored() -> None:
    assert decode(MessageView, {**wire(MESSAGE), "reactions": []}) == MESSAGE


def test_a_change_of_a_kind_this_version_does_not_know_is_skipped_in_a_page() -> None:
    page = wire(SyncPage([Change(7, ChangeType.MESSAGE_CREATED, MESSAGE)], "v1.9.x", has_more=False, reset=False))
    page["changes"].insert(0, {"type": "reaction.added", "position": 8, "data": {"emoji": "+1"}})
    assert [c.data for c in decode(SyncPage, page).changes] == [MESSAGE]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"sender_role": "boss"}, "MessageView.sender_role: 'boss' is not a Role"),
        ({"status": "lost"}, "MessageView.status: 'lost' is not a MessageStatus"),
        ({"position": "7"}, "MessageView.position: expected an integer, got str"),
        ({"position": True}, "MessageView.position: expected an integer, got bool"),
        ({"content": None}, "MessageView.content: expected a string, got null"),
        ({"created_at": "yesterday"}, "MessageView.created_at: 'yesterday' is not an RFC 3339 timestamp"),
        ({"created_at": "2026-01-02T03:04:05"}, "MessageView.created_at: '2026-01-02T03:04:05' has no time zone"),
    ],
)
def test_a_malformed_field_is_refused_and_the_error_says_where(change: dict[str, Any], where: str) -> None:
    with pytest.raises(WireError) as refused:
        decode(MessageView, {**wire(MESSAGE), **change})
    assert str(refused.value) == where


def test_a_missing_field_and_a_nested_error_name_their_path() -> None:
    body = wire(MESSAGE)
    del body["idempotency_key"]
    with pytest.raises(WireError, match=r"^MessageView: missing field 'idempotency_key'$"):
        decode(MessageView, body)

    page = wire(SyncPage([Change(7, ChangeType.MESSAGE_CREATED, MESSAGE)] * 2, "c", has_more=False, reset=False))
    page["changes"][1]["data"]["sender_id"] = 12
    with pytest.raises(WireError, match=r"^SyncPage\.changes\[1\]\.data\.sender_id: expected a string, got int$"):
        decode(SyncPage, page)

    mismatched = {"type": "user.updated", "position": 7, "cursor": "c", "data": wire(MESSAGE)}
    with pytest.raises(WireError, match=r"^ChangeFrame\.data: missing field 'org_id'$"):
        decode(ChangeFrame, mismatched)


@pytest.mark.parametrize("value", [None, [], "text", 3], ids=["null", "list", "string", "number"])
def test_something_that_is_not_an_object_is_refused(value: object) -> None:
    with pytest.raises(WireError, match=r"^ErrorBody: expected an object"):
        decode(ErrorBody, value)


def test_wire_is_what_orjson_makes_of_the_dataclass() -> None:
    """The fixture helper encodes exactly as the server does: every field, by its name."""
    assert wire(MESSAGE) == orjson.loads(orjson.dumps(MESSAGE, option=orjson.OPT_UTC_Z))
    assert set(wire(MESSAGE)) == {f.name for f in dataclasses.fields(MessageView)}
    assert wire(MESSAGE)["created_at"] == "2026-01-02T03:04:05.678000Z"
