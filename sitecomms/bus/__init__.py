"""The bus: change notices between server processes, chosen by URL.

`memory://` (default, one process), `redis://` / `rediss://` (Redis pub/sub) and
`postgres://` / `postgresql://` (LISTEN/NOTIFY). The delivery contract is in `base.py`; the
supervised listener in `supervisor.py`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sitecomms.bus.base import BusBackend, Notice
from sitecomms.bus.supervisor import Bus, BusState, Subscriber

__all__ = ["Bus", "BusBackend", "BusState", "Notice", "Subscriber", "open_bus"]


def open_bus(url: str) -> Bus:
    scheme = urlsplit(url).scheme
    backend: BusBackend
    if scheme == "memory":
        from sitecomms.bus.memory import MemoryBackend

        backend = MemoryBackend()
    elif scheme in ("redis", "rediss"):
        from sitecomms.bus.redis import RedisBackend

        backend = RedisBackend(url)
    elif scheme in ("postgres", "postgresql"):
        from sitecomms.bus.postgres import PostgresBackend

        backend = PostgresBackend(url)
    else:
        raise ValueError(f"unsupported bus URL scheme {scheme!r} (use memory://, redis:// or postgres://)")
    return Bus(backend, url=url)
