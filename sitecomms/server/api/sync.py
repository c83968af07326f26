"""`GET /v1/sync`: the caller's view of the org stream after a cursor."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from sitecomms.protocol import limits
from sitecomms.protocol.models import SyncPage
from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.conversations import parse_cursor
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.services.sync import Sync
from sitecomms.server.services.visibility import Viewer


def install(api: APIRouter, sync: Sync, authenticate: Authenticator) -> None:
    @api.get("/v1/sync", tags=["sync"], response_model=SyncPage, responses=responses(409))
    async def pull(
        cursor: str | None = Query(None, max_length=100, description="`next_cursor` of the previous page"),
        limit: int = Query(limits.SYNC_PAGE_DEFAULT, ge=1, le=limits.SYNC_PAGE_MAX),
        viewer: Viewer = Depends(authenticate),
    ) -> JSON:
        """Every change the caller may see after `cursor`, in stream order.

        Without a cursor: a snapshot (`reset: true`) of every visible conversation with its
        newest 100 messages, read statuses and names. Keep `next_cursor`; ask again while
        `has_more`.
        """
        return JSON(await sync.page(viewer, parse_cursor(cursor, viewer), limit))
