"""Who is calling: the one `Authenticator` every route names as its caller, and the sign-in,
refresh, sign-out and "my devices" routes.

`Authenticator` reads the bearer token of a request and resolves it, through `access.Access`,
to a `Viewer` from the database (session live, user active, claims as stored); every API route
declares its caller as `viewer: Viewer = Depends(authenticate)` with the one instance
`create_app` makes, and `route.Route` calls it before anything else of the request is looked
at, so every check here applies to every route by construction. The `HTTPBearer` scheme is
declared so that OpenAPI documents the security requirement; `Route` does not run it.
`peer` is the client's address and user agent (`Depends(peer)`), recorded by sessions and
the audit log. Once the caller is known (a verified token, a sign-in, a refresh) the request's
log context names their user and org (`logs.identify`).
"""

from __future__ import annotations

import uuid
from enum import Enum

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.responses import Response

from sitecomms.protocol.models import RevokedCount, SessionList, TokenView
from sitecomms.server import logs
from sitecomms.server.api.responses import JSON, no_content, responses
from sitecomms.server.api.schemas import LoginRequest, RefreshRequest
from sitecomms.server.services.access import Access
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.sessions import Peer
from sitecomms.server.services.signin import SignIn
from sitecomms.server.services.visibility import Viewer

_SCHEME = HTTPBearer(auto_error=False, description="An access token from POST /v1/auth/login or /v1/auth/refresh")
_MISSING = "missing bearer token (Authorization: Bearer <token>)"


def bearer_token(connection: HTTPConnection) -> str:
    """The credentials of `Authorization: Bearer <token>`; Unauthenticated when there are none."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    token = credentials.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(_MISSING)
    return token


async def peer(connection: HTTPConnection) -> Peer:
    """Who is asking: the client's address (behind a trusted proxy, the one it forwarded; see
    docs/deployment.md) and user agent."""
    address = connection.client.host if connection.client else "unknown"
    return Peer(address=address[:64], user_agent=connection.headers.get("user-agent", "")[:200])


class Authenticator:
    """The caller of a request, from its bearer token (see the module doc)."""

    def __init__(self, access: Access) -> None:
        self._access = access

    async def __call__(
        self, connection: HTTPConnection, _documented: HTTPAuthorizationCredentials | None = Depends(_SCHEME)
    ) -> Viewer:
        viewer = await self._access.viewer(bearer_token(connection))
        logs.identify(viewer.user_id, viewer.org_id)  # the request's log records name the caller from here on
        return viewer


def install(api: APIRouter, signin: SignIn, authenticate: Authenticator) -> None:
    tags: list[str | Enum] = ["auth"]

    @api.post("/v1/auth/login", tags=tags, response_model=TokenView, responses=responses(429))
    async def login(body: LoginRequest, client: Peer = Depends(peer)) -> JSON:
        """Exchange email and password for an access token and this device's refresh token."""
        signed_in = await signin.login(body.email, body.password, device=body.device, peer=client)
        logs.identify(signed_in.user.id, signed_in.user.org_id)
        return JSON(signed_in)

    @api.post("/v1/auth/refresh", tags=tags, response_model=TokenView, responses=responses())
    async def refresh(body: RefreshRequest, client: Peer = Depends(peer)) -> JSON:
        """A new access token, and the refresh token that replaces the one given (single use)."""
        refreshed = await signin.refresh(body.refresh_token, client)
        logs.identify(refreshed.user.id, refreshed.user.org_id)
        return JSON(refreshed)

    @api.post("/v1/auth/logout", tags=tags, status_code=204, responses=responses())
    async def logout(viewer: Viewer = Depends(authenticate)) -> Response:
        """Sign this device out: its session, access and refresh tokens stop working."""
        await signin.sign_out(viewer)
        return no_content()

    @api.get("/v1/sessions", tags=tags, response_model=SessionList, responses=responses())
    async def my_sessions(viewer: Viewer = Depends(authenticate)) -> JSON:
        """My devices: every session signed in as me, most recently used first."""
        return JSON(await signin.sessions_of(viewer))

    @api.delete("/v1/sessions/{session_id}", tags=tags, status_code=204, responses=responses(404))
    async def revoke_session(session_id: uuid.UUID, viewer: Viewer = Depends(authenticate)) -> Response:
        """Sign one device out: one of mine, or (admins) one of a user of my org."""
        await signin.revoke(viewer, str(session_id))
        return no_content()

    @api.delete("/v1/sessions", tags=tags, response_model=RevokedCount, responses=responses())
    async def revoke_my_sessions(
        viewer: Viewer = Depends(authenticate),
        keep_current: bool = Query(False, description="Keep this device signed in"),
    ) -> JSON:
        """Sign all my devices out (this one too, unless `keep_current`)."""
        return JSON(RevokedCount(await signin.revoke_all(viewer, keep_current=keep_current)))

    @api.get("/v1/users/{user_id}/sessions", tags=["users"], response_model=SessionList, responses=responses(404))
    async def user_sessions(user_id: uuid.UUID, viewer: Viewer = Depends(authenticate)) -> JSON:
        """A user's devices (admins, for their org's users; anyone, for themself)."""
        return JSON(await signin.sessions_of(viewer, str(user_id)))

    @api.delete("/v1/users/{user_id}/sessions", tags=["users"], response_model=RevokedCount, responses=responses(404))
    async def revoke_user_sessions(user_id: uuid.UUID, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Sign every device of a user out (admins, for their org's users; e.g. a lost phone)."""
        return JSON(RevokedCount(await signin.revoke_all(viewer, str(user_id))))
