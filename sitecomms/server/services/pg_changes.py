"""Supabase `postgres_changes` over the feed: the bindings a channel may declare, and each
change of the org stream as the row of the original apps' tables it stands for.

A supabase-js app declares bindings (`{event, schema, table, filter}`) on three tables:
`messages` (INSERT: messages never change), `conversations` and `conversation_read_status`
(INSERT, UPDATE, or `*`), with at most one `eq` filter on a column of `FILTER_COLUMNS` (all
uuids: a value is compared in its canonical form, as PostgreSQL compares uuids).
`parse_bindings` checks them (anything else is a `BindingError` naming the binding and what is
allowed) and gives each a stable integer id (a hash of the binding, the same in every process
and after a restart, as Supabase's `phash2`). The visibility policy has already decided that
the viewer may see a change (the hub asks it before a channel is offered anything); a filter
only narrows what a binding fires for, it never widens it.

`change_of(item)` maps a feed item to its table, its type (INSERT or UPDATE) and the raw values
filters compare with; `data_json(item, viewer, with_cursor)` renders the `data` of the
`postgres_changes` payload (schema, table, commit_timestamp, type, typed `columns`, `record`,
`old_record` for an UPDATE (the primary key), errors), once per role (names are as the viewer
sees them: visibility.py), cached on the item. The columns of each table are `COLUMNS`; with
the resume option every record also carries `cursor`, the stream cursor after it.

A conversation change is an INSERT while the conversation has no message (it was just
created: a medic's direct conversation) and an UPDATE once it has one (a new preview, a
rename). A read status is an upsert: every change of one is an UPDATE.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import ChangeType, MessageStatus
from sitecomms.server.services import visibility
from sitecomms.server.services.feed import FeedItem
from sitecomms.server.services.visibility import Viewer
from sitecomms.store.rows import ConversationRow, MessageRow, ReadStatusRow

SCHEMA = "public"
MESSAGES = "messages"
CONVERSATIONS = "conversations"
READ_STATUS = "conversation_read_status"

MAX_BINDINGS = 20  # per channel
_MAX_FILTER_CHARS = 200

COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    MESSAGES: (
        ("id", "uuid"),
        ("org_id", "uuid"),
        ("conversation_id", "uuid"),
        ("sender_id", "uuid"),
        ("sender_name", "text"),
        ("sender_role", "text"),
        ("content", "text"),
        ("status", "text"),
        ("idempotency_key", "text"),
        ("created_at", "timestamptz"),
        ("position", "int8"),
    ),
    CONVERSATIONS: (
        ("id", "uuid"),
        ("org_id", "uuid"),
        ("type", "text"),
        ("medic_id", "uuid"),
        ("participant_name", "text"),
        ("last_message_at", "timestamptz"),
        ("last_message_preview", "text"),
        ("created_at", "timestamptz"),
        ("position", "int8"),
    ),
    READ_STATUS: (
        ("conversation_id", "uuid"),
        ("user_id", "uuid"),
        ("org_id", "uuid"),
        ("last_read_position", "int8"),
        ("last_read_at", "timestamptz"),
        ("position", "int8"),
    ),
}
_PRIMARY_KEY = {MESSAGES: ("id",), CONVERSATIONS: ("id",), READ_STATUS: ("conversation_id", "user_id")}
EVENTS: dict[str, frozenset[str]] = {
    MESSAGES: frozenset({"INSERT", "*"}),
    CONVERSATIONS: frozenset({"INSERT", "UPDATE", "*"}),
    READ_STATUS: frozenset({"INSERT", "UPDATE", "*"}),
}
FILTER_COLUMNS: dict[str, frozenset[str]] = {
    MESSAGES: frozenset({"org_id", "conversation_id", "sender_id"}),
    CONVERSATIONS: frozenset({"org_id", "medic_id", "id"}),
    READ_STATUS: frozenset({"org_id", "conversation_id", "user_id"}),
}
_COLUMNS_JSON = {table: orjson.dumps([{"name": n, "type": t} for n, t in cols]) for table, cols in COLUMNS.items()}
_CURSOR_COLUMN = orjson.dumps({"name": "cursor", "type": "text"})


class BindingError(ValueError):
    """A binding this server does not serve; the message says which and what is allowed."""


@dataclass(frozen=True, slots=True)
class Binding:
    id: int
    event: str  # upper case: INSERT, UPDATE or *
    table: str
    column: str | None  # the eq filter's column, or None for no filter
    value: str | None
    echo: dict[str, Any]  # the binding as the client sent it, with its id: the join reply's entry

    def fires_for(self, change: Change) -> bool:
        if change.table != self.table or (self.event != "*" and self.event != change.type):
            return False
        if self.column is None:
            return True
        actual = change.values.get(self.column)
        return actual is not None and actual == self.value


@dataclass(frozen=True, slots=True)
class Change:
    table: str
    type: str  # INSERT or UPDATE
    values: Mapping[str, str | None]  # the filterable columns' values (the same for every viewer)


def _describe(index: int, raw: object) -> str:
    return f"postgres_changes[{index}] {orjson.dumps(raw).decode()[:200]}"


def binding_id(raw: Mapping[str, Any]) -> int:
    canonical = orjson.dumps([raw.get("event"), raw.get("schema"), raw.get("table"), raw.get("filter")])
    return int.from_bytes(hashlib.sha256(canonical).digest()[:4], "big") & 0x7FFFFFFF


def parse_bindings(raw: object) -> list[Binding]:
    """The channel's bindings, checked (`BindingError` for the first one not served)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BindingError("config.postgres_changes must be a list of bindings")
    if len(raw) > MAX_BINDINGS:
        raise BindingError(f"at most {MAX_BINDINGS} postgres_changes bindings per channel")
    return [_parse_binding(i, item) for i, item in enumerate(raw)]


def _parse_binding(index: int, raw: object) -> Binding:
    if not isinstance(raw, dict):
        raise BindingError(f"postgres_changes[{index}] is not an object")
    where = _describe(index, raw)
    event, schema, table, filter_ = raw.get("event"), raw.get("schema"), raw.get("table"), raw.get("filter")
    if schema != SCHEMA:
        raise BindingError(f"{where}: schema must be {SCHEMA!r}")
    if table not in COLUMNS:
        raise BindingError(f"{where}: table must be one of {', '.join(COLUMNS)}")
    assert isinstance(table, str)
    if not isinstance(event, str) or event.upper() not in EVENTS[table]:
        raise BindingError(f"{where}: event on {table} must be one of {', '.join(sorted(EVENTS[table]))}")
    column = value = None
    if filter_ is not None:
        column, value = _parse_filter(where, table, filter_)
    return Binding(binding_id(raw), event.upper(), table, column, value, {**raw, "id": binding_id(raw)})


def _parse_filter(where: str, table: str, filter_: object) -> tuple[str, str]:
    if not isinstance(filter_, str) or len(filter_) > _MAX_FILTER_CHARS:
        raise BindingError(f"{where}: filter must be a string of at most {_MAX_FILTER_CHARS} characters")
    column, equals, rest = filter_.partition("=")
    operator, dot, value = rest.partition(".")
    allowed = ", ".join(sorted(FILTER_COLUMNS[table]))
    if not equals or column not in FILTER_COLUMNS[table]:
        raise BindingError(f"{where}: filter must be <column>=eq.<value> with a column of {table}: {allowed}")
    if operator != "eq" or not dot or not value:
        raise BindingError(f"{where}: only eq filters are served (<column>=eq.<value>)")
    with contextlib.suppress(ValueError):  # every filter column is a uuid (any case or spelling); not one: no row
        value = str(uuid.UUID(value))
    return column, value


def change_of(item: FeedItem) -> Change | None:
    """The table row a feed item stands for (None: users are not a table served here)."""
    cached = item.renders.get(Change)
    if cached is None and item.type is not ChangeType.USER_UPDATED:
        cached = item.renders[Change] = _change(item.row)
    return cached


def _change(row: object) -> Change | None:
    if isinstance(row, MessageRow):
        values = {"org_id": row.org_id, "conversation_id": row.conversation_id, "sender_id": row.sender_id}
        return Change(MESSAGES, "INSERT", values)
    if isinstance(row, ConversationRow):
        kind = "INSERT" if row.last_message_position is None else "UPDATE"
        return Change(CONVERSATIONS, kind, {"org_id": row.org_id, "medic_id": row.medic_id, "id": row.id})
    if isinstance(row, ReadStatusRow):
        values = {"org_id": row.org_id, "conversation_id": row.conversation_id, "user_id": row.user_id}
        return Change(READ_STATUS, "UPDATE", values)
    return None


def record(item: FeedItem, viewer: Viewer) -> dict[str, Any]:
    """The row as the original apps' table has it, named as this viewer sees it."""
    row = item.row
    if isinstance(row, MessageRow):
        return {
            "id": row.id,
            "org_id": row.org_id,
            "conversation_id": row.conversation_id,
            "sender_id": row.sender_id,
            "sender_name": visibility.sender_name(viewer, row.sender_role, row.sender_name),
            "sender_role": row.sender_role,
            "content": row.content,
            "status": MessageStatus.SENT.value,
            "idempotency_key": row.idempotency_key,
            "created_at": row.created_at,
            "position": row.position,
        }
    if isinstance(row, ConversationRow):
        return {
            "id": row.id,
            "org_id": row.org_id,
            "type": row.type,
            "medic_id": row.medic_id,
            "participant_name": visibility.conversation_name(viewer, row),
            "last_message_at": row.last_message_at,
            "last_message_preview": row.last_message_preview,
            "created_at": row.created_at,
            "position": row.position,
        }
    assert isinstance(row, ReadStatusRow)
    return {
        "conversation_id": row.conversation_id,
        "user_id": row.user_id,
        "org_id": row.org_id,
        "last_read_position": row.last_read_position,
        "last_read_at": row.last_read_at,
        "position": row.position,
    }


def _committed_at(item: FeedItem) -> datetime | None:
    row = item.row
    if isinstance(row, MessageRow):
        return row.created_at
    if isinstance(row, ReadStatusRow):
        return row.last_read_at
    if isinstance(row, ConversationRow):
        return row.last_message_at or row.created_at
    return None


def data_json(item: FeedItem, viewer: Viewer, *, with_cursor: bool) -> bytes:
    """The payload's `data` for this change as this viewer's role sees it (cached per role)."""
    key = ("pg_changes", viewer.is_admin, with_cursor)
    cached = item.renders.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    change = change_of(item)
    assert change is not None
    row = record(item, viewer)
    columns = _COLUMNS_JSON[change.table]
    if with_cursor:
        row["cursor"] = str(Cursor(item.position, item.org_id))
        columns = columns[:-1] + b"," + _CURSOR_COLUMN + b"]"
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "table": change.table,
        "commit_timestamp": _committed_at(item),
        "type": change.type,
        "columns": orjson.Fragment(columns),
        "record": row,
        "errors": None,
    }
    if change.type == "UPDATE":
        data["old_record"] = {name: row[name] for name in _PRIMARY_KEY[change.table]}
    rendered = item.renders[key] = orjson.dumps(data, option=orjson.OPT_UTC_Z)
    return rendered
