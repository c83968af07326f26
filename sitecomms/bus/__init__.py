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

HEARTBEAT_SECONDS = 10.0  # a quiet broker connection is probed this often; dead after two silent beats


def open_bus(url: str, *, heartbeat_seconds: float = HEARTBEAT_SECONDS, publish_timeout: float = 2.0) -> Bus:
    scheme = urlsplit(url).scheme
    backend: BusBackend
    if scheme == "memory":
        from sitecomms.bus.memory import MemoryBackend

        backend = MemoryBackend()
    elif scheme in ("redis", "rediss"):
        from sitecomms.bus.redis import RedisBackend

        backend = RedisBackend(url, heartbeat_seconds=heartbeat_seconds)
    elif scheme in ("postgres", "postgresql"):
        from sitecomms.bus.postgres import PostgresBackend

        backend = PostgresBackend(url, heartbeat_seconds=heartbeat_seconds)
    else:
        raise ValueError(f"unsupported bus URL scheme {scheme!r} (use memory://, redis:// or postgres://)")
    return Bus(backend, url=url, publish_timeout=publish_timeout)
