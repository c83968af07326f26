"""Sign-in (`POST /v1/auth/login`) and the bearer-token dependency every other route uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sitecomms.protocol.models import TokenView
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.api.schemas import LoginRequest
from sitecomms.server.services.accounts import Accounts
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.tokens import Tokens
from sitecomms.server.services.visibility import Viewer

ViewerDependency = Callable[..., Awaitable[Viewer]]


def bearer(tokens: Tokens) -> ViewerDependency:
    scheme = HTTPBearer(auto_error=False, description="An access token from POST /v1/auth/login")

    async def viewer(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> Viewer:
        # async: FastAPI runs a plain `def` dependency on a worker thread, a hop per request
        if credentials is None:
            raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        return tokens.verify(credentials.credentials)

    return viewer


def router(accounts: Accounts) -> APIRouter:
    api = APIRouter(prefix="/v1/auth", tags=["auth"])

    @api.post("/login", response_model=TokenView, responses=responses())
    async def login(body: LoginRequest) -> JSON:
        """Exchange email and password for an access token (JWT, HS256)."""
        return JSON(await accounts.login(body.email, body.password))

    return api
