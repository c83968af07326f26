"""What the SDK hands to UIs: plain frozen dataclasses read from the local store.

Their statuses, types and roles are the protocol's enums (`MessageStatus`, ...): string enums,
so they compare equal to the wire strings (`message.status == "sent"`) and print as them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sitecomms.protocol.enums import ConversationType, MessageStatus, Role


class ConnectionState(Enum):
    OFFLINE = "offline"  # no connection (never connected, or lost it; retrying with backoff)
    CONNECTING = "connecting"
    LIVE = "live"  # caught up and receiving changes as they happen
    SIGNED_OUT = "signed_out"  # the session has ended: sign in again (the outbox is kept)
    TOO_MANY_SOCKETS = "too_many_sockets"  # another socket of this user took over: `reconnect()` resumes
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    type: ConversationType
    name: str  # as this user sees it
    last_message_at: str | None
    last_message_preview: str | None
    unread_count: int  # computed locally


@dataclass(frozen=True, slots=True)
class Message:
    local_id: int
    id: str | None  # the server's id; None while queued
    conversation_id: str
    sender_id: str
    sender_name: str
    content: str
    status: MessageStatus  # QUEUED (local only), SENT, READ, or FAILED (refused for good)
    idempotency_key: str
    created_at: str
    position: int | None  # the server's stream position; None while queued


@dataclass(frozen=True, slots=True)
class Me:
    user_id: str
    org_id: str
    display_name: str
    role: Role
