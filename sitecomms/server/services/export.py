"""The compliance export of one organisation: everything it holds, as JSON lines.

`Export(db).write_org(org_id, write)` hands `write` one JSON object per line (bytes ending in
a newline), each with a `"kind"`: first the `org` (its id, name, creation time and the stream
position the export stands at), then every `user`, `conversation`, `message` and
`read_status` of the org in stream order, then its `audit` events, newest first. It reads
in pages of `page_size` rows, all inside one read transaction, so the export is one snapshot
(a row changed meanwhile shows as it was) and never holds more than a page in memory; `write`
is called from the transaction's thread as each page is read. What a record holds is listed
field by field here (allowlists), so a column added to a table later is not exported until
someone decides it should be: users' password hashes never are. Message text is exported:
that is what the export is for; it is written to `write`, never logged. Whatever the text
holds, a record is one line by any reader's count: JSON escapes newlines and control
characters, and U+2028 and U+2029 (which message text may hold, and which `str.splitlines`
and JavaScript take for line breaks) are written escaped too, as `\\u2028` and `\\u2029`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sitecomms.server.services import views
from sitecomms.server.services.errors import NotFound
from sitecomms.store import audit, conversations, messages, orgs, reads, stream, users
from sitecomms.store.database import Connection, Database
from sitecomms.store.rows import AuditRow
from sitecomms.store.scopes import Scope
from sitecomms.store.types import utcnow

__all__ = ["EXPORT_FORMAT", "KINDS", "PAGE_SIZE", "Export", "Exported"]

EXPORT_FORMAT = 1  # in the `org` record; raised when a record's meaning changes
PAGE_SIZE = 500
KINDS = ("org", "user", "conversation", "message", "read_status", "audit")

Write = Callable[[bytes], object]  # a file's write, list.append, ...
_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z
_LINE_SEPARATOR, _PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()


@dataclass(frozen=True, slots=True)
class Exported:
    """How many records of each kind were written, and the stream position of the snapshot."""

    counts: dict[str, int]
    position: int


def _fields(*names: str) -> Callable[[Any], dict[str, Any]]:
    """The record of a row: exactly these of its fields (an allowlist, see the module doc)."""

    def record(row: Any) -> dict[str, Any]:
        return {name: getattr(row, name) for name in names}

    return record


_user = _fields("id", "email", "display_name", "role", "active", "created_at", "deactivated_at", "position")
_conversation = _fields(
    "id", "type", "medic_id", "medic_name", "created_at", "last_message_at", "last_message_position", "position"
)
_message = _fields(
    "id", "conversation_id", "sender_id", "sender_name", "sender_role", "content", "idempotency_key", "created_at",
    "position",
)  # fmt: skip
_read_status = _fields("conversation_id", "user_id", "last_read_position", "last_read_at", "position")


def _audit(row: AuditRow) -> dict[str, Any]:
    event = views.event_view(row)
    return {
        "id": event.id,
        "at": event.at,
        "event": event.kind,
        "actor_id": event.actor_id,
        "subject_id": event.subject_id,
        "session_id": event.session_id,
        "address": event.address,
        "detail": event.detail,
    }


# The org's rows changed after a position, per table, in stream order, and each one's record.
_STREAMED: Sequence[tuple[str, Callable[..., Sequence[Any]], Callable[[Any], dict[str, Any]]]] = (
    ("user", users.users_changed_since, _user),
    ("conversation", conversations.conversations_changed_since, _conversation),
    ("message", messages.messages_changed_since, _message),
    ("read_status", reads.read_statuses_changed_since, _read_status),
)


def _export_txn(conn: Connection, org_id: str, write: Write, page_size: int) -> Exported:
    org = orgs.get_org(conn, org_id)
    if org is None:
        raise NotFound(f"no organisation {org_id!r}")
    counts: Counter[str] = Counter()

    def emit(kind: str, fields: dict[str, Any]) -> None:
        line = orjson.dumps({"kind": kind, "org_id": org_id, **fields}, option=_OPTIONS)
        # (only ever inside a string: the same string, escaped; see the module doc)
        write(line.replace(_LINE_SEPARATOR, b"\\u2028").replace(_PARAGRAPH_SEPARATOR, b"\\u2029"))
        counts[kind] += 1

    head = stream.current_position(conn, org_id)
    emit(
        "org",
        {
            "name": org.name,
            "created_at": org.created_at,
            "stream_position": head,
            "exported_at": utcnow(),
            "format": EXPORT_FORMAT,
        },
    )
    scope = Scope(org_id)
    for kind, changed_since, record in _STREAMED:
        after = 0
        while True:
            rows = changed_since(conn, scope, after=after, limit=page_size)
            for row in rows:
                emit(kind, record(row))
            if len(rows) < page_size:
                break
            after = rows[-1].position
    before: int | None = None
    while True:
        events = audit.page(conn, org_id, before=before, limit=page_size)
        for event in events:
            emit("audit", _audit(event))
        if len(events) < page_size:
            break
        before = events[-1].id
    return Exported({kind: counts[kind] for kind in KINDS}, head)


class Export:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write_org(self, org_id: str, write: Write, *, page_size: int = PAGE_SIZE) -> Exported:
        """Write the org's export to `write` (see the module doc); NotFound for no such org."""
        return await self._db.read("export_org", _export_txn, org_id, write, max(1, page_size))
