"""Rendering stored rows into protocol views, as one viewer should see them."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from sitecomms.protocol.enums import ConversationType, MessageStatus, Role
from sitecomms.protocol.models import (
    AuditEventView,
    ConversationView,
    MessageView,
    OrgView,
    ReadStatusView,
    SessionView,
    UserView,
)
from sitecomms.server.services import visibility
from sitecomms.server.services.visibility import Viewer
from sitecomms.store.rows import AuditRow, ConversationRow, MessageRow, OrgRow, ReadStatusRow, SessionRow, UserRow


def org_view(row: OrgRow) -> OrgView:
    return OrgView(id=row.id, name=row.name)


def user_view(row: UserRow) -> UserView:
    return UserView(
        id=row.id,
        org_id=row.org_id,
        email=row.email,
        display_name=row.display_name,
        role=Role(row.role),
        created_at=row.created_at,
        position=row.position,
        active=row.active,
    )


def event_view(row: AuditRow) -> AuditEventView:
    """An event as read: its stored detail (JSON) parsed into an object."""
    try:
        parsed = orjson.loads(row.detail)
    except orjson.JSONDecodeError:
        parsed = {"unparsed": row.detail}
    detail = parsed if isinstance(parsed, dict) else {"value": parsed}
    return AuditEventView(
        id=row.id,
        at=row.at,
        kind=row.kind,
        actor_id=row.actor_id,
        subject_id=row.subject_id,
        session_id=row.session_id,
        address=row.address,
        detail=detail,
    )


def session_view(row: SessionRow, *, current: bool) -> SessionView:
    return SessionView(
        id=row.id,
        user_id=row.user_id,
        device=row.device,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        last_address=row.last_address,
        current=current,
    )


def conversation_view(
    viewer: Viewer, row: ConversationRow, *, unread_count: int | None, last_read_position: int | None
) -> ConversationView:
    return ConversationView(
        id=row.id,
        org_id=row.org_id,
        type=ConversationType(row.type),
        name=visibility.conversation_name(viewer, row),
        medic_id=row.medic_id,
        last_message_at=row.last_message_at,
        last_message_preview=row.last_message_preview,
        last_message_position=row.last_message_position,
        unread_count=unread_count,
        last_read_position=last_read_position,
        created_at=row.created_at,
        position=row.position,
    )


def message_status(row: MessageRow, read_by_others: Iterable[ReadStatusRow]) -> MessageStatus:
    """`read` once any other participant (visible to the viewer) has read past it."""
    for status in read_by_others:
        if status.user_id != row.sender_id and status.last_read_position >= row.position:
            return MessageStatus.READ
    return MessageStatus.SENT


def message_view(viewer: Viewer, row: MessageRow, status: MessageStatus = MessageStatus.SENT) -> MessageView:
    return MessageView(
        id=row.id,
        conversation_id=row.conversation_id,
        sender_id=row.sender_id,
        sender_name=visibility.sender_name(viewer, row.sender_role, row.sender_name),
        sender_role=Role(row.sender_role),
        content=row.content,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
        position=row.position,
        status=status,
    )


def read_status_view(row: ReadStatusRow) -> ReadStatusView:
    return ReadStatusView(
        conversation_id=row.conversation_id,
        user_id=row.user_id,
        last_read_position=row.last_read_position,
        last_read_at=row.last_read_at,
        position=row.position,
    )
