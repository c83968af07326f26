"""The tables. Every row carries `org_id`; every changeable row carries its stream `position`.

`position` on a row is the org-stream position of the change that last touched it, unique
within the org across all tables, so a pull from a cursor is "rows whose position is greater"
on each table, merged. A row that changes again simply moves forward in the stream.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
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
UNIQUE_PUSH_ENDPOINT = "uq_push_subscriptions_endpoint"

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
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="RESTRICT"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("deactivated_at", UTCDateTime, nullable=True),
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
    Column("medic_id", String(36), ForeignKey("users.id", ondelete="RESTRICT"), nullable=True, unique=True),
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
    Column("sender_id", String(36), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
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
    Column("user_id", String(36), ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("last_read_position", BigInteger, nullable=False),
    Column("last_read_at", UTCDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index(None, "org_id", "position"),
)

# One signed-in device. The refresh token is `<id>.<secret>`; only the SHA-256 of the current
# secret is kept. Each refresh replaces it with the next secret of the session's chain
# (services/sessions.py), `generation` counting the rotations.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="RESTRICT"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("device", String(100), nullable=False),
    Column("refresh_hash", String(64), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=False),
    Column("rotated_at", UTCDateTime, nullable=False),
    Column("last_address", String(64), nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_reason", String(32), nullable=True),
    Index(None, "user_id", "created_at"),
)

# The audit log: append-only (triggers refuse UPDATE; only retention deletes). `org_id` is null
# for events of no known org (a failed sign-in with an unknown email).
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("org_id", String(36), nullable=True),
    Column("kind", String(32), nullable=False),
    Column("actor_id", String(36), nullable=True),
    Column("subject_id", String(36), nullable=True),
    Column("session_id", String(36), nullable=True),
    Column("address", String(64), nullable=True),
    Column("detail", Text, nullable=False),
    Index(None, "org_id", "id"),
    Index(None, "org_id", "subject_id", "id"),
    Index(None, "at"),
)

# Every change to who may do what (a revocation, a deactivation, a role or password change),
# in commit order: each server process follows it (services/access.py) to drop what it cached
# and close the sockets affected. The bus only says "look now"; this table is the record, kept
# a day.
access_changes = Table(
    "access_changes",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("session_id", String(36), nullable=True),
    Index(None, "at"),
)

# Sign-in throttling, shared by every server process: one row per throttled key
# ("account:<email>" or "address:<ip>").
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UTCDateTime, nullable=False),
    Column("blocked_until", UTCDateTime, nullable=False),
    Index(None, "last_failure_at"),
)

# Web Push (store/push.py). A subscription is one browser's push endpoint, bound to the signed-in
# session (device) that registered it: ending the session ends its pushes. The endpoint is a
# capability URL: unique, since one browser profile has one current owner.
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("session_id", String(36), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint", String(2048), nullable=False),
    Column("p256dh", String(100), nullable=False),
    Column("auth", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("endpoint", name=UNIQUE_PUSH_ENDPOINT),
    Index(None, "org_id", "id"),  # a broadcast's devices, a page at a time in id order
    Index(None, "user_id"),
    Index(None, "session_id"),
)

# How far each org's stream has been turned into due pushes (a row from the org's first
# subscription on): the planner reads the messages after it and records their deliveries in
# the same transaction as it moves it, so what is due survives any crash. A message to more
# devices than one transaction plans is planned in parts: `after_subscription` is the last
# subscription (in id order) already planned for the first message after `position` ("": none).
push_cursors = Table(
    "push_cursors",
    metadata,
    Column("org_id", String(36), ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("after_subscription", String(36), nullable=False, server_default=text("''")),
)

# One push due to one device for one message. Claimed by a worker for a lease (leased_until);
# deleted once the push service answered for good; moved to a later due_at to retry.
push_deliveries = Table(
    "push_deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("subscription_id", String(36), ForeignKey("push_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", String(36), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("leased_until", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("with_content", Boolean, nullable=False, server_default=text("true")),
    UniqueConstraint("subscription_id", "message_id"),
    Index(None, "due_at"),
)

# Readiness (services/health.py): one row that every readiness probe rewrites, so `/readyz`
# answers "not ready" when the database reads but refuses writes (disk full, read-only).
health_probe = Table(
    "health_probe",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("probed_at", UTCDateTime, nullable=False),
)
