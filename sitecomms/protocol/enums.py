"""Closed sets of names that appear on the wire."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    MEDIC = "medic"
    ADMIN = "admin"


class ConversationType(StrEnum):
    DIRECT = "direct"
    BROADCAST = "broadcast"


class MessageStatus(StrEnum):
    """A message's status as the viewer sees it.

    The server knows `sent` (committed) and `read` (another participant's read position has
    passed it), and never answers with another. `queued` (not sent yet), `delivered` (unused
    until the server has delivery receipts) and `failed` (refused by the server for good) are
    states of a client's local copy.
    """

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class PushKind(StrEnum):
    """What a Web Push payload (`models.PushNotice`) is about."""

    MESSAGE = "message"


class ChangeType(StrEnum):
    """The kinds of change carried by the org stream (pull sync and realtime alike)."""

    MESSAGE_CREATED = "message.created"
    CONVERSATION_UPDATED = "conversation.updated"
    READ_STATUS_UPDATED = "read_status.updated"
    USER_UPDATED = "user.updated"


class AuditKind(StrEnum):
    """The kinds of event in the audit log (`GET /v1/audit`, `sitecomms audit`)."""

    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    REFRESH_REUSED = "refresh_reused"
    SIGN_OUT = "sign_out"
    SESSION_REVOKED = "session_revoked"
    SESSIONS_REVOKED = "sessions_revoked"
    USER_CREATED = "user_created"
    USER_RENAMED = "user_renamed"
    ROLE_CHANGED = "role_changed"
    USER_DEACTIVATED = "user_deactivated"
    USER_REACTIVATED = "user_reactivated"
    PASSWORD_RESET = "password_reset"
    PASSWORD_CHANGED = "password_changed"
