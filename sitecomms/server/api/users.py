"""`/v1/me` and the org directory (`/v1/users`); admins add users, deactivate and reactivate
them, change their role and reset their password; everyone changes their own password."""

from __future__ import annotations

import uuid
from enum import Enum

from fastapi import APIRouter, Depends
from starlette.responses import Response

from sitecomms.protocol.models import MeView, UserList, UserView
from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.responses import JSON, no_content, responses
from sitecomms.server.api.schemas import (
    ChangePasswordRequest,
    CreateUserRequest,
    ResetPasswordRequest,
    SetRoleRequest,
    UpdateUserRequest,
)
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

    @api.post("/v1/me/password", tags=tags, status_code=204, responses=responses(403, 409))
    async def change_password(body: ChangePasswordRequest, viewer: Viewer = Depends(authenticate)) -> Response:
        """Change my password (the current one is required); my other devices are signed out."""
        await accounts.change_password(viewer, body.current_password, body.new_password)
        return no_content()

    @api.post("/v1/users/{user_id}/deactivate", tags=tags, response_model=UserView, responses=responses(403, 404, 409))
    async def deactivate(user_id: uuid.UUID, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Admins: the user can no longer sign in and every device of theirs is signed out at once;
        their messages stay. The last active admin cannot be deactivated (409)."""
        return JSON(await accounts.set_active(viewer, str(user_id), False))

    @api.post("/v1/users/{user_id}/reactivate", tags=tags, response_model=UserView, responses=responses(403, 404))
    async def reactivate(user_id: uuid.UUID, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Admins: the user may sign in again."""
        return JSON(await accounts.set_active(viewer, str(user_id), True))

    @api.put("/v1/users/{user_id}/role", tags=tags, response_model=UserView, responses=responses(403, 404, 409))
    async def set_role(user_id: uuid.UUID, body: SetRoleRequest, viewer: Viewer = Depends(authenticate)) -> JSON:
        """Admins: promote a medic or demote an admin (never the last active one: 409)."""
        return JSON(await accounts.set_role(viewer, str(user_id), body.role))

    @api.post("/v1/users/{user_id}/password", tags=tags, status_code=204, responses=responses(403, 404))
    async def reset_password(
        user_id: uuid.UUID, body: ResetPasswordRequest, viewer: Viewer = Depends(authenticate)
    ) -> Response:
        """Admins: set a user's password; every device of theirs is signed out."""
        await accounts.reset_password(viewer, str(user_id), body.password)
        return no_content()
