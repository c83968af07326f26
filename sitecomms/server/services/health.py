"""Readiness: whether this process can serve (its database answers)."""

from __future__ import annotations

from sitecomms.server.services.errors import Unavailable
from sitecomms.store import errors as store_errors
from sitecomms.store.database import Database


class Health:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ready(self) -> str:
        """The database dialect if it answers; `Unavailable` otherwise."""
        try:
            await self._db.ping()
        except store_errors.Unavailable as exc:
            raise Unavailable(f"database not ready: {exc}") from exc
        return self._db.dialect
