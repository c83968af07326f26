"""Access tokens: HS256 JWTs with claims `sub`, `org_id`, `role`, `iat` and `exp`.

Verified tokens are remembered (a bounded map from the token string to its viewer and expiry)
so a client sending many requests is verified once, not on every request; each use still
checks the expiry. The map is cleared whenever it fills up.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import jwt

from sitecomms.protocol.enums import Role
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.visibility import Viewer
from sitecomms.store.types import utcnow

_ALGORITHM = "HS256"
_REMEMBERED = 10_000


class Tokens:
    def __init__(self, secret: str, ttl: timedelta) -> None:
        self._secret = secret
        self._ttl = ttl
        self._verified: dict[str, tuple[Viewer, float]] = {}

    def issue(self, *, user_id: str, org_id: str, role: Role, ttl: timedelta | None = None) -> tuple[str, datetime]:
        now = utcnow()
        expires_at = now + (ttl or self._ttl)
        claims = {
            "sub": user_id,
            "org_id": org_id,
            "role": role.value,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM), expires_at.replace(microsecond=0)

    def verify(self, token: str) -> Viewer:
        return self.verify_until(token)[0]

    def verify_until(self, token: str) -> tuple[Viewer, float]:
        """The viewer a valid token names, and when it expires (a Unix timestamp)."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known
            del self._verified[token]
        verified = self._verify(token)
        if len(self._verified) >= _REMEMBERED:
            self._verified.clear()
        self._verified[token] = verified
        return verified

    def _verify(self, token: str) -> tuple[Viewer, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                options={"require": ["sub", "org_id", "role", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("access token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid access token") from exc
        sub, org_id, role = claims.get("sub"), claims.get("org_id"), claims.get("role")
        if not isinstance(sub, str) or not isinstance(org_id, str) or not isinstance(role, str):
            raise Unauthenticated("invalid access token")
        try:
            return Viewer(user_id=sub, org_id=org_id, role=Role(role)), float(claims["exp"])
        except (ValueError, TypeError) as exc:
            raise Unauthenticated("invalid access token") from exc
