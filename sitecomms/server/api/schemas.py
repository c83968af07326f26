"""Request bodies: strict shapes (unknown fields refused) whose fields obey `protocol.rules`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sitecomms.protocol import limits, rules
from sitecomms.protocol.enums import Role


def _ruled(rule: Callable[[str], str], shortest: int, longest: int) -> Any:
    """A text field checked by `rule` alone (so HTTP, the CLI and the services agree to the
    character), with the rule's bounds written into the JSON schema for OpenAPI."""
    return Annotated[str, AfterValidator(rule), Field(json_schema_extra={"minLength": shortest, "maxLength": longest})]


Content = _ruled(rules.message_content, 1, limits.MAX_CONTENT_CHARS)
IdempotencyKey = _ruled(rules.idempotency_key, 1, limits.MAX_IDEMPOTENCY_KEY_CHARS)
DisplayName = _ruled(rules.display_name, 1, limits.MAX_DISPLAY_NAME_CHARS)
Email = _ruled(rules.email, 3, limits.MAX_EMAIL_CHARS)
LoginEmail = _ruled(rules.login_email, 1, limits.MAX_EMAIL_CHARS)
Password = _ruled(rules.new_password, limits.MIN_PASSWORD_CHARS, limits.MAX_PASSWORD_CHARS)
LoginPassword = _ruled(rules.login_password, 1, limits.MAX_PASSWORD_CHARS)


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
