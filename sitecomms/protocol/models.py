"""The shapes that travel over HTTP (and, later, the realtime channel), as plain dataclasses.

Every view is rendered *for a viewer*: names are the ones that viewer should see (design §1)
and counts are that viewer's. Timestamps are timezone-aware UTC and serialise as RFC 3339.
`position` is the org-stream position of the change that last touched the object; integers
are comparable, cursors are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sitecomms.protocol.enums import ChangeType, ConversationType, MessageStatus, Role


@dataclass(frozen=True, slots=True)
class OrgView:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class UserView:
    id: str
    org_id: str
    email: str
    display_name: str
    role: Role
    created_at: datetime
    position: int
    active: bool  # false once deactivated: they cannot sign in; their messages stay


@dataclass(frozen=True, slots=True)
class MeView:
    user: UserView
    org: OrgView


@dataclass(frozen=True, slots=True)
class ConversationView:
    id: str
    org_id: str
    type: ConversationType
    name: str
    medic_id: str | None
    last_message_at: datetime | None
    last_message_preview: str | None
    last_message_position: int | None  # the newest message's position: reading up to it clears unread
    unread_count: int | None  # the viewer's; null in live events (derive it locally from the stream)
    last_read_position: int | None  # the viewer's; null in live events
    created_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    conversation_id: str
    sender_id: str
    sender_name: str
    sender_role: Role
    content: str
    idempotency_key: str
    created_at: datetime
    position: int
    status: MessageStatus


@dataclass(frozen=True, slots=True)
class ReadStatusView:
    conversation_id: str
    user_id: str
    last_read_position: int
    last_read_at: datetime | None
    position: int


@dataclass(frozen=True, slots=True)
class ReaderView:
    """One recipient of a message, in its receipts: named as the asking viewer sees them.

    To a medic the admins are one team: one reader "Admin" with no `user_id`, who has read as
    far as the admin who read furthest (a medic never learns who the org's admins are)."""

    user_id: str | None
    display_name: str
    last_read_position: int  # 0: has read nothing of the conversation
    last_read_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReceiptsView:
    """Who has read one message: "read by `read_count` of `recipient_count`", and who.

    The recipients are the other side of the conversation, active, never the sender: for a
    broadcast, the org's medics; in a direct conversation, the medic for an admin's message
    and the org's admins for the medic's. A recipient has read the message once their read
    position reaches its position (for a medic, the admins count as one). Each list is ordered
    by name."""

    message_id: str
    conversation_id: str
    position: int  # the message's
    recipient_count: int
    read_count: int
    read: list[ReaderView]
    unread: list[ReaderView]


ChangeData = MessageView | ConversationView | ReadStatusView | UserView


@dataclass(frozen=True, slots=True)
class Change:
    position: int
    type: ChangeType
    data: ChangeData


@dataclass(frozen=True, slots=True)
class ChangeFrame:
    """A change on the realtime channel: a sync entry plus the cursor just after it."""

    type: ChangeType
    position: int
    cursor: str
    data: ChangeData


@dataclass(frozen=True, slots=True)
class SyncPage:
    """One page of the org stream as the caller may see it.

    `reset` is true for a first sync (no cursor): the changes are then a snapshot (every
    visible conversation, the newest messages of each, read statuses and names) and the client
    should replace what it holds. `next_cursor` is what to send next time; `has_more` says
    whether to ask again straight away.
    """

    changes: list[Change]
    next_cursor: str
    has_more: bool
    reset: bool


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Messages oldest first; `next_before` pages further back while `has_more`."""

    messages: list[MessageView]
    next_before: str | None
    has_more: bool


@dataclass(frozen=True, slots=True)
class ConversationList:
    conversations: list[ConversationView]


@dataclass(frozen=True, slots=True)
class UserList:
    users: list[UserView]


@dataclass(frozen=True, slots=True)
class TokenView:
    """A sign-in or a refresh: a short access token, and the refresh token that replaces it.

    The refresh token is single-use: each refresh answers the next one (keep it, forget the
    old). Using an old one again signs the session out everywhere (it was copied)."""

    access_token: str
    token_type: str
    expires_at: datetime
    refresh_token: str
    refresh_idle_expires_in: int  # seconds without a refresh after which the session expires
    session_id: str
    user: UserView


@dataclass(frozen=True, slots=True)
class SessionView:
    """A signed-in device, as "my devices" lists it."""

    id: str
    user_id: str
    device: str
    created_at: datetime
    last_used_at: datetime
    last_address: str
    current: bool  # the session the request came from


@dataclass(frozen=True, slots=True)
class SessionList:
    sessions: list[SessionView]


@dataclass(frozen=True, slots=True)
class RevokedCount:
    revoked: int


@dataclass(frozen=True, slots=True)
class AuditEventView:
    id: int
    at: datetime
    kind: str
    actor_id: str | None
    subject_id: str | None
    session_id: str | None
    address: str | None
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Events newest first; `next_before` pages further back while `has_more`."""

    events: list[AuditEventView]
    next_before: int | None
    has_more: bool


@dataclass(frozen=True, slots=True)
class PushKeyView:
    """The server's VAPID public key: base64url of the uncompressed P-256 point, what
    `PushManager.subscribe({applicationServerKey})` takes."""

    public_key: str


@dataclass(frozen=True, slots=True)
class PushSubscriptionView:
    id: str
    endpoint: str
    created_at: datetime
    current: bool  # bound to the session the request came from (this device)


@dataclass(frozen=True, slots=True)
class PushSubscriptionList:
    subscriptions: list[PushSubscriptionView]


@dataclass(frozen=True, slots=True)
class PushNotice:
    """The JSON inside an encrypted Web Push payload: a hint that a message is waiting.

    By default it names the message and nothing of it: the device fetches the text with its
    own session. Only when the server is set to put text in pushes (`push_include_content`)
    do `sender` (the name as this recipient sees it) and `text` (at most PUSH_TEXT_CHARS) come
    with it."""

    type: str  # PushKind
    org_id: str
    conversation_id: str
    message_id: str
    cursor: str  # the message's stream cursor
    sender: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ErrorBody:
    error: ErrorDetail
