"""Conversations: the list, a thread's pages, marking read, and a message's receipts."""

from __future__ import annotations

import uuid
from enum import Enum

from fastapi import APIRouter, Body, Depends, Query

from sitecomms.protocol import limits
from sitecomms.protocol.cursors import Cursor, InvalidCursor
from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.models import ConversationList, MessagePage, ReadStatusView, ReceiptsView
from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.api.schemas import MarkReadRequest
from sitecomms.server.services.errors import InvalidInput
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.visibility import Viewer


def parse_cursor(text: str | None, viewer: Viewer) -> Cursor | None:
    if text is None or text == "":
        return None
    try:
        return Cursor.parse(text, viewer.org_id)
    except InvalidCursor as exc:
        raise InvalidInput(str(exc), ErrorCode.INVALID_CURSOR) from exc


def install(api: APIRouter, messaging: Messaging, authenticate: Authenticator) -> None:
    tags: list[str | Enum] = ["conversations"]

    @api.get("/v1/conversations", tags=tags, response_model=ConversationList, responses=responses())
    async def list_conversations(viewer: Viewer = Depends(authenticate)) -> JSON:
        """The caller's conversations, most recent activity first, with previews and unread counts."""
        return JSON(await messaging.conversations(viewer))

    @api.get(
        "/v1/conversations/{conversation_id}/messages", tags=tags, response_model=MessagePage, responses=responses(404)
    )
    async def list_messages(
        conversation_id: uuid.UUID,
        before: str | None = Query(None, max_length=100, description="`next_before` of the previous page"),
        limit: int = Query(limits.THREAD_PAGE_DEFAULT, ge=1, le=limits.THREAD_PAGE_MAX),
        viewer: Viewer = Depends(authenticate),
    ) -> JSON:
        """A page of a thread, oldest first; follow `next_before` for older messages."""
        page = await messaging.thread(viewer, str(conversation_id), parse_cursor(before, viewer), limit)
        return JSON(page)

    @api.post(
        "/v1/conversations/{conversation_id}/read", tags=tags, response_model=ReadStatusView, responses=responses(404)
    )
    async def mark_read(
        conversation_id: uuid.UUID,
        body: MarkReadRequest | None = Body(None),
        viewer: Viewer = Depends(authenticate),
    ) -> JSON:
        """Move the caller's read position forward (never back); no body: up to the newest message."""
        position = body.position if body is not None else None
        return JSON(await messaging.mark_read(viewer, str(conversation_id), position))

    @api.get(
        "/v1/conversations/{conversation_id}/messages/{message_id}/receipts",
        tags=tags,
        response_model=ReceiptsView,
        responses=responses(403, 404),
    )
    async def message_receipts(
        conversation_id: uuid.UUID, message_id: uuid.UUID, viewer: Viewer = Depends(authenticate)
    ) -> JSON:
        """Who of the message's recipients has read it. A broadcast's: admins only (403 for a medic)."""
        return JSON(await messaging.receipts(viewer, str(conversation_id), str(message_id)))
