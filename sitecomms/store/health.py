"""The readiness probe's write: one row (`health_probe`, id 1) rewritten by every probe.

A real write, committed like a send's: on SQLite it goes through the one writer (its WAL
append and fsync), on PostgreSQL through a read-write transaction, so a database that still
answers reads but refuses writes (disk full, a read-only file or file system, a standby or a
primary in recovery, `default_transaction_read_only`) fails it with the store's `Unavailable`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, insert, update

from sitecomms.store.schema import health_probe
from sitecomms.store.statements import Connection, Statement

PROBE_ROW = 1
_TOUCH = Statement(
    "health.touch",
    update(health_probe).where(health_probe.c.id == PROBE_ROW).values(probed_at=bindparam("at")),
)
_INSERT = Statement("health.insert", insert(health_probe).values(id=PROBE_ROW, probed_at=bindparam("at")))


def probe_write(conn: Connection, *, at: datetime) -> None:
    """Rewrite the probe row (insert it if someone deleted it: then that insert is the write)."""
    if _TOUCH.run(conn, at=at) == 0:
        _INSERT.run(conn, at=at)
