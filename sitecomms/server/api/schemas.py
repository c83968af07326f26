"""Request bodies: strict shapes (unknown fields refused) whose fields obey `protocol.rules`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sitecomms.protocol import limits, rules
from sitecomms.protocol.enums import Role


def _bounds(shortest: int, longest: int) -> Any:
    """The rule's bounds, written into the JSON schema for OpenAPI; the rule alone checks them,
    so HTTP, the CLI and the services agree to the character."""
    return Field(json_schema_extra={"minLength": shortest, "maxLength": longest})


Content = Annotated[str, AfterValidator(rules.message_content), _bounds(1, limits.MAX_CONTENT_CHARS)]
IdempotencyKey = Annotated[str, AfterValidator(rules.idempotency_key), _bounds(1, limits.MAX_IDEMPOTENCY_KEY_CHARS)]
DisplayName = Annotated[str, AfterValidator(rules.display_name), _bounds(1, limits.MAX_DISPLAY_NAME_CHARS)]
Email = Annotated[str, AfterValidator(rules.email), _bounds(3, limits.MAX_EMAIL_CHARS)]
LoginEmail = Annotated[str, AfterValidator(rules.login_email), _bounds(1, limits.MAX_EMAIL_CHARS)]
Password = Annotated[
    str, AfterValidator(rules.new_password), _bounds(limits.MIN_PASSWORD_CHARS, limits.MAX_PASSWORD_CHARS)
]
LoginPassword = Annotated[str, AfterValidator(rules.login_password), _bounds(1, limits.MAX_PASSWORD_CHARS)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    email: LoginEmail
    password: LoginPassword
    device: str | None = Field(
        None, max_length=200, description="This device's name in 'my devices' (default: from the User-Agent)"
    )


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class ChangePasswordRequest(Strict):
    current_password: LoginPassword
    new_password: Password


class ResetPasswordRequest(Strict):
    password: Password


class SetRoleRequest(Strict):
    role: Role


class SendMessageRequest(Strict):
    conversation_id: uuid.UUID
    content: Content
    idempotency_key: IdempotencyKey


class MarkReadRequest(Strict):
    position: int | None = Field(
        None,
        ge=0,
        le=2**62,
        strict=True,  # a JSON integer: not true/false, "5" or 5.0, which lax mode would turn into one
        description="Read up to this message position; omitted: the newest message",
    )


class CreateUserRequest(Strict):
    email: Email
    display_name: DisplayName
    role: Role
    password: Password


class PushKeys(Strict):
    p256dh: str = Field(min_length=1, max_length=100)
    auth: str = Field(min_length=1, max_length=40)


class PushSubscriptionRequest(BaseModel):
    """`PushSubscription.toJSON()` as the browser makes it (other fields it may add are ignored)."""

    endpoint: str = Field(min_length=1, max_length=limits.MAX_PUSH_ENDPOINT_CHARS)
    keys: PushKeys
    expirationTime: float | None = None


class UpdateUserRequest(Strict):
    display_name: DisplayName


class WatermelonTable(BaseModel):
    """One table of a WatermelonDB push: full raw rows (their `_status`, `_changed` and any column
    this server does not know are ignored), and the ids deleted on the device."""

    created: list[dict[str, Any]] = Field(default_factory=list)
    updated: list[dict[str, Any]] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)


class WatermelonPushBody(BaseModel):
    """`pushChanges`' `changes` as WatermelonDB makes them. WatermelonDB pushes every table of the
    device's database, so tables other than these two are accepted and ignored. (WatermelonDB's
    shape, not the protocol's: no `protocol.requests` twin, hence not named `...Request`.)"""

    model_config = ConfigDict(extra="allow")

    conversations: WatermelonTable = Field(default_factory=WatermelonTable)
    messages: WatermelonTable = Field(default_factory=WatermelonTable)
