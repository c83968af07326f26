"""The bus contract: what a backend must do, and what delivery it promises.

The bus carries **notices**, not data: "org O has committed changes up to position P". The
database stays the record. A server process publishes a notice after each commit; every
process (itself included) receives it and re-reads the org's changes after the last position it
has fanned out. Hence the contract is deliberately weak:

- at-most-once, best-effort delivery of each notice to each listening process;
- notices may be lost (a broker restart, a dropped connection): that costs latency, never
  data, because the next notice for the org — or the resync the supervisor triggers after a
  reconnect — reads everything after the last fanned-out position from the database;
- notices may arrive late, twice or out of order: positions make them idempotent (a reader
  ignores a notice at or below what it has already read);
- payloads are tiny (`<org id> <position> <published at>`, the last in Unix milliseconds, for
  the notice-lag metric), far below PostgreSQL NOTIFY's 8,000-byte limit. A notice without the
  time (`<org id> <position>`, as versions before it sent) is still read.

A second kind of notice, `access` (`ACCESS_NOTICE`), says "the access-change log has news":
every process then reads that log (services/access.py), which it also polls by itself, so a
lost access notice costs at most one poll interval.

A backend implements four coroutines and one async iterator. `listen()` yields payloads until
the connection fails, then raises; it never swallows a failure, and it probes a quiet
connection so that one that died silently (no FIN: a NAT or firewall dropped it) fails too. A
failed `publish()` raises; a backend whose failed publish means a broken connection makes
`listen()` fail as well, so that everything is reconnected. The `Bus` supervisor (in
`supervisor.py`) owns reconnection, backoff and the bounded hand-off to subscribers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

CHANNEL = "sitecomms_notices"
ACCESS_NOTICE = "access"
_MAX_DIGITS = 19  # positions are BIGINTs


@dataclass(frozen=True, slots=True)
class Notice:
    org_id: str
    position: int
    published_ms: int | None = None  # when the change was first published (Unix ms), if said

    def encode(self) -> str:
        if self.published_ms is None:
            return f"{self.org_id} {self.position}"
        return f"{self.org_id} {self.position} {self.published_ms}"

    @classmethod
    def decode(cls, payload: str | bytes) -> Notice | None:
        """The notice in a payload, or None for anything malformed (logged and dropped by callers)."""
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                return None
        parts = payload.split(" ")
        if len(parts) not in (2, 3):
            return None
        org_id, *numbers = parts
        # ASCII digits only, and few of them: str.isdigit() accepts "²" (int() then raises) and
        # int() refuses over 4,300 digits; either would be raised inside the listener.
        if not org_id or not all(n.isascii() and n.isdigit() and len(n) <= _MAX_DIGITS for n in numbers):
            return None
        return cls(org_id, int(numbers[0]), int(numbers[1]) if len(numbers) == 2 else None)


def is_access_notice(payload: str | bytes) -> bool:
    return payload in (ACCESS_NOTICE, ACCESS_NOTICE.encode())


class BusBackend(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, payload: str) -> None: ...

    def listen(self) -> AsyncIterator[str]: ...
