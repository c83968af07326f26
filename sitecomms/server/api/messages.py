"""`POST /v1/messages`: send, idempotently."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sitecomms.protocol.models import MessageView
from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.api.schemas import SendMessageRequest
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.visibility import Viewer


def install(api: APIRouter, messaging: Messaging, authenticate: Authenticator) -> None:
    @api.post(
        "/v1/messages",
        tags=["messages"],
        status_code=201,
        response_model=MessageView,
        responses={
            **responses(403, 404, 409),
            200: {"model": MessageView, "description": "Already sent with this key"},
        },
    )
    async def send_message(body: SendMessageRequest, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Send a message. The same `idempotency_key` again returns the same message with 200."""
        result = await messaging.send(viewer, str(body.conversation_id), body.content, body.idempotency_key)
        return JSON(result.message, status_code=201 if result.created else 200)
