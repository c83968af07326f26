"""The bodies clients send over HTTP, as plain dataclasses: what a client builds a request from.

The server validates the same bodies with its request schemas (`server/api/schemas.py`, which
run `rules.py` and document the bounds in OpenAPI); a test holds the two to the same field
names, so a field renamed on one side breaks the build of the other. `body(request)` is the
JSON object to send (enums stay enums: every JSON encoder writes a string enum as its value).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sitecomms.protocol.enums import Role


@dataclass(frozen=True, slots=True)
class LoginRequest:
    email: str
    password: str
    device: str | None = None  # this device's name in "my devices" (None: the server names it)


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    refresh_token: str  # single use: the answer carries the next one


@dataclass(frozen=True, slots=True)
class ChangePasswordRequest:
    current_password: str
    new_password: str


@dataclass(frozen=True, slots=True)
class ResetPasswordRequest:
    password: str


@dataclass(frozen=True, slots=True)
class SetRoleRequest:
    role: Role


@dataclass(frozen=True, slots=True)
class SendMessageRequest:
    conversation_id: str
    content: str
    idempotency_key: str  # the client's, fresh per message and the same on every retry


@dataclass(frozen=True, slots=True)
class MarkReadRequest:
    position: int | None  # read up to this message position; None: the newest message


@dataclass(frozen=True, slots=True)
class PushKeys:
    p256dh: str  # the browser's subscription keys, base64url
    auth: str


@dataclass(frozen=True, slots=True)
class PushSubscriptionRequest:
    """What `PushSubscription.toJSON()` gives (a native app with a UnifiedPush distributor
    sends the same: its endpoint and keys)."""

    endpoint: str
    keys: PushKeys
    expirationTime: float | None = None


@dataclass(frozen=True, slots=True)
class CreateUserRequest:
    email: str
    display_name: str
    role: Role
    password: str


@dataclass(frozen=True, slots=True)
class UpdateUserRequest:
    display_name: str


Request = (
    LoginRequest
    | RefreshRequest
    | ChangePasswordRequest
    | ResetPasswordRequest
    | SetRoleRequest
    | SendMessageRequest
    | MarkReadRequest
    | CreateUserRequest
    | UpdateUserRequest
)


def body(request: Request) -> dict[str, Any]:
    """The request as the JSON object to send (its fields, by name; shallow: they are flat)."""
    return {field.name: getattr(request, field.name) for field in dataclasses.fields(request)}
