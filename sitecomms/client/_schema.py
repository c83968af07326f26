"""The local database's schema, as numbered migrations applied in order (`PRAGMA user_version`).

Never edit a released migration: add the next one. `LocalStore` applies whatever a file lacks
when it opens it, so a client upgraded in the field keeps every queued message.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first released schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        medic_id TEXT,
        last_message_at TEXT,
        last_message_preview TEXT,
        position INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE messages (
        local_id INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT UNIQUE,
        conversation_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        sender_name TEXT NOT NULL,
        content TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'read', 'failed')),
        idempotency_key TEXT NOT NULL,
        created_at TEXT NOT NULL,
        position INTEGER,
        UNIQUE (sender_id, idempotency_key)
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, position);
    CREATE TABLE read_status (
        conversation_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        last_read_position INTEGER NOT NULL,
        last_read_at TEXT,
        PRIMARY KEY (conversation_id, user_id)
    );
    CREATE TABLE outbox (
        local_id INTEGER PRIMARY KEY REFERENCES messages (local_id),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0
    );
    """,
    # 2: read marks made offline wait here until the server has them; delivery errors are kept
    """
    CREATE TABLE pending_reads (conversation_id TEXT PRIMARY KEY, position INTEGER NOT NULL);
    ALTER TABLE outbox ADD COLUMN last_error TEXT;
    """,
    # 3: unread messages older than any message held here. A first sync brings only the newest
    #    messages of each conversation, so the server's count (in sync's conversation views)
    #    covers what the store cannot count itself.
    """
    ALTER TABLE conversations ADD COLUMN unread_unheld INTEGER NOT NULL DEFAULT 0;
    """,
]

VERSION = len(MIGRATIONS)
