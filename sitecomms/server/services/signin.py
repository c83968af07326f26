"""Signing in and out: passwords to sessions, refresh, and each user's list of their devices.

`login` checks the password (behind the throttle and the hashing limit), opens a session for
the device and answers an access token with the session's first refresh token. `refresh`
rotates it (services/sessions.py says how reuse is caught). Sign-ins (both outcomes), reuse,
and revocations are audited with the client's address.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import timedelta
from typing import Protocol

import orjson

from sitecomms.protocol import rules
from sitecomms.protocol.enums import AuditKind, Role
from sitecomms.protocol.models import SessionList, TokenView
from sitecomms.server.services import sessions as sessions_service
from sitecomms.server.services import views
from sitecomms.server.services.errors import InvalidInput, NotFound, Throttled, Unauthenticated, obey
from sitecomms.server.services.passwords import Passwords
from sitecomms.server.services.publisher import Publisher
from sitecomms.server.services.sessions import (
    Peer,
    RefreshPolicy,
    RevokeReason,
    revoke_session,
    revoke_user_sessions,
    start_session,
)
from sitecomms.server.services.tokens import Tokens
from sitecomms.server.services.visibility import Viewer, require_user_visible
from sitecomms.store import audit, sessions, users
from sitecomms.store.database import Connection, Database
from sitecomms.store.rows import SessionRow, UserRow
from sitecomms.store.types import utcnow

WRONG = "wrong email or password"
OPERATOR_DEVICE = "operator token (sitecomms token)"
_DEVICE_CHARS = 100


class LoginThrottle(Protocol):
    """Counts failed sign-ins per account and per address (services/throttle.py)."""

    async def check(self, email: str, address: str) -> None:
        """Raise `Throttled` while either is blocked."""
        ...

    async def failed(self, email: str, address: str) -> None: ...

    async def succeeded(self, email: str, address: str) -> None: ...


class NoThrottle:
    async def check(self, email: str, address: str) -> None:
        return None

    async def failed(self, email: str, address: str) -> None:
        return None

    async def succeeded(self, email: str, address: str) -> None:
        return None


def detail(**fields: object) -> str:
    """An audit event's detail, as stored (JSON)."""
    return orjson.dumps(fields).decode()


def device_label(requested: str | None, peer: Peer) -> str:
    """The device's name in "my devices": as the client named it, else its user agent's."""
    if requested is not None:
        return obey(rules.org_name, "device", requested)[:_DEVICE_CHARS]
    try:
        return rules.org_name(peer.user_agent)[:_DEVICE_CHARS]
    except rules.RuleViolation:
        return "unnamed device"


class SignIn:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        tokens: Tokens,
        refresh: RefreshPolicy,
        publisher: Publisher,
        throttle: LoginThrottle,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._tokens = tokens
        self._refresh = refresh
        self._publisher = publisher
        self._throttle = throttle
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def tokens(self) -> Tokens:
        return self._tokens

    def _turn_of(self, email: str) -> asyncio.Lock:
        lock = self._turns.get(email)
        if lock is None:
            lock = self._turns[email] = asyncio.Lock()
        return lock

    async def login(self, email: str, password: str, *, device: str | None, peer: Peer) -> TokenView:
        try:
            email = obey(rules.login_email, "email", email)
            password = obey(rules.login_password, "password", password)
        except InvalidInput:
            email = ""
        label = device_label(device, peer)
        # One attempt per account at a time in this process: check, verify and count as one, so
        # a burst of guesses cannot all pass the check before the first failure is counted.
        async with self._turn_of(email):
            await self._throttle.check(email, peer.address)
            user = await self._db.read("login_lookup", users.get_user_by_email, email) if email else None
            matches = await self._passwords.verify(user.password_hash if user else None, password)
            if user is None or not matches or not user.active:
                await self._throttle.failed(email, peer.address)
                await self._db.write("audit_login_failed", _login_failed_txn, user, email, peer)
                raise Unauthenticated(WRONG)
            await self._throttle.succeeded(email, peer.address)
        upgraded = await self._passwords.hash(password) if self._passwords.needs_rehash(user.password_hash) else None
        refresh_token, session_id = await self._db.write(
            "login", _login_txn, user, device=label, peer=peer, upgraded_hash=upgraded
        )
        return self._token_view(user, session_id, refresh_token)

    async def refresh(self, refresh_token: str, peer: Peer) -> TokenView:
        await self._throttle.check("", peer.address)  # guesses count against the address, as at sign-in
        outcome = await self._db.write("refresh", self._refresh.refresh_txn, refresh_token, peer)
        if outcome.user is None:
            if outcome.refusal and "already used" in outcome.refusal:
                await self._publisher.access_changed()
            if outcome.refusal == sessions_service.TOO_FAST:
                raise Throttled(outcome.refusal, retry_after=1)
            if outcome.refusal == sessions_service.INVALID:
                await self._throttle.failed("", peer.address)
            raise Unauthenticated(outcome.refusal or sessions_service.INVALID)
        return self._token_view(outcome.user, outcome.session_id, outcome.refresh_token)

    def _token_view(self, user: UserRow, session_id: str, refresh_token: str) -> TokenView:
        token, expires_at = self._tokens.issue(
            user_id=user.id, org_id=user.org_id, role=Role(user.role), session_id=session_id
        )
        return TokenView(
            access_token=token,
            token_type="bearer",
            expires_at=expires_at,
            refresh_token=refresh_token,
            refresh_idle_expires_in=int(self._refresh.idle_ttl.total_seconds()),
            session_id=session_id,
            user=views.user_view(user),
        )

    async def mint_token(self, email: str, ttl_seconds: int | None = None) -> TokenView:
        """A session and token for a user without their password (operator CLI only)."""
        user = await self._db.read("mint_token_lookup", users.get_user_by_email, obey(rules.email, "email", email))
        if user is None:
            raise NotFound(f"no user with email {email}")
        if not user.active:
            raise InvalidInput(f"{email} is deactivated")
        refresh_token, session_id = await self._db.write(
            "mint_token", _login_txn, user, device=OPERATOR_DEVICE, peer=Peer("operator"), upgraded_hash=None
        )
        view = self._token_view(user, session_id, refresh_token)
        if not ttl_seconds:
            return view
        token, expires_at = self._tokens.issue(
            user_id=user.id,
            org_id=user.org_id,
            role=Role(user.role),
            session_id=session_id,
            ttl=timedelta(seconds=ttl_seconds),
        )
        return TokenView(
            token, "bearer", expires_at, refresh_token, view.refresh_idle_expires_in, session_id, view.user
        )

    # --- sessions ------------------------------------------------------------------------

    async def sessions_of(self, viewer: Viewer, user_id: str | None = None) -> SessionList:
        """The caller's devices, or (admins) those of a user of their org."""
        rows = await self._db.read("list_sessions", _sessions_txn, viewer, user_id or viewer.user_id)
        idle = self._refresh.idle_ttl
        now = utcnow()
        return SessionList(
            sessions=[
                views.session_view(row, current=row.id == viewer.session_id)
                for row in rows
                if row.last_used_at + idle >= now
            ]
        )

    async def revoke(self, viewer: Viewer, session_id: str) -> None:
        """Sign one device out: the caller's own, or (admins) any of their org's."""
        await self._db.write("revoke_session", _revoke_txn, viewer, session_id)
        await self._publisher.access_changed()

    async def sign_out(self, viewer: Viewer) -> None:
        await self._db.write("sign_out", _revoke_txn, viewer, viewer.session_id, RevokeReason.SIGNED_OUT)
        await self._publisher.access_changed()

    async def revoke_all(self, viewer: Viewer, user_id: str | None = None, *, keep_current: bool = False) -> int:
        """Sign every device of the caller (or, admins, of a user of their org) out."""
        keep = viewer.session_id if keep_current and user_id in (None, viewer.user_id) else ""
        revoked = await self._db.write("revoke_all_sessions", _revoke_all_txn, viewer, user_id or viewer.user_id, keep)
        await self._publisher.access_changed()
        return revoked


def _login_failed_txn(conn: Connection, user: UserRow | None, email: str, peer: Peer) -> None:
    audit.record(
        conn,
        at=utcnow(),
        org_id=user.org_id if user else None,
        kind=AuditKind.SIGN_IN_FAILED,
        subject_id=user.id if user else None,
        address=peer.address,
        detail=detail(email=email[:254], reason="deactivated" if user is not None and not user.active else "wrong"),
    )


def _login_txn(
    conn: Connection, user: UserRow, *, device: str, peer: Peer, upgraded_hash: str | None
) -> tuple[str, str]:
    now = utcnow()
    if upgraded_hash is not None:
        users.set_password_hash(conn, user.id, upgraded_hash)
    refresh_token = start_session(conn, user, device=device, peer=peer, now=now)
    session_id = refresh_token.partition(".")[0]
    audit.record(
        conn,
        at=now,
        org_id=user.org_id,
        kind=AuditKind.SIGN_IN,
        actor_id=user.id,
        subject_id=user.id,
        session_id=session_id,
        address=peer.address,
        detail=detail(device=device, rehashed=upgraded_hash is not None),
    )
    return refresh_token, session_id


def _target(conn: Connection, viewer: Viewer, user_id: str) -> UserRow:
    """The user whose sessions are asked for: the caller, or for an admin anyone of their org."""
    if user_id != viewer.user_id and not viewer.is_admin:
        raise NotFound("no such user")
    return require_user_visible(viewer, users.get_user(conn, user_id))


def _sessions_txn(conn: Connection, viewer: Viewer, user_id: str) -> list[SessionRow]:
    return sessions.live_sessions_of(conn, _target(conn, viewer, user_id).id)


def _revoke_txn(conn: Connection, viewer: Viewer, session_id: str, reason: str = RevokeReason.REVOKED) -> None:
    session = sessions.get_session(conn, session_id)
    if session is None or session.revoked_at is not None:
        raise NotFound("no such session")
    if session.user_id != viewer.user_id:
        try:
            _target(conn, viewer, session.user_id)
        except NotFound:
            raise NotFound("no such session") from None
    now = utcnow()
    revoke_session(conn, session, reason=reason, now=now)
    audit.record(
        conn,
        at=now,
        org_id=session.org_id,
        kind=AuditKind.SIGN_OUT if reason == RevokeReason.SIGNED_OUT else AuditKind.SESSION_REVOKED,
        actor_id=viewer.user_id,
        subject_id=session.user_id,
        session_id=session.id,
        detail=detail(device=session.device),
    )


def _revoke_all_txn(conn: Connection, viewer: Viewer, user_id: str, keep: str) -> int:
    target = _target(conn, viewer, user_id)
    now = utcnow()
    revoked = revoke_user_sessions(conn, target.id, reason=RevokeReason.REVOKED, now=now, keep=keep)
    audit.record(
        conn,
        at=now,
        org_id=target.org_id,
        kind=AuditKind.SESSIONS_REVOKED,
        actor_id=viewer.user_id,
        subject_id=target.id,
        session_id=viewer.session_id or None,
        detail=detail(count=revoked, kept_current=bool(keep)),
    )
    return revoked
