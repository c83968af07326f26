"""Request bodies: strict shapes (unknown fields refused) whose fields obey `protocol.rules`."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sitecomms.protocol import limits, rules
from sitecomms.protocol.enums import Role

# Each field runs its rule from `protocol.rules` (the one definition, which the services run
# for every caller too); the Field bounds repeat the rule's for OpenAPI.
Content = Annotated[
    str, Field(min_length=1, max_length=limits.MAX_CONTENT_CHARS), AfterValidator(rules.message_content)
]
IdempotencyKey = Annotated[
    str, Field(min_length=1, max_length=limits.MAX_IDEMPOTENCY_KEY_CHARS), AfterValidator(rules.idempotency_key)
]
DisplayName = Annotated[
    str, Field(min_length=1, max_length=limits.MAX_DISPLAY_NAME_CHARS), AfterValidator(rules.display_name)
]
Email = Annotated[str, Field(min_length=3, max_length=limits.MAX_EMAIL_CHARS), AfterValidator(rules.email)]
LoginEmail = Annotated[str, Field(min_length=3, max_length=limits.MAX_EMAIL_CHARS), AfterValidator(rules.login_email)]
Password = Annotated[
    str,
    Field(min_length=limits.MIN_PASSWORD_CHARS, max_length=limits.MAX_PASSWORD_CHARS),
    AfterValidator(rules.new_password),
]
LoginPassword = Annotated[
    str, Field(min_length=1, max_length=limits.MAX_PASSWORD_CHARS), AfterValidator(rules.login_password)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    email: LoginEmail
    password: LoginPassword


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


class UpdateUserRequest(Strict):
    display_name: DisplayName
