"""Web Push: the server's public key, and the caller's device subscriptions."""

from __future__ import annotations

import uuid
from enum import Enum

from fastapi import APIRouter, Depends
from starlette.responses import Response

from sitecomms.protocol import requests
from sitecomms.protocol.models import PushKeyView, PushSubscriptionList, PushSubscriptionView
from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.responses import JSON, no_content, responses
from sitecomms.server.api.schemas import PushSubscriptionRequest
from sitecomms.server.services.push import PushSubscriptions
from sitecomms.server.services.visibility import Viewer


def install(api: APIRouter, subscriptions: PushSubscriptions, authenticate: Authenticator) -> None:
    tags: list[str | Enum] = ["push"]

    @api.get("/v1/push/key", tags=tags, response_model=PushKeyView, responses=responses())
    async def public_key(viewer: Viewer = Depends(authenticate)) -> JSON:
        """The VAPID public key to subscribe with (`applicationServerKey`); the same for every device.
        (Public, but like every /v1 route it answers signed-in callers only.)"""
        return JSON(subscriptions.public_key())

    @api.post(
        "/v1/push/subscriptions",
        tags=tags,
        status_code=201,
        response_model=PushSubscriptionView,
        responses=responses(409),
    )
    async def subscribe(body: PushSubscriptionRequest, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Notify this device (the caller's session) of new messages at `endpoint`: what
        `PushSubscription.toJSON()` gives. 201 when new; 200 with the same id for an endpoint
        already registered (moved to this session if it was another's). The subscription ends
        with the session. `endpoint` must be an https URL of a public host."""
        request = requests.PushSubscriptionRequest(
            endpoint=body.endpoint,
            keys=requests.PushKeys(p256dh=body.keys.p256dh, auth=body.keys.auth),
            expirationTime=body.expirationTime,
        )
        view, created = await subscriptions.subscribe(viewer, request)
        return JSON(view, status_code=201 if created else 200)

    @api.get("/v1/push/subscriptions", tags=tags, response_model=PushSubscriptionList, responses=responses())
    async def mine(viewer: Viewer = Depends(authenticate)) -> JSON:
        """The caller's devices with notifications on; `current` marks this one."""
        return JSON(await subscriptions.mine(viewer))

    @api.delete("/v1/push/subscriptions/{subscription_id}", tags=tags, status_code=204, responses=responses(404))
    async def unsubscribe(subscription_id: uuid.UUID, viewer: Viewer = Depends(authenticate)) -> Response:
        """Turn notifications off for one of the caller's devices."""
        await subscriptions.unsubscribe(viewer, str(subscription_id))
        return no_content()
