"""`GET /v1/audit`: an admin's read of their organisation's audit log, newest first."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query

from sitecomms.protocol import limits
from sitecomms.protocol.enums import AuditKind
from sitecomms.protocol.models import AuditPage
from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.services.audit_log import AuditLog
from sitecomms.server.services.visibility import Viewer


def install(api: APIRouter, audit_log: AuditLog, authenticate: Authenticator) -> None:
    @api.get("/v1/audit", tags=["audit"], response_model=AuditPage, responses=responses(403))
    async def audit_page(
        user_id: uuid.UUID | None = Query(None, description="Only the events about this user"),
        kind: AuditKind | None = Query(None, description="Only the events of this kind"),
        before: int | None = Query(None, ge=1, le=2**63 - 1, description="`next_before` of the previous page"),
        limit: int = Query(limits.AUDIT_PAGE_DEFAULT, ge=1, le=limits.AUDIT_PAGE_MAX),
        viewer: Viewer = Depends(authenticate),
    ) -> JSON:
        """Admins: sign-ins (and failed ones, with the address), revoked sessions and account
        changes in their org, newest first; ask again with `before=next_before` while `has_more`."""
        page = await audit_log.page(
            viewer, user_id=None if user_id is None else str(user_id), kind=kind, before=before, limit=limit
        )
        return JSON(page)
