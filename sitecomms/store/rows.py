"""Rows as the store returns them: frozen dataclasses, no rendering for any viewer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import RowMapping


@dataclass(frozen=True, slots=True)
class OrgRow:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    org_id: str
    email: str
    display_name: str
    role: str
    password_hash: str
    created_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    org_id: str
    type: str
    medic_id: str | None
    medic_name: str | None
    last_message_at: datetime | None
    last_message_preview: str | None
    last_message_position: int | None
    created_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    org_id: str
    conversation_id: str
    sender_id: str
    sender_name: str
    sender_role: str
    content: str
    idempotency_key: str
    created_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class ReadStatusRow:
    conversation_id: str
    user_id: str
    org_id: str
    last_read_position: int
    last_read_at: datetime
    position: int


R = TypeVar("R")


def build(cls: type[R], mapping: RowMapping) -> R:
    """Make a row dataclass from a result mapping, taking just the fields it declares."""
    fields: dict[str, Any] = cls.__dataclass_fields__  # type: ignore[attr-defined]
    return cls(**{name: mapping[name] for name in fields})
