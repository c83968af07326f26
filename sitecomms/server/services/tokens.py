"""Access tokens: short-lived HS256 JWTs naming a session, signed by the keyring's newest key.

Claims: `sub` (user), `org_id`, `role`, `sid` (session), `iat`, `exp`, `jti` (unique, so a
token refreshed within the second it was issued is not the same string); the header's `kid` names
the key, so keys rotate (server/keys.py) while tokens signed by an older key stay valid until
they expire. A valid signature proves only that the server issued the token once: whether the
session is still live and the claims still true is decided per request by `access.Access`,
from the database. Verified signatures are remembered (a bounded map from the token string to
its claims) so a client sending many requests pays for the HMAC once; each use still checks
the expiry. The map is cleared whenever it fills up.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import jwt

from sitecomms.protocol.enums import Role
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.store.types import utcnow

_ALGORITHM = "HS256"
_REMEMBERED = 10_000
_INVALID = "invalid access token"


class SigningKeys(Protocol):
    """What tokens need of the keyring (server/keys.py)."""

    @property
    def signing(self) -> tuple[str, bytes]: ...

    def find(self, kid: str) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    org_id: str
    role: Role
    session_id: str
    expires_at: float  # Unix time


class Tokens:
    def __init__(self, keys: SigningKeys, ttl: timedelta) -> None:
        self._keys = keys
        self.ttl = ttl
        self._verified: dict[str, Claims] = {}

    def issue(
        self, *, user_id: str, org_id: str, role: Role, session_id: str, ttl: timedelta | None = None
    ) -> tuple[str, datetime]:
        now = utcnow()
        expires_at = now + (ttl or self.ttl)
        claims = {
            "sub": user_id,
            "org_id": org_id,
            "role": role.value,
            "sid": session_id,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": secrets.token_urlsafe(9),  # two tokens issued in one second are still two tokens
        }
        kid, key = self._keys.signing
        token = jwt.encode(claims, key, algorithm=_ALGORITHM, headers={"kid": kid})
        return token, expires_at.replace(microsecond=0)

    def verify(self, token: str) -> Claims:
        """The claims of a token this server signed and that has not expired; else Unauthenticated."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.expires_at:
                return known
            del self._verified[token]
        claims = self._verify(token)
        if len(self._verified) >= _REMEMBERED:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.find(kid) if isinstance(kid, str) and kid else None
            if key is None:
                raise Unauthenticated(_INVALID)
            claims = jwt.decode(
                token, key, algorithms=[_ALGORITHM], options={"require": ["sub", "org_id", "role", "sid", "exp"]}
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("access token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(_INVALID) from exc
        fields = [claims.get(name) for name in ("sub", "org_id", "role", "sid")]
        if not all(isinstance(value, str) and value for value in fields):
            raise Unauthenticated(_INVALID)
        sub, org_id, role, sid = (str(value) for value in fields)
        try:
            return Claims(sub, org_id, Role(role), sid, float(claims["exp"]))
        except (ValueError, TypeError) as exc:
            raise Unauthenticated(_INVALID) from exc
