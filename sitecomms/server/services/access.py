"""Authorisation from the database, every time: the session and user behind an access token.

`Access.viewer(token)` checks the token's signature (`Tokens`), then reads its session and the
session's user from the store, and accepts the caller only if the session is live, the user
active, and the token's user, org and role are what the database says; a token whose claims
disagree is refused (401) and the client refreshes it. The row read is cached per session, so a
busy client costs a dictionary lookup per request, not a query.

**Invalidation.** Every change to someone's access (revocation, deactivation, a role or
password change) is logged in `access_changes` in the same transaction. Each process follows
that log from the position it had when it started: a bus notice (`wake`) makes it look at
once, and it also looks every `poll_seconds` by itself, so a lost notice, a bus that is down or
a CLI command on the embedded database (whose memory bus reaches no server) delays it by at
most that. For each change it drops the user's cached rows and tells its listeners (the
realtime hub closes the sockets that lost access). Until the log's position is known, and
after a failed read of it, nothing is cached: every request reads the database. A row read
while an invalidation was processed is not cached either (it may predate the change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from sitecomms.protocol.enums import Role
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.tokens import Claims, Tokens
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import access_changes, sessions
from sitecomms.store.database import Database
from sitecomms.store.rows import AccessRow
from sitecomms.store.types import utcnow

log = logging.getLogger("sitecomms.access")

_CACHED = 100_000
_CHANGES_PAGE = 1000
_KEEP_CHANGES = timedelta(days=1)

GONE = "this session no longer exists; sign in again"
SIGNED_OUT = "this session was signed out; sign in again"
DEACTIVATED = "this account is deactivated"
STALE = "the access token no longer matches the account; refresh it"

Listener = Callable[[set[str]], None]  # the users whose access changed


def refusal(row: AccessRow | None, claims: Claims) -> str | None:
    """Why `row` (the database's word) refuses a token with `claims`; None if it accepts it."""
    if row is None:
        return GONE
    if row.revoked:
        return SIGNED_OUT
    if not row.active:
        return DEACTIVATED
    if row.user_id != claims.user_id or row.org_id != claims.org_id or row.role != claims.role.value:
        return STALE
    return None


class Access:
    def __init__(self, db: Database, tokens: Tokens, *, poll_seconds: float = 0.5) -> None:
        self._db = db
        self.tokens = tokens
        self._poll_seconds = poll_seconds
        self._rows: dict[str, AccessRow | None] = {}  # session id -> its row (None: no such session)
        self._sessions_of: dict[str, set[str]] = {}  # user id -> cached session ids
        self._followed = -1  # the last access change applied; -1: not known, cache nothing
        self._invalidations = 0
        self._wake = asyncio.Event()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    # --- authorising -----------------------------------------------------------------------

    async def viewer(self, token: str) -> Viewer:
        return (await self.session(token))[0]

    async def session(self, token: str) -> tuple[Viewer, float]:
        """The caller a token names, as the database has them, and when the token expires."""
        claims = self.tokens.verify(token)
        row = await self._row(claims.session_id)
        refused = refusal(row, claims)
        if refused is not None:
            raise Unauthenticated(refused)
        assert row is not None
        return Viewer(row.user_id, row.org_id, Role(row.role), row.session_id), claims.expires_at

    async def recheck(self, viewer: Viewer) -> str | None:
        """Why a socket authorised as `viewer` must close now; None if it may stay."""
        claims = Claims(viewer.user_id, viewer.org_id, viewer.role, viewer.session_id, 0.0)
        return refusal(await self._row(viewer.session_id), claims)

    async def _row(self, session_id: str) -> AccessRow | None:
        if session_id in self._rows:
            return self._rows[session_id]
        seen = self._invalidations
        row = await self._db.read("authorise", sessions.access, session_id)
        if self._followed >= 0 and seen == self._invalidations:
            self._remember(session_id, row)
        return row

    def _remember(self, session_id: str, row: AccessRow | None) -> None:
        if len(self._rows) >= _CACHED:
            self._forget_all()
        self._rows[session_id] = row
        if row is not None:
            self._sessions_of.setdefault(row.user_id, set()).add(session_id)

    def _forget_all(self) -> None:
        self._invalidations += 1
        self._rows.clear()
        self._sessions_of.clear()

    def _forget_user(self, user_id: str) -> None:
        self._invalidations += 1
        for session_id in self._sessions_of.pop(user_id, ()):
            self._rows.pop(session_id, None)

    # --- following the access-change log ---------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def wake(self) -> None:
        """A bus notice: an access change was committed somewhere."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="sitecomms-access-follower")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # fail closed: nothing cached until the log is read again
                if self._followed >= 0:
                    log.warning("reading the access-change log failed (%r); authorising from the database", exc)
                self._followed = -1
                self._forget_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    async def catch_up(self) -> None:
        """Apply every access change committed since the last call (the first call: start there)."""
        if self._followed < 0:
            self._forget_all()
            self._followed = await self._db.read("access_changes_head", access_changes.last_change)
            return
        while True:
            changes = await self._db.read("access_changes", access_changes.changes_after, self._followed, _CHANGES_PAGE)
            if not changes:
                return
            users = {user_id for _, user_id, _ in changes}
            for user_id in users:
                self._forget_user(user_id)
            self._followed = changes[-1][0]
            for listener in self._listeners:
                try:
                    listener(users)
                except Exception:
                    log.exception("an access-change listener failed")
            if len(changes) < _CHANGES_PAGE:
                return

    async def expire_log(self) -> int:
        """Drop access changes older than a day (every process has long applied them)."""
        return await self._db.write_background("access_changes_expire", access_changes.expire, utcnow() - _KEEP_CHANGES)
