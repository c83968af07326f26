"""WatermelonDB sync: `synchronize()`'s pull and push for tables `conversations` and `messages`.

The WatermelonDB shapes (schema v5 of the original app) over the existing services. A pull is
the pull sync's snapshot (`sync.snapshot_changes`) or window (`sync.read_window`), read in one
transaction (one consistent snapshot), rendered as the REST API renders it (`sync.render`) and
flattened into raw rows; its `timestamp` is the org stream position the rows are complete up
to, never a clock. A push is one `Messaging.send_batch`: each message the device created is a
send keyed by its WatermelonDB id, and a conversation pushed with `unread_count` 0 is a read
mark up to `last_pulled_at`, all in one transaction, refused whole (409 `conflict`) when a
pushed conversation changed on the server after `last_pulled_at`.

Ids: a conversation's WatermelonDB `id` is its SiteComms id; a message's is its SiteComms id,
except to its own sender, who sees it under its idempotency key (the id their device gave it)
when that key is a safe WatermelonDB id; `server_id` is always the SiteComms id. A device's own
messages come back in `updated`, never `created` (WatermelonDB #649: a `created` echo
resurrects a message deleted locally meanwhile); so do the caller's own messages another
participant's read turned `read` (the newest of their conversation, those a device holds). What
the caller may not write is never applied: messages the server refuses (a conversation not
visible or not writable, bad content), and the newest beyond `PUSH_MAX_MESSAGES` new ones (sent
with the device's next sync), are listed in `experimentalRejectedIds`; edits of
server-owned rows and deletes are ignored; none of it fails the push, so no device is stuck
re-pushing a refusal. docs/watermelondb.md lists each case.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.limits import INITIAL_SYNC_MESSAGES_PER_CONVERSATION
from sitecomms.server.services import sync, visibility
from sitecomms.server.services.errors import Conflict, InvalidInput
from sitecomms.server.services.messaging import Messaging, Outgoing
from sitecomms.server.services.visibility import Viewer
from sitecomms.server.services.watermelon_rows import SAFE_ID, Rows, chunks, rows_of, table
from sitecomms.store import conversations, messages, reads
from sitecomms.store.database import Connection, Database
from sitecomms.store.rows import ConversationRow, MessageRow
from sitecomms.store.stream import current_position, next_position

CONVERSATIONS, MESSAGES = "conversations", "messages"
TABLES = (CONVERSATIONS, MESSAGES)
OLDEST_SCHEMA_VERSION = 5  # the original app's schema with these columns; later versions add only local ones
PULL_LIMIT = 1000  # changes per pull; the rest comes with the next sync (timestamp = how far this one got)
MAX_TIMESTAMP = 2**53 - 1  # a JS number
# New messages per push. A push is one transaction holding the org's stream lock: every other
# send of the org waits for it, and on PostgreSQL its cost grows faster than its length (8,000
# tiny messages, well inside the 1 MiB body, held the lock 36 s; 500 take about half a second).
# The rest are in `experimentalRejectedIds`: the device keeps them unsynced and pushes them
# with its next sync, oldest first.
PUSH_MAX_MESSAGES = 500


@dataclass(frozen=True, slots=True)
class Migration:
    """`migration` of a pull: the device's schema was migrated from `from_version` since its last
    sync, adding `tables` and `columns` (per table)."""

    from_version: int
    tables: frozenset[str]
    columns: dict[str, frozenset[str]]


@dataclass(slots=True)
class TableChanges:
    """One table of a push, as WatermelonDB sends it (full raw rows; `_status`/`_changed` ignored)."""

    created: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


# --- parsing the query string ---------------------------------------------------------------


def parse_last_pulled_at(text: str | None) -> int | None:
    """`last_pulled_at` as WatermelonDB sends it: a number, or `null`/absent on the first sync."""
    if text is None or text in ("", "null", "undefined", "0"):
        return None
    if not (text.isascii() and text.isdigit()):  # not `int()`'s "+5", " 5", "1_0" or other scripts' digits
        raise InvalidInput("last_pulled_at: expected the timestamp of the previous pull, or null")
    value = int(text)
    if not 0 < value <= MAX_TIMESTAMP:
        raise InvalidInput("last_pulled_at: out of range")
    return value


def check_schema_version(version: int) -> None:
    if version < OLDEST_SCHEMA_VERSION:
        raise InvalidInput(
            f"schema_version {version} is not supported: this server syncs schema version "
            f"{OLDEST_SCHEMA_VERSION} and later (tables conversations and messages)"
        )


def parse_migration(text: str | None, schema_version: int) -> Migration | None:
    """`migration` as WatermelonDB sends it: JSON `null`, or `{from, tables, columns}`."""
    if text is None or text in ("", "null", "undefined"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidInput("migration: not JSON") from None
    if value is None:
        return None
    problem = "migration: expected null or {from, tables, columns}"
    if not isinstance(value, dict):
        raise InvalidInput(problem)
    start, tables, columns = value.get("from"), value.get("tables"), value.get("columns")
    if not (isinstance(start, int) and not isinstance(start, bool) and 1 <= start < schema_version):
        raise InvalidInput("migration: 'from' must be a schema version below schema_version")
    if not (isinstance(tables, list) and all(isinstance(t, str) for t in tables)):
        raise InvalidInput(problem)
    if not isinstance(columns, list):
        raise InvalidInput(problem)
    added: dict[str, frozenset[str]] = {}
    for entry in columns:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("table"), str)
            and isinstance(entry.get("columns"), list)
            and all(isinstance(c, str) for c in entry["columns"])
        ):
            raise InvalidInput(problem)
        added[entry["table"]] = added.get(entry["table"], frozenset()) | frozenset(entry["columns"])
    return Migration(start, frozenset(tables), added)


# --- pull -----------------------------------------------------------------------------------


def _pull_txn(conn: Connection, viewer: Viewer, since: int | None, migration: Migration | None) -> dict[str, Any]:
    if since is None:  # first sync: the snapshot, every row created (and `deleted` empty, as Turbo Login wants)
        head, changes = sync.snapshot_changes(conn, viewer)
        rows = rows_of(conn, viewer, changes)
        return {
            "changes": {
                CONVERSATIONS: table(rows.conversations.values()),
                MESSAGES: table(raw for _, raw, _ in rows.messages.values()),
            },
            "timestamp": max(head, 1),
        }
    window = sync.read_window(conn, visibility.viewer_scope(viewer), after=since, limit=PULL_LIMIT)
    if since > window.head or any(u.id == viewer.user_id for u in window.users):
        # The data was reset, or the caller's own account changed (a role change changes what
        # they may see): the whole visible set, and the device drops every synced row not in it.
        head, changes = sync.snapshot_changes(conn, viewer)
        rows = rows_of(conn, viewer, changes)
        return {
            "changes": {
                CONVERSATIONS: table(updated=rows.conversations.values()),
                MESSAGES: table(updated=(raw for _, raw, _ in rows.messages.values())),
            },
            "timestamp": max(head, 1),
            "experimentalStrategy": "replacement",
        }
    # Conversations whose row moved, and those whose unread count or read time moved for the
    # caller (their own read status).
    conv_rows: dict[str, ConversationRow] = {c.id: c for c in window.conversations}
    own_reads = {s.conversation_id for s in window.read_statuses if s.user_id == viewer.user_id}
    for referenced in window.referenced:
        if referenced.id in own_reads and visibility.can_see_conversation(viewer, referenced):
            conv_rows.setdefault(referenced.id, referenced)
    message_rows = window.messages + _now_read(conn, viewer, window)
    rows = rows_of(conn, viewer, sync.render(conn, viewer, [], list(conv_rows.values()), message_rows, []))
    conversations_created: dict[str, dict[str, Any]] = {}
    conversations_updated = dict(rows.conversations)
    messages_created = {i: raw for i, (_, raw, own) in rows.messages.items() if not own}
    messages_updated = {i: raw for i, (_, raw, own) in rows.messages.items() if own}
    if migration is not None:
        _add_migrated(conn, viewer, migration, conversations_created, conversations_updated)
        _add_migrated_messages(conn, viewer, migration, window.upto, messages_created, messages_updated)
    return {
        "changes": {
            CONVERSATIONS: table(conversations_created.values(), conversations_updated.values()),
            MESSAGES: table(messages_created.values(), messages_updated.values()),
        },
        "timestamp": max(window.upto, 1),
    }


def _now_read(conn: Connection, viewer: Viewer, window: sync.Window) -> list[MessageRow]:
    """The caller's own messages that another participant's read (in the window) may have turned
    `read`: theirs among the newest of the conversation (those a device holds), up to that read."""
    read_upto: dict[str, int] = {}
    for status in window.read_statuses:
        if status.user_id != viewer.user_id:
            upto = max(read_upto.get(status.conversation_id, 0), status.last_read_position)
            read_upto[status.conversation_id] = upto
    if not read_upto:
        return []
    in_window = {m.id for m in window.messages}
    newest = messages.newest_per_conversation(conn, sorted(read_upto), INITIAL_SYNC_MESSAGES_PER_CONVERSATION)
    return [
        m
        for m in newest
        if m.sender_id == viewer.user_id and m.position <= read_upto[m.conversation_id] and m.id not in in_window
    ]


def _snapshot_rows(conn: Connection, viewer: Viewer) -> Rows:
    _, changes = sync.snapshot_changes(conn, viewer)
    return rows_of(conn, viewer, changes)


def _add_migrated(
    conn: Connection,
    viewer: Viewer,
    migration: Migration,
    created: dict[str, dict[str, Any]],
    updated: dict[str, dict[str, Any]],
) -> None:
    """A migration sync (WatermelonDB's `migrationsEnabledAtVersion`): a table the device just
    added gets every visible row as created; a table that gained columns gets every row again."""
    if CONVERSATIONS not in migration.tables and not migration.columns.get(CONVERSATIONS):
        return
    for conversation_id, raw in _snapshot_rows(conn, viewer).conversations.items():
        target = created if CONVERSATIONS in migration.tables else updated
        updated.pop(conversation_id, None)
        target[conversation_id] = raw


def _add_migrated_messages(
    conn: Connection,
    viewer: Viewer,
    migration: Migration,
    upto: int,
    created: dict[str, dict[str, Any]],
    updated: dict[str, dict[str, Any]],
) -> None:
    if MESSAGES not in migration.tables and not migration.columns.get(MESSAGES):
        return
    added = MESSAGES in migration.tables
    for message_id, (position, raw, _own) in _snapshot_rows(conn, viewer).messages.items():
        if position > upto:  # comes with a later pull
            continue
        created.pop(message_id, None)
        updated.pop(message_id, None)
        (created if added else updated)[message_id] = raw


# --- push -----------------------------------------------------------------------------------


def _text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    return value if isinstance(value, str) else None


def _id(record: dict[str, Any], name: str) -> str | None:
    """The record's `name` when it is an id WatermelonDB makes (and SiteComms ids are): anything
    else names no row, and is never looked up (a NUL or a lone surrogate the database refuses)."""
    value = _text(record, name)
    return value if value is not None and SAFE_ID.fullmatch(value) else None


def _written_at(record: dict[str, Any]) -> float:
    """The record's `created_at` as a sort key; last when it is not a number (or not a finite
    one: NaN, or an integer beyond a float's range)."""
    value = record.get("created_at")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return math.inf
    try:
        at = float(value)
    except OverflowError:
        return math.inf
    return at if math.isfinite(at) else math.inf


@dataclass(frozen=True, slots=True)
class _Known:
    existing: set[str]  # pushed message ids that are SiteComms ids of messages the caller may see (server rows)
    visible: set[str]  # conversation ids the caller may see
    writable: set[str]  # conversation ids the caller may write in


def _lookup_txn(conn: Connection, viewer: Viewer, message_ids: list[str], conversation_ids: list[str]) -> _Known:
    """What the push names, looked up before the write begins, so that a push of many foreign
    ids is sorted out without holding the org's stream lock (the write checks again)."""
    found = {i: row for i in message_ids if (row := messages.get_message(conn, i)) is not None}
    visible: set[str] = set()
    writable: set[str] = set()
    for part in chunks(sorted(set(conversation_ids) | {row.conversation_id for row in found.values()})):
        for conversation_id, conversation in conversations.get_conversations(conn, part).items():
            if visibility.can_see_conversation(viewer, conversation):
                visible.add(conversation_id)
            if visibility.can_write_conversation(viewer, conversation):
                writable.add(conversation_id)
    # A message the caller may not see is no server row of theirs (and whether it exists is not
    # theirs to learn): the record is a new message with that id, like any other.
    existing = {i for i, row in found.items() if row.conversation_id in visible}
    return _Known(existing, visible, writable)


def _conflict_check(viewer: Viewer, since: int, conversation_ids: list[str]) -> Callable[[Connection], None]:
    """Refuses the push when a pushed conversation (its row, or the caller's read status in it,
    which its `unread_count` and `last_read_at` show) changed after `since`. Messages never
    change on the server, so a pushed message is never in conflict (a re-push is a no-op)."""

    def check(conn: Connection) -> None:
        # The org's stream lock first (taking no position): nothing of the org commits between
        # this check and the push's own writes.
        next_position(conn, viewer.org_id, 0)
        if since > current_position(conn, viewer.org_id):
            raise Conflict("last_pulled_at is ahead of the server's stream (its data was reset): pull again, then push")
        found: dict[str, ConversationRow] = {}
        own_reads: dict[str, int] = {}
        for part in chunks(conversation_ids):  # a device's whole list, in IN-lists of bounded size
            found |= conversations.get_conversations(conn, part)
            own_reads |= {
                s.conversation_id: s.position
                for s in reads.read_statuses_for(conn, part)
                if s.user_id == viewer.user_id
            }
        for conversation_id in conversation_ids:
            conversation = found.get(conversation_id)
            if conversation is None or not visibility.can_see_conversation(viewer, conversation):
                continue  # not the caller's: ignored, like any server-owned row
            if max(conversation.position, own_reads.get(conversation_id, 0)) > since:
                raise Conflict(
                    f"conversations#{conversation_id} changed on the server after last_pulled_at "
                    f"{since}: pull again, then push (nothing of this push was applied)"
                )

    return check


class Watermelon:
    def __init__(self, db: Database, messaging: Messaging) -> None:
        self._db = db
        self._messaging = messaging

    async def pull(
        self,
        viewer: Viewer,
        last_pulled_at: int | None,
        schema_version: int,
        migration: Migration | None,
        *,
        created_as_updated: bool = False,
    ) -> dict[str, Any]:
        """`pullChanges`' answer: `{changes, timestamp}` (and `experimentalStrategy` when the
        device must replace what it holds); with `created_as_updated`, no row in `created`."""
        check_schema_version(schema_version)
        answer = await self._db.read("watermelon_pull", _pull_txn, viewer, last_pulled_at, migration)
        if created_as_updated:  # the app's `sendCreatedAsUpdated: true`: every live row in `updated`
            for changes in answer["changes"].values():
                changes["updated"] = changes["created"] + changes["updated"]
                changes["created"] = []
        return answer

    async def push(
        self, viewer: Viewer, last_pulled_at: int | None, changes: dict[str, TableChanges]
    ) -> dict[str, Any]:
        """Apply a push in one transaction (see the module doc); `experimentalRejectedIds` lists
        the records refused, which stay unsynced on the device."""
        if last_pulled_at is None:
            raise InvalidInput("last_pulled_at: a push follows a pull; send that pull's timestamp")
        rejected: dict[str, list[str]] = {CONVERSATIONS: [], MESSAGES: []}
        pushed_messages = changes.get(MESSAGES, TableChanges())
        pushed_conversations = changes.get(CONVERSATIONS, TableChanges())

        candidates: dict[str, dict[str, Any]] = {}
        for record in [*pushed_messages.created, *pushed_messages.updated]:
            record_id = _id(record, "id")
            if record_id is None:
                continue  # not an id WatermelonDB makes: nothing to report it under
            candidates.setdefault(record_id, record)
        # Sent in the order they were written on the device (WatermelonDB pushes in storage order).
        candidates = dict(sorted(candidates.items(), key=lambda item: _written_at(item[1])))
        pushed_ids: dict[str, dict[str, Any]] = {}  # conversations updated: once each, in push order
        for record in pushed_conversations.updated:
            record_id = _id(record, "id")
            if record_id is not None:
                pushed_ids.setdefault(record_id, record)
        named = {c for r in candidates.values() if (c := _id(r, "conversation_id")) is not None} | set(pushed_ids)
        known = (
            await self._db.read("watermelon_lookup", _lookup_txn, viewer, list(candidates), sorted(named))
            if candidates or pushed_ids
            else _Known(set(), set(), set())
        )
        outgoing: list[Outgoing] = []
        outgoing_ids: list[str] = []
        for record_id, record in candidates.items():
            if record_id in known.existing:
                continue  # a server message edited on the device: server-owned, ignored
            conversation_id, content = _id(record, "conversation_id"), _text(record, "content")
            if conversation_id is None or content is None or conversation_id not in known.writable:
                rejected[MESSAGES].append(record_id)
                continue
            if len(outgoing) == PUSH_MAX_MESSAGES:
                rejected[MESSAGES].append(record_id)  # with the next sync (written later than those sent now)
                continue
            outgoing.append(Outgoing(conversation_id, content, record_id))
            outgoing_ids.append(record_id)

        for record in pushed_conversations.created:
            record_id = _id(record, "id")
            if record_id is not None:
                rejected[CONVERSATIONS].append(record_id)  # conversations are made by the server
        updated_ids = [i for i in pushed_ids if i in known.visible]  # others: not the caller's, ignored
        read_upto: list[tuple[str, int]] = []
        for record_id in updated_ids:
            unread = pushed_ids[record_id].get("unread_count")
            if isinstance(unread, int | float) and not isinstance(unread, bool) and unread == 0:
                read_upto.append((record_id, last_pulled_at))

        if not outgoing and not updated_ids:
            return {"experimentalRejectedIds": rejected}
        result = await self._messaging.send_batch(
            viewer, outgoing, read_upto, check=_conflict_check(viewer, last_pulled_at, updated_ids)
        )
        for record_id, sent in zip(outgoing_ids, result.sent, strict=True):
            if isinstance(sent, Conflict) and sent.code is ErrorCode.IDEMPOTENCY_KEY_REUSED:
                continue  # pushed before, edited since: the server keeps the message as first sent
            if not isinstance(sent, MessageRow):
                rejected[MESSAGES].append(record_id)
        return {"experimentalRejectedIds": rejected}
