"""Reading the audit log, and its retention.

Admins read their own organisation's events, newest first, filtered by the user they concern
(`subject_id`) and by kind; medics may not read it (403). The operator (CLI) reads any org's, or
every org's. Nothing here writes an event: the services record them in the transaction of the
action itself (store/audit.py). `expire(retention_days)` deletes events older than the
retention, and the access-change log's old entries with them; `start` runs it once at start-up
and then every `every_seconds`, logging (never raising) a failure, until `close`; a database
that is busy or away for now (`Unavailable`, say SQLite locked by a backup) is one warning line
and a sooner retry, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sitecomms.protocol import limits
from sitecomms.protocol.enums import AuditKind
from sitecomms.protocol.models import AuditPage
from sitecomms.server.services import views, visibility
from sitecomms.server.services.errors import Forbidden
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import audit
from sitecomms.store.database import Database
from sitecomms.store.errors import Unavailable
from sitecomms.store.types import utcnow

log = logging.getLogger("sitecomms.audit")

RETENTION_EVERY_SECONDS = 3600.0
_RETENTION_STEP_SECONDS = 300.0  # one retention pass never runs longer than this
_RETRY_UNAVAILABLE_SECONDS = 60.0  # after the database said "not now"

Expiry = Callable[[], Awaitable[int]]  # another log's expiry, run with the audit log's (how many rows went)


class AuditLog:
    def __init__(self, db: Database, *, expire_also: Expiry | None = None) -> None:
        self._db = db
        self._expire_also = expire_also
        self._task: asyncio.Task[None] | None = None

    async def page(
        self,
        viewer: Viewer,
        *,
        user_id: str | None = None,
        kind: AuditKind | None = None,
        before: int | None = None,
        limit: int = limits.AUDIT_PAGE_DEFAULT,
    ) -> AuditPage:
        """Admins: their org's events, newest first (a user of another org simply has none here)."""
        if not visibility.may_manage_users(viewer):
            raise Forbidden("only admins read the audit log")
        return await self._page(viewer.org_id, user_id=user_id, kind=kind, before=before, limit=limit)

    async def operator_page(
        self,
        org_id: str | None,
        *,
        user_id: str | None = None,
        kind: AuditKind | None = None,
        before: int | None = None,
        limit: int = limits.AUDIT_PAGE_DEFAULT,
    ) -> AuditPage:
        """The operator (CLI): one org's events, or (`org_id` None) every org's."""
        return await self._page(org_id, user_id=user_id, kind=kind, before=before, limit=limit)

    async def _page(
        self, org_id: str | None, *, user_id: str | None, kind: AuditKind | None, before: int | None, limit: int
    ) -> AuditPage:
        limit = max(1, min(limit, limits.AUDIT_PAGE_MAX))
        rows = await self._db.read(
            "audit_page",
            audit.page,
            org_id,
            before=before,
            limit=limit + 1,
            subject_id=user_id,
            kind=None if kind is None else kind.value,
        )
        has_more = len(rows) > limit
        events = [views.event_view(row) for row in rows[:limit]]
        return AuditPage(events=events, next_before=events[-1].id if has_more else None, has_more=has_more)

    # --- retention -----------------------------------------------------------------------

    async def expire(self, retention_days: int) -> int:
        """Delete the events older than `retention_days` (and the access-change log's old
        entries); how many audit events went."""
        cutoff = utcnow() - timedelta(days=retention_days)
        deleted = await self._db.write_background("audit_expire", audit.expire, cutoff)
        if self._expire_also is not None:
            await self._expire_also()
        return deleted

    def start(self, retention_days: int, *, every_seconds: float = RETENTION_EVERY_SECONDS) -> None:
        self._task = asyncio.create_task(self._retain(retention_days, every_seconds), name="sitecomms-audit-retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _retain(self, retention_days: int, every_seconds: float) -> None:
        while True:
            pause = every_seconds
            try:
                async with asyncio.timeout(_RETENTION_STEP_SECONDS):
                    deleted = await self.expire(retention_days)
                if deleted:
                    log.info("audit retention: %d event(s) older than %d days deleted", deleted, retention_days)
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:
                pause = min(every_seconds, _RETRY_UNAVAILABLE_SECONDS)
                log.warning("audit retention postponed (%s); trying again in %.0f s", exc, pause)
            except Exception:
                log.exception("audit retention failed; trying again in %.0f s", every_seconds)
            await asyncio.sleep(pause)
