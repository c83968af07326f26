"""Wire fixtures built from the protocol dataclasses, encoded exactly as the server encodes them.

`wire(MessageView(...))` is the JSON object the server would send for that view (orjson with
`OPT_UTC_Z`, as `server/api/responses.py` and `services/feed.py` render), loaded back into
Python. Tests that need a server's answer build it this way rather than by hand, so a renamed or
added field breaks the fixture instead of leaving it describing a protocol that no longer exists.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from sitecomms.protocol import enums, errors, frames

_OPTIONS = orjson.OPT_UTC_Z


def wire_text(value: object) -> str:
    """`value` (dataclasses, enums, datetimes, lists, dicts of them) as the server's JSON text."""
    return orjson.dumps(value, option=_OPTIONS).decode()


def wire(value: object) -> Any:
    """`value` as the JSON value a client receives: `orjson.loads(wire_text(value))`."""
    return orjson.loads(orjson.dumps(value, option=_OPTIONS))


def wire_strings() -> set[str]:
    """Every string value of the protocol's wire enums (frame and change types, statuses, codes...)."""
    values: set[str] = set()
    for module in (enums, frames, errors):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Enum) and value.__module__ == module.__name__:
                values |= {m.value for m in value if isinstance(m.value, str)}
    return values
