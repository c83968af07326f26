"""`/v1/me` and the org directory (`/v1/users`), with admin-only user creation."""

from __future__ import annotations

import uuid
from enum import Enum

from fastapi import APIRouter, Depends

from sitecomms.protocol.models import MeView, UserList, UserView
from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.api.schemas import CreateUserRequest, UpdateUserRequest
from sitecomms.server.services.accounts import Accounts, NewUser
from sitecomms.server.services.visibility import Viewer


def install(api: APIRouter, accounts: Accounts, authenticate: Authenticator) -> None:
    tags: list[str | Enum] = ["users"]

    @api.get("/v1/me", tags=tags, response_model=MeView, responses=responses())
    async def me(viewer: Viewer = Depends(authenticate)) -> JSON:
        """The caller and their organisation."""
        return JSON(await accounts.me(viewer))

    @api.get("/v1/users", tags=tags, response_model=UserList, responses=responses())
    async def directory(viewer: Viewer = Depends(authenticate)) -> JSON:
        """The org directory: every user for admins; a medic sees only themself."""
        return JSON(await accounts.directory(viewer))

    @api.post("/v1/users", tags=tags, status_code=201, response_model=UserView, responses=responses(403, 409))
    async def create_user(body: CreateUserRequest, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Admins add a medic or an admin to their org; a new medic gets their direct conversation."""
        new = NewUser(email=body.email, display_name=body.display_name, role=body.role, password=body.password)
        return JSON(await accounts.create_user(viewer, viewer.org_id, new), status_code=201)

    @api.patch("/v1/users/{user_id}", tags=tags, response_model=UserView, responses=responses(404))
    async def update_user(user_id: uuid.UUID, body: UpdateUserRequest, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Change a display name: your own, or (admins) anyone's in the org."""
        return JSON(await accounts.rename_user(viewer, str(user_id), body.display_name))
