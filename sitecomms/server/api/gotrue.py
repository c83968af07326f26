"""GoTrue's sign-in endpoints, as supabase-js's auth client calls them, on SiteComms sessions.

`POST /auth/v1/token?grant_type=password` (`{email, password}`) is `SignIn.login` (the same
throttle, hashing limit and audit as `/v1/auth/login`); `grant_type=refresh_token`
(`{refresh_token}`) is `SignIn.refresh` (single-use rotation, reuse detection);
`POST /auth/v1/logout` is `SignIn.revoke_all` for GoTrue's default `scope=global` (every
session of the user), `SignIn.sign_out` for `scope=local`, and `SignIn.revoke_all` with this
session kept for `scope=others`; `GET /auth/v1/user` is the caller, resolved by the
one `Authenticator`. Answers have GoTrue's session shape (`access_token`, `token_type`,
`expires_in`, `expires_at` in Unix seconds, `refresh_token`, `user`) and its error shape
(`{"code": <HTTP status>, "error_code", "msg"}`, which auth-js reads as `AuthApiError`): a
wrong password is 400 `invalid_credentials`, as GoTrue answers it. `error_body` gives every
failure on these paths that shape (errors.py calls it for any path under `PREFIX`). The
`apikey` header supabase-js sends is ignored: an anon key is public, and everything here is
authorised by the user's password or token. The routes are left out of the OpenAPI schema:
they are GoTrue's contract (its shapes, not SiteComms' error body), documented in
docs/migrating-from-supabase.md and tested in tests/server/realtime/test_supabase.py.
"""

from __future__ import annotations

import time
from enum import Enum

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.models import TokenView, UserView
from sitecomms.server import logs
from sitecomms.server.api.auth import Authenticator, peer
from sitecomms.server.api.responses import JSON, no_content
from sitecomms.server.services.accounts import Accounts
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.sessions import Peer
from sitecomms.server.services.signin import SignIn
from sitecomms.server.services.visibility import Viewer

PREFIX = "/auth/v1/"
AUDIENCE = "authenticated"

# SiteComms' error codes as GoTrue names them (auth-js exposes them as `error.code`)
_GOTRUE_CODES = {
    ErrorCode.UNAUTHENTICATED: (403, "bad_jwt"),
    ErrorCode.VALIDATION_FAILED: (400, "validation_failed"),
    ErrorCode.MALFORMED_REQUEST: (400, "bad_json"),
    ErrorCode.RATE_LIMITED: (429, "over_request_rate_limit"),
    ErrorCode.NOT_FOUND: (404, "not_found"),
}


def error_body(code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> JSON:
    status, gotrue_code = _GOTRUE_CODES.get(code, (code.http_status, code.value))
    return _error(status, gotrue_code, message, headers)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSON:
    return JSON({"code": status, "error_code": code, "msg": message}, status_code=status, headers=headers)


class TokenRequest(BaseModel):
    """Both grants' bodies (supabase-js also sends `gotrue_meta_security`, ignored)."""

    model_config = ConfigDict(extra="ignore")

    email: str | None = None
    password: str | None = None
    refresh_token: str | None = None


def gotrue_user(user: UserView) -> dict[str, object]:
    at = user.created_at
    return {
        "id": user.id,
        "aud": AUDIENCE,
        "role": AUDIENCE,
        "email": user.email,
        "email_confirmed_at": at,
        "phone": "",
        "confirmed_at": at,
        "last_sign_in_at": None,
        "app_metadata": {"provider": "email", "providers": ["email"], "org_id": user.org_id, "role": user.role.value},
        "user_metadata": {"display_name": user.display_name, "org_id": user.org_id, "role": user.role.value},
        "identities": [],
        "created_at": at,
        "updated_at": at,
        "is_anonymous": False,
    }


def _session(view: TokenView) -> JSON:
    expires_at = int(view.expires_at.timestamp())
    return JSON(
        {
            "access_token": view.access_token,
            "token_type": "bearer",
            "expires_in": max(1, expires_at - int(time.time())),
            "expires_at": expires_at,
            "refresh_token": view.refresh_token,
            "user": gotrue_user(view.user),
        }
    )


def install(api: APIRouter, signin: SignIn, accounts: Accounts, authenticate: Authenticator) -> None:
    tags: list[str | Enum] = ["supabase-compatible auth"]

    @api.post("/auth/v1/token", tags=tags, include_in_schema=False)
    async def token(
        body: TokenRequest,
        grant_type: str = Query(..., max_length=32, description="password or refresh_token"),
        client: Peer = Depends(peer),
    ) -> Response:
        """GoTrue's token endpoint: sign in with a password, or refresh (supabase-js auth)."""
        if grant_type == "password":
            if not isinstance(body.email, str) or not isinstance(body.password, str):
                return _error(400, "validation_failed", "email and password are required")
            try:
                signed_in = await signin.login(body.email, body.password, device=None, peer=client)
            except Unauthenticated:
                return _error(400, "invalid_credentials", "Invalid login credentials")
        elif grant_type == "refresh_token":
            if not isinstance(body.refresh_token, str) or not body.refresh_token:
                return _error(400, "validation_failed", "refresh_token is required")
            try:
                signed_in = await signin.refresh(body.refresh_token, client)
            except Unauthenticated as exc:
                reused = "already used" in exc.message
                code = "refresh_token_already_used" if reused else "refresh_token_not_found"
                return _error(400, code, f"Invalid Refresh Token: {exc.message}")
        else:
            return _error(400, "unsupported_grant_type", "grant_type must be password or refresh_token")
        logs.identify(signed_in.user.id, signed_in.user.org_id)
        return _session(signed_in)

    @api.post("/auth/v1/logout", tags=tags, status_code=204, include_in_schema=False)
    async def logout(
        viewer: Viewer = Depends(authenticate),
        scope: str = Query("global", max_length=16, description="global: every session; local: this; others"),
    ) -> Response:
        """GoTrue's scopes: `global` (supabase-js's default) signs every session of the caller
        out, on every device; `local` this session; `others` the caller's other sessions, this
        one kept (supabase-js keeps its session then)."""
        if scope == "global":
            await signin.revoke_all(viewer)
        elif scope == "local":
            await signin.sign_out(viewer)
        elif scope == "others":
            await signin.revoke_all(viewer, keep_current=True)
        else:
            return _error(400, "validation_failed", "scope must be global, local or others")
        return no_content()

    @api.get("/auth/v1/user", tags=tags, include_in_schema=False)
    async def user(viewer: Viewer = Depends(authenticate)) -> JSON:
        """The signed-in user, in GoTrue's shape."""
        return JSON(gotrue_user((await accounts.me(viewer)).user))
