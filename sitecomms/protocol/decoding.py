"""Decoding: JSON values (as `json`/`orjson` load them) into the protocol's dataclasses, strictly.

`decode(MessageView, value)` checks every field the dataclass declares (its presence and its
type: strings, integers that are not booleans, RFC 3339 timestamps with a zone, enum members,
nested views, lists, optional values) and builds the frozen dataclass; anything else raises
`WireError`, whose message says where (`SyncPage.changes[3].data.sender_role: 'boss' is not a
Role`). Fields the dataclass does not declare are ignored, so a newer server may add some. A
change's `data` is decoded as the view its `type` names; a sync page skips changes of a type
this version does not know (a newer server may add kinds), while a known type with a malformed
view is an error.

Each dataclass's decoder is built once, from its type hints, on first use; decoding is then one
pass of plain type checks. This is what clients run at their boundary (the SDK on every HTTP
answer and realtime frame); the server never decodes its own views.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from sitecomms.protocol.enums import ChangeType
from sitecomms.protocol.models import (
    Change,
    ChangeData,
    ChangeFrame,
    ConversationView,
    MessageView,
    ReadStatusView,
    UserView,
)

T = TypeVar("T")
Decoder = Callable[[Any], Any]

DATA_OF: dict[ChangeType, type[ChangeData]] = {
    ChangeType.MESSAGE_CREATED: MessageView,
    ChangeType.CONVERSATION_UPDATED: ConversationView,
    ChangeType.READ_STATUS_UPDATED: ReadStatusView,
    ChangeType.USER_UPDATED: UserView,
}
CHANGE_TYPES: dict[str, ChangeType] = {member.value: member for member in ChangeType}  # by wire name


class WireError(ValueError):
    """A value is not the shape the protocol defines; `path` says where in it."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason, path)
        self.reason = reason
        self.path = path

    def within(self, segment: str) -> WireError:
        return WireError(self.reason, segment + self.path)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


def decode(cls: type[T], value: object) -> T:
    """`value` as a `cls` (a protocol dataclass), or `WireError`."""
    try:
        result: T = _decoder_of(cls)(value)
    except WireError as exc:
        raise exc.within(cls.__name__) from None
    return result


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _str(value: object) -> str:
    if type(value) is not str:
        raise WireError(f"expected a string, got {_kind(value)}")
    return value


def _int(value: object) -> int:
    if type(value) is not int:  # a bool is not a position
        raise WireError(f"expected an integer, got {_kind(value)}")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise WireError(f"expected true or false, got {_kind(value)}")
    return value


def _datetime(value: object) -> datetime:
    if type(value) is not str:
        raise WireError(f"expected a timestamp, got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(f"{value[:40]!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise WireError(f"{value[:40]!r} has no time zone")
    return moment


def _enum(cls: type[Enum]) -> Decoder:
    members = {member.value: member for member in cls}
    wire_type = type(next(iter(members)))

    def decode_member(value: object) -> Enum:
        member = members.get(value) if type(value) is wire_type else None
        if member is None:
            raise WireError(f"{value!r} is not a {cls.__name__}")
        return member

    return decode_member


def _optional(inner: Decoder) -> Decoder:
    def decode_optional(value: object) -> Any:
        return None if value is None else inner(value)

    return decode_optional


def _list(item: Decoder, *, skip: Callable[[object], bool] | None = None) -> Decoder:
    def decode_list(value: object) -> list[Any]:
        if type(value) is not list:
            raise WireError(f"expected a list, got {_kind(value)}")
        decoded = []
        for index, element in enumerate(value):
            if skip is not None and skip(element):
                continue
            try:
                decoded.append(item(element))
            except WireError as exc:
                raise exc.within(f"[{index}]") from None
        return decoded

    return decode_list


def _object(value: object) -> dict[str, Any]:
    if type(value) is not dict:
        raise WireError(f"expected an object, got {_kind(value)}")
    return value


def _field(value: dict[str, Any], name: str, decoder: Decoder) -> Any:
    try:
        raw = value[name]
    except KeyError:
        raise WireError(f"missing field {name!r}") from None
    try:
        return decoder(raw)
    except WireError as exc:
        raise exc.within("." + name) from None


def _dataclass(cls: type[Any]) -> Decoder:
    hints = typing.get_type_hints(cls)
    plan = [(field.name, _decoder_of(hints[field.name])) for field in dataclasses.fields(cls)]

    def decode_object(value: object) -> Any:
        obj = _object(value)
        return cls(*[_field(obj, name, decoder) for name, decoder in plan])

    return decode_object


_decode_change_type = _enum(ChangeType)


def _change_type(value: dict[str, Any]) -> ChangeType:
    return _field(value, "type", _decode_change_type)  # type: ignore[no-any-return]


def _change_data(value: dict[str, Any], change_type: ChangeType) -> ChangeData:
    return _field(value, "data", _decoder_of(DATA_OF[change_type]))  # type: ignore[no-any-return]


def _change(value: object) -> Change:
    obj = _object(value)
    change_type = _change_type(obj)
    return Change(_field(obj, "position", _int), change_type, _change_data(obj, change_type))


def _change_frame(value: object) -> ChangeFrame:
    obj = _object(value)
    change_type = _change_type(obj)
    return ChangeFrame(
        change_type, _field(obj, "position", _int), _field(obj, "cursor", _str), _change_data(obj, change_type)
    )


def _unknown_change(value: object) -> bool:
    """A change of a kind a newer server added: skipped (its data is not ours to check)."""
    return type(value) is dict and type(value.get("type")) is str and value["type"] not in CHANGE_TYPES


_SCALARS: dict[object, Decoder] = {str: _str, int: _int, bool: _bool, datetime: _datetime}
_SPECIAL: dict[object, Decoder] = {Change: _change, ChangeFrame: _change_frame}
_cache: dict[object, Decoder] = {}


def _decoder_of(hint: object) -> Decoder:
    decoder = _cache.get(hint)
    if decoder is None:
        decoder = _cache[hint] = _build(hint)
    return decoder


def _build(hint: object) -> Decoder:
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint in _SPECIAL:
        return _SPECIAL[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return _list(_decoder_of(args[0]), skip=_unknown_change if args[0] is Change else None)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        return _optional(_decoder_of(next(a for a in args if a is not type(None))))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint)
    raise TypeError(f"no wire decoder for {hint!r}")
