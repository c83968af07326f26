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
- payloads are tiny (`<org id> <position>`), far below PostgreSQL NOTIFY's 8,000-byte limit.

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

    def encode(self) -> str:
        return f"{self.org_id} {self.position}"

    @classmethod
    def decode(cls, payload: str | bytes) -> Notice | None:
        """The notice in a payload, or None for anything malformed (logged and dropped by callers)."""
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                return None
        parts = payload.split(" ")
        if len(parts) != 2:
            return None
        org_id, position = parts
        # ASCII digits only, and few of them: str.isdigit() accepts "²" (int() then raises) and
        # int() refuses over 4,300 digits; either would be raised inside the listener.
        if not org_id or not position.isascii() or not position.isdigit() or len(position) > _MAX_DIGITS:
            return None
        return cls(org_id, int(position))


def is_access_notice(payload: str | bytes) -> bool:
    return payload in (ACCESS_NOTICE, ACCESS_NOTICE.encode())


class BusBackend(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, payload: str) -> None: ...

    def listen(self) -> AsyncIterator[str]: ...
