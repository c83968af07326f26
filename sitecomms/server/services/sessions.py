"""Sessions: one per signed-in device, with a refresh token that rotates on every use.

A refresh token is `<session id>.<secret>`, opaque to clients. Only the SHA-256 of the current
secret is stored. Each refresh replaces the secret by the next one of the session's chain,
`next = HMAC-SHA256(refresh key, session id . secret)`, keyed by the key file's refresh key
(server/keys.py), so nobody holding only the database can compute one. Presented with a secret:
- the current one: rotate (one row update, guarded by the generation, so two concurrent uses
  of one token cannot both win; a loser is answered the winner's successor) and answer a new
  access token and the next refresh token;
- the one just before it, within `retry_grace` of the rotation: the answer to that rotation was
  probably lost on a bad link, so it is answered again (the same next token, recomputed), not
  treated as theft;
- any older one of the chain (found by walking it forward, at most `_CHAIN_WALK` steps): the
  token was copied and both copies used. The session is revoked (theft detection): every
  device holding any of its tokens is signed out, and the event is audited;
- anything else: refused, without revoking (a guess must not sign anyone out).
A session unused for `idle_ttl` (default 30 days) expires. A session may rotate at most 100
times more than once a second on average since it began (`_ROTATION_BURST`): a thief cannot
rotate past the walk, which would make the owner's old token look like a guess, in less than
hours. A refusal of a guess says nothing of the session (signed out, deactivated).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sitecomms.protocol.enums import AuditKind
from sitecomms.store import access_changes, audit, push, sessions, users
from sitecomms.store.database import Connection
from sitecomms.store.rows import SessionRow, UserRow
from sitecomms.store.types import utcnow

_CHAIN_WALK = 10_000
# A session rotates at most `_ROTATION_BURST` times more than once a second on average since it
# began (a client refreshes every few minutes), so a thief cannot rotate a stolen session past
# the chain walk, making the owner's old token unrecognisable, in less than hours.
_ROTATION_BURST = 100
TOO_FAST = "refreshing too fast; retry in a second"
INVALID = "invalid refresh token"
_SECRET_BYTES = 32


class RevokeReason:
    SIGNED_OUT = "signed_out"
    REVOKED = "revoked"
    REUSED = "refresh_reused"
    EXPIRED = "expired"
    DEACTIVATED = "deactivated"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a request came from, as recorded for sessions and the audit log."""

    address: str
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The outcome of a refresh: a session to issue an access token for, or why not."""

    user: UserRow | None
    session_id: str
    refresh_token: str
    refusal: str | None


def _hash(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def _encode(session_id: str, secret: bytes) -> str:
    return f"{session_id}.{base64.urlsafe_b64encode(secret).rstrip(b'=').decode()}"


def _decode(token: str) -> tuple[str, bytes] | None:
    session_id, dot, encoded = token.partition(".")
    if not dot or len(token) > 200:
        return None
    try:
        uuid.UUID(session_id)
        secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:
        return None
    return (session_id, secret) if len(secret) == _SECRET_BYTES else None


class RefreshChain:
    """The secrets of a session, each derived from the one before with the refresh key."""

    def __init__(self, refresh_key: bytes) -> None:
        self._key = refresh_key

    def next(self, session_id: str, secret: bytes) -> bytes:
        return hmac.new(self._key, session_id.encode() + b"." + secret, hashlib.sha256).digest()

    def steps_behind(self, session: SessionRow, secret: bytes) -> int | None:
        """How many rotations ago `secret` was current (0: it is); None if it is not of this chain."""
        for behind in range(min(session.generation, _CHAIN_WALK) + 1):
            if hmac.compare_digest(_hash(secret), session.refresh_hash):
                return behind
            secret = self.next(session.id, secret)
        return None


def start_session(conn: Connection, user: UserRow, *, device: str, peer: Peer, now: datetime) -> str:
    """Insert a session for `user`; its first refresh token."""
    session_id = str(uuid.uuid4())
    secret = secrets.token_bytes(_SECRET_BYTES)
    sessions.insert_session(
        conn,
        SessionRow(
            id=session_id,
            org_id=user.org_id,
            user_id=user.id,
            device=device,
            refresh_hash=_hash(secret),
            generation=0,
            created_at=now,
            last_used_at=now,
            rotated_at=now,
            last_address=peer.address,
            revoked_at=None,
            revoked_reason=None,
        ),
    )
    return _encode(session_id, secret)


def revoke_session(conn: Connection, session: SessionRow, *, reason: str, now: datetime) -> bool:
    """Revoke one session (and delete its push subscriptions) and log the access change;
    False if it was already revoked."""
    if not sessions.revoke(conn, session.id, now=now, reason=reason):
        return False
    push.delete_subscriptions_of_session(conn, session.id)  # an ended session is notified of nothing
    access_changes.record(conn, at=now, user_id=session.user_id, session_id=session.id)
    return True


def revoke_user_sessions(conn: Connection, user_id: str, *, reason: str, now: datetime, keep: str = "") -> int:
    """Revoke every session of the user but `keep` (deleting their push subscriptions), logging
    the access change; how many."""
    revoked = sessions.revoke_all_of(conn, user_id, now=now, reason=reason, keep=keep)
    push.delete_subscriptions_of_user(conn, user_id, keep_session=keep)
    access_changes.record(conn, at=now, user_id=user_id)
    return revoked


def _rotated_from(conn: Connection, session_id: str, following: bytes) -> bool:
    """Whether a concurrent refresh (committed while this one waited for the row) rotated the
    session from the same secret to `following`: then this use is answered like a lost-answer
    retry, not as a failure the client would take for being signed out."""
    session = sessions.get_session(conn, session_id)
    return session is not None and session.revoked_at is None and session.refresh_hash == _hash(following)


class RefreshPolicy:
    def __init__(self, chain: RefreshChain, *, idle_ttl: timedelta, retry_grace: timedelta) -> None:
        self.chain = chain
        self.idle_ttl = idle_ttl
        self.retry_grace = retry_grace

    def refresh_txn(self, conn: Connection, token: str, peer: Peer) -> Refreshed:
        """One refresh, in one write transaction (see the module doc for the cases)."""
        now = utcnow()
        decoded = _decode(token)
        session = sessions.get_session(conn, decoded[0]) if decoded else None
        if decoded is None or session is None:
            return Refreshed(None, "", "", INVALID)
        session_id, secret = decoded
        behind = self.chain.steps_behind(session, secret)
        if behind is None:  # first: a guess learns nothing of the session's state
            return Refreshed(None, session_id, "", INVALID)
        if session.revoked_at is not None:
            return Refreshed(None, session_id, "", "this session was signed out; sign in again")
        user = users.get_user(conn, session.user_id)
        if user is None or not user.active:
            return Refreshed(None, session_id, "", "this account is deactivated")
        if session.last_used_at + self.idle_ttl < now:
            revoke_session(conn, session, reason=RevokeReason.EXPIRED, now=now)
            return Refreshed(None, session_id, "", "this session expired; sign in again")
        if behind == 0 and session.generation >= _ROTATION_BURST + (now - session.created_at).total_seconds():
            # Faster than any client refreshes: someone is trying to outrun the chain walk.
            return Refreshed(None, session_id, "", TOO_FAST)
        if behind == 0:
            following = self.chain.next(session_id, secret)
            rotated = sessions.rotate(
                conn,
                session_id,
                generation=session.generation,
                refresh_hash=_hash(following),
                now=now,
                address=peer.address,
            )
            if rotated or _rotated_from(conn, session_id, following):  # PostgreSQL: a concurrent use won
                return Refreshed(user, session_id, _encode(session_id, following), None)  # the same successor
            return Refreshed(None, session_id, "", INVALID)
        if behind == 1 and now - session.rotated_at <= self.retry_grace:
            sessions.touch(conn, session_id, now=now, address=peer.address)
            return Refreshed(user, session_id, _encode(session_id, self.chain.next(session_id, secret)), None)
        revoke_session(conn, session, reason=RevokeReason.REUSED, now=now)
        audit.record(
            conn,
            at=now,
            org_id=session.org_id,
            kind=AuditKind.REFRESH_REUSED,
            actor_id=session.user_id,
            subject_id=session.user_id,
            session_id=session_id,
            address=peer.address,
            detail=f'{{"rotations_behind": {behind}}}',
        )
        return Refreshed(None, session_id, "", "this refresh token was already used; the session is signed out")
