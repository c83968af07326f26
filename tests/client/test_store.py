"""The SDK's local store on its own: schema upgrades, idempotent apply, reconciling sends, read
receipts, locally computed unread counts, in-order outbox, and one process per store file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sitecomms.client import LocalStoreError, LocalStoreLocked
from sitecomms.client._schema import MIGRATIONS, VERSION
from sitecomms.client._store import LocalStore, StoreCore
from sitecomms.protocol.enums import ChangeType, ConversationType, MessageStatus, Role
from sitecomms.protocol.models import Change, ChangeFrame, ConversationView, MessageView, ReadStatusView

ME = "11111111-1111-1111-1111-111111111111"
ADMIN = "22222222-2222-2222-2222-222222222222"
ORG = "33333333-3333-3333-3333-333333333333"
CONVERSATION = "44444444-4444-4444-4444-444444444444"
BROADCAST = "55555555-5555-5555-5555-555555555555"


def signed_in(path: Path) -> StoreCore:
    core = StoreCore(path)
    core.set_meta({"token": "t", "user_id": ME, "org_id": ORG, "display_name": "Maya", "role": "medic"})
    return core


EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def at(position: int) -> datetime:
    return EPOCH + timedelta(seconds=position)


def conversation(
    position: int, *, preview: str | None = None, cid: str = CONVERSATION, unread: int | None = None
) -> Change:
    """A conversation's change; `unread` is the server's count in a sync snapshot (read from 0)."""
    direct = cid == CONVERSATION
    view = ConversationView(
        id=cid,
        org_id=ORG,
        type=ConversationType.DIRECT if direct else ConversationType.BROADCAST,
        name="Admin" if direct else "Broadcast",
        medic_id=ME if direct else None,
        last_message_at=None if preview is None else at(position),
        last_message_preview=preview,
        last_message_position=None if preview is None else position,
        unread_count=unread,
        last_read_position=None if unread is None else 0,
        created_at=EPOCH,
        position=position,
    )
    return Change(position, ChangeType.CONVERSATION_UPDATED, view)


def message(
    position: int,
    sender: str,
    content: str,
    *,
    key: str | None = None,
    status: MessageStatus = MessageStatus.SENT,
    cid: str = CONVERSATION,
) -> Change:
    view = MessageView(
        id=str(uuid.UUID(int=position)),
        conversation_id=cid,
        sender_id=sender,
        sender_name="Maya" if sender == ME else "Admin",
        sender_role=Role.MEDIC if sender == ME else Role.ADMIN,
        content=content,
        idempotency_key=key or f"key-{position}",
        created_at=at(position),
        position=position,
        status=status,
    )
    return Change(position, ChangeType.MESSAGE_CREATED, view)


def read_status(position: int, user: str, upto: int, cid: str = CONVERSATION) -> Change:
    view = ReadStatusView(cid, user, last_read_position=upto, last_read_at=at(60), position=position)
    return Change(position, ChangeType.READ_STATUS_UPDATED, view)


def live(change: Change, cursor: str) -> ChangeFrame:
    """The same change as a realtime frame."""
    return ChangeFrame(change.type, change.position, cursor, change.data)


def dump(core: StoreCore) -> dict[str, list[tuple[Any, ...]]]:
    tables = ["meta", "conversations", "messages", "read_status", "outbox", "pending_reads"]
    return {t: [tuple(r) for r in core.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in tables}


# --- schema versions -------------------------------------------------------------------------


def make_version_1_store(path: Path) -> None:
    """What the first released SDK left on disk: schema 1, a conversation and a queued message."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("PRAGMA user_version=1")
        meta = {"token": "t", "user_id": ME, "org_id": ORG, "display_name": "Maya", "role": "medic", "cursor": "v1.7.x"}
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        db.execute(
            "INSERT INTO conversations (id, type, name, medic_id, last_message_at, last_message_preview, position) "
            "VALUES (?, 'direct', 'Admin', ?, '2026-01-01T00:00:05Z', 'hello', 6)",
            (CONVERSATION, ME),
        )
        db.execute(
            "INSERT INTO messages (id, conversation_id, sender_id, sender_name, content, status, idempotency_key, "
            "created_at, position) VALUES (?, ?, ?, 'Admin', 'hello', 'sent', 'k-admin', '2026-01-01T00:00:05Z', 5)",
            (str(uuid.UUID(int=5)), CONVERSATION, ADMIN),
        )
        cursor = db.execute(
            "INSERT INTO messages (id, conversation_id, sender_id, sender_name, content, status, idempotency_key, "
            "created_at, position) VALUES (NULL, ?, ?, 'Maya', 'written offline', 'queued', 'k-offline', "
            "'2026-01-01T00:00:09Z', NULL)",
            (CONVERSATION, ME),
        )
        db.execute("INSERT INTO outbox (local_id, attempts, next_attempt_at) VALUES (?, 2, 0)", (cursor.lastrowid,))
    finally:
        db.close()


async def test_an_older_store_is_upgraded_with_its_data_and_outbox_intact(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    make_version_1_store(path)
    assert VERSION > 1, "this test upgrades from schema 1: it needs a later migration to exist"

    store = await LocalStore.open(path)
    try:
        await store.run(check_upgraded, store.core)
    finally:
        await store.close()


def check_upgraded(core: StoreCore) -> None:
    """On the store's own thread: everything schema 1 held, and the later schema's features."""
    assert core.db.execute("PRAGMA user_version").fetchone()[0] == VERSION
    me = core.me()
    assert me is not None and me.user_id == ME
    assert core.get_meta("cursor") == "v1.7.x"
    [only] = core.conversations()
    assert (only.id, only.name, only.last_message_preview, only.unread_count) == (CONVERSATION, "Admin", "hello", 1)
    thread = core.thread(CONVERSATION, 10)
    assert [(m.content, m.status) for m in thread] == [("hello", "sent"), ("written offline", "queued")]
    # still deliverable: due, with its attempt count, and the later schema's columns work on it
    [(queued, attempts)] = core.due(time.time())
    assert (queued.content, queued.idempotency_key, attempts) == ("written offline", "k-offline", 2)
    core.retry_later(queued.local_id, 0.0, "ServerUnavailable")
    assert core.db.execute("SELECT last_error FROM outbox").fetchone()[0] == "ServerUnavailable"
    assert core.mark_read(CONVERSATION) == 5  # pending_reads exists (schema 2)
    assert core.pending_reads() == [(CONVERSATION, 5)]
    assert core.db.execute("SELECT unread_unheld FROM conversations").fetchone()[0] == 0  # schema 3
    # and the server's echo reconciles it
    echo = message(8, ME, "written offline", key="k-offline")
    core.apply([echo], "v1.8.x")
    assert core.outbox_size() == 0
    assert [(m.content, m.status, m.position) for m in core.thread(CONVERSATION, 10)][-1] == (
        "written offline",
        "sent",
        8,
    )


def test_a_store_from_a_newer_sdk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    StoreCore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={VERSION + 1}")
    db.close()
    with pytest.raises(LocalStoreError, match="newer"):
        StoreCore(path)


def test_a_file_that_is_not_a_database_is_a_local_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a sqlite database, not at all" * 100)
    with pytest.raises(LocalStoreError) as raised:
        StoreCore(path)
    assert not isinstance(raised.value, LocalStoreLocked)


# --- applying the server's changes -----------------------------------------------------------


def test_apply_is_idempotent_and_a_live_event_also_synced_changes_nothing(tmp_path: Path) -> None:
    core = signed_in(tmp_path / "s.db")
    try:
        page = [
            conversation(1),
            message(2, ADMIN, "first"),
            conversation(3, preview="first"),
            message(4, ME, "mine", key="k-mine"),
            conversation(5, preview="mine"),
            read_status(6, ADMIN, 4),
        ]
        touched = core.apply(page, "v1.6.x")
        assert touched == {CONVERSATION}
        once = dump(core)
        core.apply(page, "v1.6.x")
        assert dump(core) == once
        # the same change arriving live (with its cursor) after sync already had it
        core.apply([live(message(4, ME, "mine", key="k-mine"), "v1.6.x")], "v1.6.x")
        core.apply([live(conversation(3, preview="first"), "v1.6.x")], "v1.6.x")  # older: ignored
        assert dump(core) == once
        assert [(m.content, m.status) for m in core.thread(CONVERSATION, 10)] == [("first", "sent"), ("mine", "read")]
        assert core.conversations()[0].last_message_preview == "mine"
        assert core.get_meta("cursor") == "v1.6.x"
    finally:
        core.close()


def test_a_snapshot_replaces_what_the_store_held_but_keeps_unsent_messages(tmp_path: Path) -> None:
    core = signed_in(tmp_path / "s.db")
    try:
        core.apply([conversation(1), conversation(2, cid=BROADCAST)], "v1.2.x")
        core.apply([message(3, ADMIN, "old"), message(4, ME, "old mine"), read_status(5, ADMIN, 4)], "v1.5.x")
        core.mark_read(CONVERSATION)
        queued = core.enqueue(CONVERSATION, "not sent yet")
        refused = core.enqueue(CONVERSATION, "refused")
        core.failed(refused.local_id, "422")

        snapshot = [conversation(1), message(2, ADMIN, "the only one now")]  # the broadcast is gone
        touched = core.apply(snapshot, "v1.2.y", reset=True)
        assert touched == {CONVERSATION, BROADCAST}, "observers of what disappeared hear of it too"
        assert [c.id for c in core.conversations()] == [CONVERSATION]
        thread = core.thread(CONVERSATION, 10)
        assert [(m.content, m.status) for m in thread] == [
            ("the only one now", "sent"),
            ("not sent yet", "queued"),
            ("refused", "failed"),
        ]
        assert [m.local_id for m, _ in core.due(time.time())] == [queued.local_id]
        assert core.pending_reads() == [] and core.unread_total() == 1
        assert core.get_meta("cursor") == "v1.2.y"
        assert core.me() is not None, "the session is not server data: it stays"
    finally:
        core.close()


def test_a_failed_batch_leaves_neither_its_changes_nor_its_cursor(tmp_path: Path) -> None:
    core = signed_in(tmp_path / "s.db")
    try:
        core.apply([conversation(1)], "v1.1.x")
        broken = Change(3, ChangeType.MESSAGE_CREATED, read_status(3, ADMIN, 2).data)  # not a message
        with pytest.raises(TypeError, match="carries a MessageView"):
            core.apply([message(2, ADMIN, "lost with the batch"), broken], "v1.3.x")
        assert core.thread(CONVERSATION, 10) == []
        assert core.get_meta("cursor") == "v1.1.x"
    finally:
        core.close()


def test_a_queued_message_is_reconciled_with_its_echo_by_idempotency_key(tmp_path: Path) -> None:
    core = signed_in(tmp_path / "s.db")
    try:
        core.apply([conversation(1)], "v1.1.x")
        queued = core.enqueue(CONVERSATION, "on my way")
        assert (queued.status, queued.id, queued.position) == ("queued", None, None)
        assert core.outbox_size() == 1
        echo = message(2, ME, "on my way", key=queued.idempotency_key)
        core.apply([echo], "v1.2.x")
        [row] = core.thread(CONVERSATION, 10)
        assert (row.local_id, row.id, row.status, row.position) == (queued.local_id, echo.data.id, "sent", 2)
        assert core.outbox_size() == 0
        assert core.due(time.time()) == []
        # the POST's answer arriving after the echo (or twice) changes nothing
        assert isinstance(echo.data, MessageView)
        core.delivered(queued.local_id, echo.data)
        assert core.thread(CONVERSATION, 10) == [row]
    finally:
        core.close()


def test_read_receipts_turn_my_messages_read(tmp_path: Path) -> None:
    core = signed_in(tmp_path / "s.db")
    try:
        core.apply([conversation(1), message(2, ME, "one"), message(3, ADMIN, "theirs"), message(4, ME, "two")], None)
        core.apply([read_status(5, ADMIN, 3)], "v1.5.x")
        statuses = {m.content: m.status for m in core.thread(CONVERSATION, 10)}
        assert statuses == {"one": "read", "theirs": "sent", "two": "sent"}
        # my own read position (another device of mine) is not a receipt
        core.apply([read_status(6, ME, 4)], "v1.6.x")
        assert core.thread(CONVERSATION, 10)[-1].status == "sent"
        core.apply([read_status(7, ADMIN, 4)], "v1.7.x")
        assert core.thread(CONVERSATION, 10)[-1].status == "read"
        # a later sync of the message as "sent" never takes "read" back
        core.apply([message(4, ME, "two")], "v1.7.x")
        assert core.thread(CONVERSATION, 10)[-1].status == "read"
    finally:
        core.close()


def test_unread_counts_never_count_my_own_messages(tmp_path: Path) -> None:
    core = signed_in(tmp_path / "s.db")
    try:
        core.apply([conversation(1), conversation(2, cid=BROADCAST)], None)
        core.apply([message(3, ADMIN, "a"), message(4, ME, "b"), message(5, ADMIN, "c"), message(6, ME, "d")], None)
        core.apply([message(7, ADMIN, "all hands", cid=BROADCAST)], None)
        core.enqueue(CONVERSATION, "queued, mine")
        counts = {c.id: c.unread_count for c in core.conversations()}
        assert counts == {CONVERSATION: 2, BROADCAST: 1}
        assert core.unread_total() == 3
        assert core.mark_read(CONVERSATION) == 6
        assert {c.id: c.unread_count for c in core.conversations()} == {CONVERSATION: 0, BROADCAST: 1}
        core.apply([message(8, ME, "e")], None)
        assert core.unread_total() == 1
        core.apply([message(9, ADMIN, "f")], None)
        assert {c.id: c.unread_count for c in core.conversations()} == {CONVERSATION: 1, BROADCAST: 1}
        # my read position coming back from the server (other device) is monotonic and clears the pending mark
        assert core.pending_reads() == [(CONVERSATION, 6)]
        core.apply([read_status(10, ME, 9)], None)
        core.apply([read_status(11, ME, 3)], None)  # an older position never moves it back
        assert core.pending_reads() == []
        assert core.unread_total() == 1  # the broadcast
    finally:
        core.close()


def test_unread_messages_a_first_sync_did_not_bring_are_still_counted(tmp_path: Path) -> None:
    """A snapshot holds each conversation's newest messages only; the server's count covers the rest."""
    core = signed_in(tmp_path / "s.db")
    try:
        view = conversation(160, preview="m 150", unread=150)
        newest = [message(p, ADMIN, f"m {p - 10}") for p in range(61, 161)]  # 100 of the 150
        core.apply([*newest, read_status(5, ME, 0), view], "v1.160.x")  # any order within the batch
        assert len(core.thread(CONVERSATION, 1000)) == 100
        assert core.unread_total() == 150
        core.apply([view], "v1.160.x")  # the same view again: idempotent
        assert core.unread_total() == 150

        core.apply([message(161, ADMIN, "live one")], "v1.161.x")  # live: no count, one more held
        assert core.unread_total() == 151
        stale = conversation(100, unread=7)
        core.apply([stale], "v1.161.x")  # older than what the store has: changes nothing
        assert core.unread_total() == 151

        later = conversation(163, preview="m 152", unread=152)
        core.apply([message(162, ME, "mine"), message(163, ADMIN, "m 152"), later], "v1.163.x")
        assert core.unread_total() == 152

        assert core.mark_read(CONVERSATION) == 163  # reading up to the newest reads the unheld ones too
        assert core.unread_total() == 0
        core.apply([message(164, ADMIN, "new")], "v1.164.x")
        assert core.unread_total() == 1
    finally:
        core.close()


# --- the outbox ------------------------------------------------------------------------------


def test_the_outbox_delivers_in_the_order_messages_were_written(tmp_path: Path) -> None:
    """A retry waiting on the oldest message holds back the later ones (no overtaking by jitter)."""
    core = signed_in(tmp_path / "s.db")
    try:
        core.apply([conversation(1)], None)
        first, second, third = (core.enqueue(CONVERSATION, text) for text in ("1st", "2nd", "3rd"))
        now = time.time()
        assert [m.content for m, _ in core.due(now)] == ["1st", "2nd", "3rd"]
        core.retry_later(first.local_id, 30.0, "down")
        assert core.due(now) == []
        assert core.next_attempt_at() == pytest.approx(now + 30.0, abs=5.0)
        assert [m.content for m, _ in core.due(now + 31)] == ["1st", "2nd", "3rd"]
        core.failed(first.local_id, "422 refused")  # refused for good: out of the way, kept as failed
        assert [m.content for m, _ in core.due(now)] == ["2nd", "3rd"]
        core.retry_later(second.local_id, 30.0, "down")
        core.retry_now()  # the server is back
        assert [(m.local_id, attempts) for m, attempts in core.due(now)] == [(second.local_id, 1), (third.local_id, 0)]
        assert core.thread(CONVERSATION, 10)[0].status == "failed"
    finally:
        core.close()


# --- one process per store -------------------------------------------------------------------


async def test_a_second_opener_of_the_same_store_gets_local_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = await LocalStore.open(path)
    try:
        await store.run(store.core.set_meta, {"user_id": ME})

        # another connection, on another thread of this process (LocalStore's own worker)
        with pytest.raises(LocalStoreLocked, match="in use"):
            await LocalStore.open(path)

        # another process
        probe = (
            "import sys\n"
            "from sitecomms.client import LocalStoreLocked\n"
            "from sitecomms.client._store import StoreCore\n"
            "try:\n"
            "    StoreCore(sys.argv[1]).close()\n"
            "except LocalStoreLocked:\n"
            "    print('locked')\n"
            "else:\n"
            "    print('opened')\n"
        )
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", probe, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.stdout.strip() == "locked", result.stdout + result.stderr
    finally:
        await store.close()

    # once the owner closes it, the next one opens it and finds its data
    again = await LocalStore.open(path)
    try:
        assert await again.run(again.core.get_meta, "user_id") == ME
    finally:
        await again.close()
