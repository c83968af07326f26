"""Allocating and reading org-stream positions.

`next_position` increments the org's row in `org_streams` and returns the new value. On
PostgreSQL the UPDATE holds that row's lock until the transaction ends, so a second writer in
the same org waits and commits after the first: positions become visible in order, and a
reader that has seen position N never later finds a commit at a position ≤ N. On SQLite the
single writer gives the same order. Every write transaction calls it *first*, before touching
other rows, so writers in one org always take locks in the same order (no deadlocks).
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, update

from sitecomms.store.pg import one_read
from sitecomms.store.schema import org_streams
from sitecomms.store.statements import Connection, Statement

# The first of `count` new positions (RETURNING sees the row as updated). A module-level
# construct, because the send on PostgreSQL runs it inside its one statement (messages.py).
TAKE = (
    update(org_streams)
    .where(org_streams.c.org_id == bindparam("org"))
    .values(position=org_streams.c.position + bindparam("count"))
    .returning((org_streams.c.position - bindparam("count") + 1).label("first"))
)
_TAKE = Statement("stream.take", TAKE)
_HEAD = Statement("stream.head", select(org_streams.c.position).where(org_streams.c.org_id == bindparam("org_id")))
_HEADS = Statement(
    "stream.heads",
    select(org_streams.c.org_id, org_streams.c.position).where(
        org_streams.c.org_id.in_(bindparam("org_ids", expanding=True))
    ),
)


def next_position(conn: Connection, org_id: str, count: int = 1) -> int:
    """Take the next `count` positions of the org's stream; returns the first of them."""
    first = _TAKE.scalar(conn, org=org_id, count=count)
    if first is None:
        raise LookupError(f"no stream for org {org_id}")
    return int(first)


@one_read
def current_position(conn: Connection, org_id: str) -> int:
    return int(_HEAD.scalar(conn, org_id=org_id) or 0)


@one_read
def current_positions(conn: Connection, org_ids: list[str]) -> dict[str, int]:
    """The stream heads of those orgs (one indexed read)."""
    return {str(org): int(position) for org, position in _HEADS.rows(conn, org_ids=org_ids)} if org_ids else {}
