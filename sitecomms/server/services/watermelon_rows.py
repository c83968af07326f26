"""WatermelonDB's raw rows of `conversations` and `messages` (the original app's schema v5), made
from the views the REST API renders for one viewer (`services/views.py`), and the ids a viewer
knows them by (services/watermelon.py, docs/watermelondb.md "Columns"). Times are JS numbers:
milliseconds since the epoch."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sitecomms.protocol.models import Change, ConversationView, MessageView
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import reads
from sitecomms.store.database import Connection

SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the characters WatermelonDB ids may safely hold
CHUNK = 1000  # ids per IN-list (the drivers bound a statement's parameters: asyncpg at 32,767)


def chunks(ids: list[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def message_id_for(viewer: Viewer, view: MessageView) -> str:
    """The message's WatermelonDB id for this viewer (see the module doc)."""
    if view.sender_id == viewer.user_id and SAFE_ID.fullmatch(view.idempotency_key):
        return view.idempotency_key
    return view.id


def conversation_raw(view: ConversationView, last_read_at: datetime | None) -> dict[str, Any]:
    return {
        "id": view.id,
        "server_id": view.id,
        "org_id": view.org_id,
        "type": view.type.value,
        "medic_id": view.medic_id,
        "last_message_at": _ms(view.last_message_at),
        "participant_name": view.name,
        "unread_count": view.unread_count or 0,
        "last_read_at": _ms(last_read_at),
    }


def message_raw(viewer: Viewer, view: MessageView) -> dict[str, Any]:
    return {
        "id": message_id_for(viewer, view),
        "server_id": view.id,
        "conversation_id": view.conversation_id,
        "sender_id": view.sender_id,
        "sender_name": view.sender_name,
        "content": view.content,
        "status": view.status.value,
        "idempotency_key": view.idempotency_key,
        "created_at": _ms(view.created_at),
    }


@dataclass(slots=True)
class Rows:
    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, tuple[int, dict[str, Any], bool]] = field(default_factory=dict)  # position, raw, own


def rows_of(conn: Connection, viewer: Viewer, changes: list[Change]) -> Rows:
    rows = Rows()
    conv_views = [c.data for c in changes if isinstance(c.data, ConversationView)]
    last_read = {
        s.conversation_id: s.last_read_at
        for part in chunks([c.id for c in conv_views])
        for s in reads.read_statuses_for(conn, part)
        if s.user_id == viewer.user_id
    }
    for view in conv_views:
        rows.conversations[view.id] = conversation_raw(view, last_read.get(view.id))
    for change in changes:
        if isinstance(change.data, MessageView):
            raw = message_raw(viewer, change.data)
            rows.messages[raw["id"]] = (change.position, raw, change.data.sender_id == viewer.user_id)
    return rows


def table(created: Iterable[dict[str, Any]] = (), updated: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"created": list(created), "updated": list(updated), "deleted": []}
