"""`/v1/me` and the org directory (`/v1/users`), with admin-only user creation."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from sitecomms.protocol.models import MeView, UserList, UserView
from sitecomms.server.api.auth import ViewerDependency
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.api.schemas import CreateUserRequest, UpdateUserRequest
from sitecomms.server.services.accounts import Accounts, NewUser
from sitecomms.server.services.visibility import Viewer


def router(accounts: Accounts, current_viewer: ViewerDependency) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["users"])

    @api.get("/me", response_model=MeView, responses=responses())
    async def me(viewer: Viewer = Depends(current_viewer)) -> JSON:
        """The caller and their organisation."""
        return JSON(await accounts.me(viewer))

    @api.get("/users", response_model=UserList, responses=responses())
    async def directory(viewer: Viewer = Depends(current_viewer)) -> JSON:
        """The org directory: every user for admins; a medic sees only themself."""
        return JSON(await accounts.directory(viewer))

    @api.post("/users", status_code=201, response_model=UserView, responses=responses(403, 409))
    async def create_user(body: CreateUserRequest, viewer: Viewer = Depends(current_viewer)) -> JSON:
        """Admins add a medic or an admin to their org; a new medic gets their direct conversation."""
        new = NewUser(email=body.email, display_name=body.display_name, role=body.role, password=body.password)
        return JSON(await accounts.create_user(viewer, viewer.org_id, new), status_code=201)

    @api.patch("/users/{user_id}", response_model=UserView, responses=responses(404))
    async def update_user(
        user_id: uuid.UUID, body: UpdateUserRequest, viewer: Viewer = Depends(current_viewer)
    ) -> JSON:
        """Change a display name: your own, or (admins) anyone's in the org."""
        return JSON(await accounts.rename_user(viewer, str(user_id), body.display_name))

    return api
