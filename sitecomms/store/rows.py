"""Rows as the store returns them: frozen dataclasses, no rendering for any viewer.

Each query selects (or returns) the columns of its row in field order, so rows are built
positionally: `MessageRow(*values)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class OrgRow:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    org_id: str
    email: str
    display_name: str
    role: str
    password_hash: str
    created_at: datetime
    position: int
    active: bool
    deactivated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    org_id: str
    type: str
    medic_id: str | None
    medic_name: str | None
    last_message_at: datetime | None
    last_message_preview: str | None
    last_message_position: int | None
    created_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    org_id: str
    conversation_id: str
    sender_id: str
    sender_name: str
    sender_role: str
    content: str
    idempotency_key: str
    created_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class ReadStatusRow:
    conversation_id: str
    user_id: str
    org_id: str
    last_read_position: int
    last_read_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    org_id: str
    user_id: str
    device: str
    refresh_hash: str
    generation: int
    created_at: datetime
    last_used_at: datetime
    rotated_at: datetime
    last_address: str
    revoked_at: datetime | None
    revoked_reason: str | None


@dataclass(frozen=True, slots=True)
class AccessRow:
    """What authorising a request needs: a session and its user, read together."""

    session_id: str
    user_id: str
    org_id: str
    role: str
    active: bool
    revoked: bool
    last_used_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    org_id: str | None
    kind: str
    actor_id: str | None
    subject_id: str | None
    session_id: str | None
    address: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class PushSubscriptionRow:
    id: str
    org_id: str
    user_id: str
    session_id: str
    endpoint: str
    p256dh: str
    auth: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PushTarget:
    """A subscribed device that may be due a push: its subscription, and its user as the
    visibility module needs them."""

    subscription_id: str
    user_id: str
    role: str


@dataclass(frozen=True, slots=True)
class DuePush:
    """A claimed delivery with all it takes to send it (the message's content is only used
    when pushes carry content)."""

    id: int
    subscription_id: str
    endpoint: str
    p256dh: str
    auth: str
    user_id: str
    user_role: str
    org_id: str
    conversation_id: str
    message_id: str
    position: int
    expires_at: datetime
    attempts: int
    with_content: bool
    sender_role: str
    sender_name: str
    content: str
    user_org_id: str  # the subscription's owner's org (checked against the conversation's at send time)
    sender_id: str
