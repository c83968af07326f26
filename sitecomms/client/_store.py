"""The local store: a SQLite file per signed-in user, written by one thread only.

Every read and write runs on the store's single worker thread, one at a time: that is the
SDK's *single serialized writer*. Pull-sync pages, live events, sends and read marks all funnel
through it, each as one local transaction, so a batch and the cursor that follows it are saved
together or not at all, and an event that also arrived by sync changes nothing (messages are
upserted by server id, or matched to the queued copy by idempotency key).

The file is opened in exclusive locking mode: a second process opening the same store gets
`LocalStoreLocked` instead of two writers racing over one outbox.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sitecomms.client._errors import LocalStoreError, LocalStoreLocked
from sitecomms.client._models import Conversation, Me, Message
from sitecomms.client._schema import MIGRATIONS, VERSION
from sitecomms.protocol.enums import ChangeType, ConversationType, MessageStatus, Role
from sitecomms.protocol.models import (
    Change,
    ChangeFrame,
    ConversationView,
    MessageView,
    ReadStatusView,
    UserView,
)

T = TypeVar("T")
V = TypeVar("V")

_MESSAGE_COLUMNS = (
    "local_id, id, conversation_id, sender_id, sender_name, content, status, idempotency_key, created_at, position"
)


# The statuses as the `messages.status` column holds them
_QUEUED = MessageStatus.QUEUED.value
_SENT = MessageStatus.SENT.value
_DELIVERED = MessageStatus.DELIVERED.value
_READ = MessageStatus.READ.value
_FAILED = MessageStatus.FAILED.value


def _iso(moment: datetime) -> str:
    """A timestamp as the store keeps it: RFC 3339 in UTC with `Z`, as the server writes them."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now_iso() -> str:
    return _iso(datetime.now(UTC))


class StoreCore:
    """The synchronous store; only ever used from `LocalStore`'s worker thread."""

    def __init__(self, path: str | Path) -> None:
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=2.0, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("BEGIN EXCLUSIVE")  # takes the lock now, and keeps it (exclusive mode)
            self.db.execute("COMMIT")
            self._migrate()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LocalStoreLocked(f"{path} is in use by another process") from exc
            raise LocalStoreError(f"cannot open {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise LocalStoreError(f"cannot open {path}: {exc}") from exc

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > VERSION:
            raise LocalStoreError(f"the store has schema {version}, newer than this SDK's {VERSION}")
        for number in range(version + 1, VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def transaction(self, fn: Callable[[], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def close(self) -> None:
        self.db.close()

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str | None]) -> None:
        def write() -> None:
            for key, value in values.items():
                if value is None:
                    self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

        self.transaction(write)

    def me(self) -> Me | None:
        user_id, org_id = self.get_meta("user_id"), self.get_meta("org_id")
        if user_id is None or org_id is None:
            return None
        return Me(user_id, org_id, self.get_meta("display_name") or "", Role(self.get_meta("role") or Role.MEDIC))

    # --- applying the server's changes -----------------------------------------------------

    def apply(self, changes: Iterable[Change | ChangeFrame], cursor: str | None, *, reset: bool = False) -> set[str]:
        """Apply changes (sync entries or live frames) and the cursor after them, in one transaction.

        `reset` (a sync snapshot) replaces what the store holds from the server: it keeps only
        the user's own messages that the server does not have yet (queued or failed).
        Returns the conversation ids touched, for observers.
        """
        me = self.me()
        my_id = me.user_id if me else ""
        is_admin = me is not None and me.role is Role.ADMIN

        def write() -> set[str]:
            touched: set[str] = set()
            if reset:
                touched |= {str(r[0]) for r in self.db.execute("SELECT id FROM conversations")}
                self.db.execute(
                    "DELETE FROM messages WHERE id IS NOT NULL AND local_id NOT IN (SELECT local_id FROM outbox)"
                )
                for table in ("conversations", "read_status", "pending_reads"):
                    self.db.execute(f"DELETE FROM {table}")
            counted: list[ConversationView] = []  # conversation views carrying the server's unread count
            for change in changes:
                kind, data = change.type, change.data
                if kind is ChangeType.MESSAGE_CREATED:
                    touched.add(self._upsert_message(_as(MessageView, data)))
                elif kind is ChangeType.CONVERSATION_UPDATED:
                    view = _as(ConversationView, data)
                    touched.add(self._upsert_conversation(view))
                    if view.unread_count is not None and view.last_read_position is not None:
                        counted.append(view)
                elif kind is ChangeType.READ_STATUS_UPDATED:
                    touched.add(self._apply_read_status(_as(ReadStatusView, data), my_id))
                elif kind is ChangeType.USER_UPDATED:
                    touched |= self._apply_user(_as(UserView, data), my_id, is_admin)
            for data in counted:  # after the batch's messages, which may follow their conversation
                self._count_unheld_unread(data, my_id)
            if cursor is not None:
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor', ?)", (cursor,))
            return touched

        return self.transaction(write)

    def _upsert_message(self, m: MessageView) -> str:
        row = self.db.execute(
            "SELECT local_id, status FROM messages WHERE id = ? OR (sender_id = ? AND idempotency_key = ?)",
            (m.id, m.sender_id, m.idempotency_key),
        ).fetchone()
        status = _READ if m.status is MessageStatus.READ else _SENT
        created_at = _iso(m.created_at)
        if row is None:
            self.db.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (m.id, m.conversation_id, m.sender_id, m.sender_name, m.content, status, m.idempotency_key,
                 created_at, m.position),
            )  # fmt: skip
        else:
            if row["status"] in (_READ, _DELIVERED) and status == _SENT:
                status = row["status"]
            self.db.execute(
                "UPDATE messages SET id = ?, sender_name = ?, status = ?, created_at = ?, position = ? "
                "WHERE local_id = ?",
                (m.id, m.sender_name, status, created_at, m.position, row["local_id"]),
            )
            self.db.execute("DELETE FROM outbox WHERE local_id = ?", (row["local_id"],))
        return m.conversation_id

    def _upsert_conversation(self, c: ConversationView) -> str:
        self.db.execute(
            "INSERT INTO conversations (id, type, name, medic_id, last_message_at, last_message_preview, position) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET type = excluded.type, name = excluded.name, "
            "medic_id = excluded.medic_id, last_message_at = excluded.last_message_at, "
            "last_message_preview = excluded.last_message_preview, position = excluded.position "
            "WHERE excluded.position >= conversations.position",
            (c.id, c.type.value, c.name, c.medic_id, None if c.last_message_at is None else _iso(c.last_message_at),
             c.last_message_preview, c.position),
        )  # fmt: skip
        return c.id

    def _count_unheld_unread(self, c: ConversationView, my_id: str) -> None:
        """Keep the part of the server's unread count that this store holds no messages for.

        The view's count covers the conversation's messages up to its `position` after the view's
        read position; whatever of that is not here (older than the newest messages a first sync
        brought) is kept, and counted for as long as the local read position stays below every
        message held. A view older than the stored conversation is ignored.
        """
        self.db.execute(
            "UPDATE conversations SET unread_unheld = max(0, ? - (SELECT count(*) FROM messages m "
            "WHERE m.conversation_id = conversations.id AND m.sender_id != ? AND m.position > ? "
            "AND m.position <= ?)) WHERE id = ? AND position = ?",
            (c.unread_count, my_id, c.last_read_position, c.position, c.id, c.position),
        )

    def _apply_read_status(self, r: ReadStatusView, my_id: str) -> str:
        conversation_id, user_id, upto = r.conversation_id, r.user_id, r.last_read_position
        self.db.execute(
            "INSERT INTO read_status (conversation_id, user_id, last_read_position, last_read_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (conversation_id, user_id) DO UPDATE SET "
            "last_read_position = max(read_status.last_read_position, excluded.last_read_position), "
            "last_read_at = coalesce(excluded.last_read_at, read_status.last_read_at)",
            (conversation_id, user_id, upto, None if r.last_read_at is None else _iso(r.last_read_at)),
        )
        if user_id == my_id:
            self.db.execute(
                "DELETE FROM pending_reads WHERE conversation_id = ? AND position <= ?", (conversation_id, upto)
            )
        else:  # a read receipt: my messages up to there have been read
            self.db.execute(
                "UPDATE messages SET status = ? WHERE conversation_id = ? AND sender_id = ? "
                "AND position IS NOT NULL AND position <= ? AND status IN (?, ?)",
                (_READ, conversation_id, my_id, upto, _SENT, _DELIVERED),
            )
        return conversation_id

    def _apply_user(self, u: UserView, my_id: str, is_admin: bool) -> set[str]:
        if u.id == my_id:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('display_name', ?)", (u.display_name,))
        if u.id == my_id or is_admin:  # names a medic sees for admins stay "Admin"
            self.db.execute("UPDATE messages SET sender_name = ? WHERE sender_id = ?", (u.display_name, u.id))
        rows = self.db.execute("SELECT DISTINCT conversation_id FROM messages WHERE sender_id = ?", (u.id,))
        return {str(r[0]) for r in rows}

    # --- the outbox ------------------------------------------------------------------------

    def enqueue(self, conversation_id: str, content: str) -> Message:
        me = self.me()
        if me is None:
            raise LocalStoreError("sign in before sending")

        def write() -> int:
            cursor = self.db.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (NULL, NULL, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (conversation_id, me.user_id, me.display_name, content, _QUEUED, str(uuid.uuid4()), _now_iso()),
            )
            local_id = int(cursor.lastrowid or 0)
            self.db.execute("INSERT INTO outbox (local_id) VALUES (?)", (local_id,))
            return local_id

        return self.message(self.transaction(write))

    def due(self, now: float) -> list[tuple[Message, int]]:
        """Queued messages to deliver now, oldest first, with their attempt counts.

        Messages go out in the order they were written: only the outbox's head can be waiting
        for a retry (a failure stops the round), and nothing behind it is due before it is, so
        the jitter of one message's backoff never lets a later message overtake it.
        """
        columns = ", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))
        rows = self.db.execute(
            f"SELECT {columns}, o.attempts, o.next_attempt_at FROM outbox o "
            "JOIN messages m ON m.local_id = o.local_id ORDER BY o.local_id"
        ).fetchall()
        due: list[tuple[Message, int]] = []
        for row in rows:
            if row["next_attempt_at"] > now:
                break
            due.append((_message(row), int(row["attempts"])))
        return due

    def retry_now(self) -> None:
        """The server is reachable again: every queued message is due."""
        self.db.execute("UPDATE outbox SET next_attempt_at = 0")

    def next_attempt_at(self) -> float | None:
        """When the outbox's head (which everything else waits behind) is due; None when empty."""
        row = self.db.execute("SELECT next_attempt_at FROM outbox ORDER BY local_id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def delivered(self, local_id: int, server_message: MessageView) -> str:
        """The server has the message (201 or 200): record its id and position, leave the outbox."""

        def write() -> str:
            self.db.execute("DELETE FROM outbox WHERE local_id = ?", (local_id,))
            return self._upsert_message(server_message)

        return self.transaction(write)

    def retry_later(self, local_id: int, delay: float, error: str) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE local_id = ?",
            (time.time() + delay, error[:500], local_id),
        )

    def failed(self, local_id: int, error: str) -> str:
        """The server refused the message for good: keep it, marked failed, out of the outbox."""

        def write() -> str:
            self.db.execute("DELETE FROM outbox WHERE local_id = ?", (local_id,))
            self.db.execute("UPDATE messages SET status = ? WHERE local_id = ?", (_FAILED, local_id))
            row = self.db.execute("SELECT conversation_id FROM messages WHERE local_id = ?", (local_id,)).fetchone()
            return str(row[0])

        return self.transaction(write)

    def outbox_size(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    # --- read marks ------------------------------------------------------------------------

    def mark_read(self, conversation_id: str) -> int:
        """Read up to the newest known message, locally and at once; queued for the server."""
        me = self.me()
        if me is None:
            raise LocalStoreError("sign in first")

        def write() -> int:
            row = self.db.execute(
                "SELECT max(position) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            upto = int(row[0] or 0)
            if upto == 0:
                return 0
            self.db.execute(
                "INSERT INTO read_status (conversation_id, user_id, last_read_position, last_read_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id, user_id) DO UPDATE SET "
                "last_read_position = max(read_status.last_read_position, excluded.last_read_position), "
                "last_read_at = excluded.last_read_at",
                (conversation_id, me.user_id, upto, _now_iso()),
            )
            self.db.execute(
                "INSERT INTO pending_reads (conversation_id, position) VALUES (?, ?) ON CONFLICT (conversation_id) "
                "DO UPDATE SET position = max(pending_reads.position, excluded.position)",
                (conversation_id, upto),
            )
            return upto

        return self.transaction(write)

    def pending_reads(self) -> list[tuple[str, int]]:
        return [(str(r[0]), int(r[1])) for r in self.db.execute("SELECT conversation_id, position FROM pending_reads")]

    def read_pushed(self, conversation_id: str, position: int) -> None:
        self.db.execute(
            "DELETE FROM pending_reads WHERE conversation_id = ? AND position <= ?", (conversation_id, position)
        )

    # --- queries for UIs -------------------------------------------------------------------

    def conversations(self) -> list[Conversation]:
        me = self.me()
        my_id = me.user_id if me else ""
        rows = self.db.execute(
            """
            WITH mine AS (
                SELECT c.*, coalesce((SELECT last_read_position FROM read_status r
                                      WHERE r.conversation_id = c.id AND r.user_id = :me), 0) AS read_upto
                FROM conversations c
            )
            SELECT c.id, c.type, c.name, c.last_message_at, c.last_message_preview,
                   (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_id != :me
                      AND m.position > c.read_upto)
                   + CASE WHEN c.read_upto < coalesce((SELECT min(position) FROM messages m
                                                       WHERE m.conversation_id = c.id), 9223372036854775807)
                          THEN c.unread_unheld ELSE 0 END AS unread
            FROM mine c
            ORDER BY c.last_message_at IS NULL, c.last_message_at DESC, c.name
            """,
            {"me": my_id},
        ).fetchall()
        return [Conversation(r[0], ConversationType(r[1]), r[2], r[3], r[4], int(r[5])) for r in rows]

    def thread(self, conversation_id: str, limit: int) -> list[Message]:
        rows = self.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
            "ORDER BY position IS NULL DESC, position DESC, local_id DESC LIMIT ?",
            (conversation_id, limit),
        ).fetchall()
        return [_message(r) for r in reversed(rows)]

    def message(self, local_id: int) -> Message:
        row = self.db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE local_id = ?", (local_id,)).fetchone()
        if row is None:
            raise LocalStoreError(f"no local message {local_id}")
        return _message(row)

    def unread_total(self) -> int:
        return sum(c.unread_count for c in self.conversations())


def _as(cls: type[V], data: object) -> V:
    """The view a change's type promises (decoding guarantees it; a mismatch is a bug here)."""
    if not isinstance(data, cls):
        raise TypeError(f"a change of this type carries a {cls.__name__}, not {type(data).__name__}")
    return data


def _message(row: sqlite3.Row) -> Message:
    return Message(
        local_id=int(row["local_id"]),
        id=row["id"],
        conversation_id=row["conversation_id"],
        sender_id=row["sender_id"],
        sender_name=row["sender_name"],
        content=row["content"],
        status=MessageStatus(row["status"]),
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        position=row["position"],
    )


class LocalStore:
    """Runs every `StoreCore` call on one dedicated thread, in order: the serialized writer."""

    def __init__(self, core: StoreCore, worker: ThreadPoolExecutor) -> None:
        self.core = core
        self._worker = worker

    @classmethod
    async def open(cls, path: str | Path) -> LocalStore:
        worker = ThreadPoolExecutor(1, thread_name_prefix="sitecomms-client-store")
        try:
            core = await asyncio.get_running_loop().run_in_executor(worker, StoreCore, path)
        except BaseException:
            worker.shutdown(wait=False)
            raise
        return cls(core, worker)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def close(self) -> None:
        await self.run(self.core.close)
        self._worker.shutdown(wait=True)
