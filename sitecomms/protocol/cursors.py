"""Cursors: opaque, versioned names for positions in an organisation's stream.

Every change in an organisation (a message created, a conversation updated, a read status
moved, a user renamed) is given the next *position* of that organisation's stream inside the
transaction that makes it, so positions are committed in order. A cursor names the gap just
after a position: "everything up to and including N has been seen". Reads from a cursor are
therefore exclusive of it (`position > N`), and the cursor a page hands back is the position
of the last change it contained.

On the wire a cursor is `v1.<position>.<org tag>`. Clients must treat it as opaque and only
hand it back. The version lets the format change without breaking stored cursors, and the
org tag lets the server refuse a cursor minted for another organisation instead of silently
reading the wrong range of positions. Position 0 is "before everything".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_VERSION = "v1"


class InvalidCursor(ValueError):
    """The string is not a cursor this server issued for this organisation."""


def org_tag(org_id: str) -> str:
    return hashlib.sha256(org_id.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Cursor:
    position: int
    org_id: str

    def __str__(self) -> str:
        return f"{_VERSION}.{self.position}.{org_tag(self.org_id)}"

    @classmethod
    def start(cls, org_id: str) -> Cursor:
        return cls(0, org_id)

    @classmethod
    def parse(cls, text: str, org_id: str) -> Cursor:
        parts = text.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise InvalidCursor("not a cursor issued by this server")
        raw_position, tag = parts[1], parts[2]
        if not raw_position.isascii() or not raw_position.isdigit() or len(raw_position) > 18:
            raise InvalidCursor("not a cursor issued by this server")
        if tag != org_tag(org_id):
            raise InvalidCursor("cursor belongs to another organisation")
        return cls(int(raw_position), org_id)
