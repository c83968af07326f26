"""The tables. Every row carries `org_id`; every changeable row carries its stream `position`.

`position` on a row is the org-stream position of the change that last touched it, unique
within the org across all tables, so a pull from a cursor is "rows whose position is greater"
on each table, merged. A row that changes again simply moves forward in the stream.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from sitecomms.store.types import UTCDateTime

# Unique constraints that callers tell apart when one is violated (`errors.Duplicate.constraint`).
UNIQUE_EMAIL = "uq_users_email"
UNIQUE_IDEMPOTENCY_KEY = "uq_messages_sender_id_idempotency_key"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

orgs = Table(
    "orgs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

org_streams = Table(
    "org_streams",
    metadata,
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", BigInteger, nullable=False, server_default=text("0")),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    UniqueConstraint("email", name=UNIQUE_EMAIL),
    CheckConstraint("role IN ('medic', 'admin')", name="role"),
    Index(None, "org_id", "position"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(16), nullable=False),
    Column("medic_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=True, unique=True),
    Column("last_message_at", UTCDateTime, nullable=True),
    Column("last_message_preview", String(400), nullable=True),
    Column("last_message_position", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    CheckConstraint(
        "(type = 'direct' AND medic_id IS NOT NULL) OR (type = 'broadcast' AND medic_id IS NULL)",
        name="type_medic",
    ),
    Index(None, "org_id", "position"),
    # One broadcast conversation per org.
    Index(
        "uq_conversations_broadcast_org",
        "org_id",
        unique=True,
        sqlite_where=text("type = 'broadcast'"),
        postgresql_where=text("type = 'broadcast'"),
    ),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("conversation_id", String(36), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("sender_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("content", Text, nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    UniqueConstraint("sender_id", "idempotency_key", name=UNIQUE_IDEMPOTENCY_KEY),
    UniqueConstraint("org_id", "position"),
    Index(None, "conversation_id", "position"),
)

read_status = Table(
    "read_status",
    metadata,
    Column(
        "conversation_id",
        String(36),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("last_read_position", BigInteger, nullable=False),
    Column("last_read_at", UTCDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index(None, "org_id", "position"),
)

server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(512), nullable=False),
)
