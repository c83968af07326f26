"""Who is calling: the one `Authenticator` every route names as its caller, and `POST /v1/auth/login`.

`Authenticator` reads the bearer token of a request and resolves it to a `Viewer`; every API
route declares its caller as `viewer: Viewer = Depends(authenticate)` with the one instance
`create_app` makes, and `route.Route` calls it before anything else of the request is looked
at. Whatever authentication checks are added later go here (or below it, in `Tokens`), so
they apply to every route by construction. The `HTTPBearer` scheme is declared so that
OpenAPI documents the security requirement; `Route` does not run it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from sitecomms.protocol.models import TokenView
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.api.schemas import LoginRequest
from sitecomms.server.services.accounts import Accounts
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.tokens import Tokens
from sitecomms.server.services.visibility import Viewer

_SCHEME = HTTPBearer(auto_error=False, description="An access token from POST /v1/auth/login")
_MISSING = "missing bearer token (Authorization: Bearer <token>)"


def bearer_token(connection: HTTPConnection) -> str:
    """The credentials of `Authorization: Bearer <token>`; Unauthenticated when there are none."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    token = credentials.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(_MISSING)
    return token


class Authenticator:
    """The caller of a request, from its bearer token (see the module doc)."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens

    async def __call__(
        self, connection: HTTPConnection, _documented: HTTPAuthorizationCredentials | None = Depends(_SCHEME)
    ) -> Viewer:
        return self._tokens.verify(bearer_token(connection))


def install(api: APIRouter, accounts: Accounts) -> None:
    @api.post("/v1/auth/login", tags=["auth"], response_model=TokenView, responses=responses())
    async def login(body: LoginRequest) -> JSON:
        """Exchange email and password for an access token (JWT, HS256)."""
        return JSON(await accounts.login(body.email, body.password))
