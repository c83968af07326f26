"""Request bodies: strict shapes (unknown fields refused) with the protocol's limits."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sitecomms.protocol import limits
from sitecomms.protocol.enums import Role


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


Storable = AfterValidator(_storable)
NotBlank = AfterValidator(_not_blank)

Content = Annotated[str, Field(min_length=1, max_length=limits.MAX_CONTENT_CHARS), Storable, NotBlank]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=limits.MAX_IDEMPOTENCY_KEY_CHARS), Storable, NotBlank]
DisplayName = Annotated[str, Field(min_length=1, max_length=limits.MAX_DISPLAY_NAME_CHARS), Storable, NotBlank]
Email = Annotated[str, Field(min_length=3, max_length=limits.MAX_EMAIL_CHARS), Storable, NotBlank]
Password = Annotated[str, Field(min_length=limits.MIN_PASSWORD_CHARS, max_length=limits.MAX_PASSWORD_CHARS), Storable]
LoginPassword = Annotated[str, Field(min_length=1, max_length=limits.MAX_PASSWORD_CHARS), Storable]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    email: Email
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
