"""The audit log: append-only events (sign-ins, sessions, account changes), read newest first.

Nothing here updates an event (the database refuses it: migration 0003's trigger); the only
delete is retention's, of events older than a cut-off.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, bindparam, delete, insert, or_, select

from sitecomms.store.rows import AuditRow
from sitecomms.store.schema import audit_events
from sitecomms.store.statements import Connection, Statement

_COLUMNS = [audit_events.c[name] for name in AuditRow.__dataclass_fields__]
_NEWEST_FIRST = 2**62  # `before` for the first page

_INSERT = Statement(
    "audit.insert",
    insert(audit_events)
    .values({c.name: bindparam(c.name) for c in audit_events.c if c.name != "id"})
    .returning(audit_events.c.id),
)
_PAGE = Statement(
    "audit.page",
    select(*_COLUMNS)
    .where(
        audit_events.c.org_id == bindparam("org_id"),
        audit_events.c.id < bindparam("before", type_=BigInteger),
        or_(bindparam("subject_id", type_=String).is_(None), audit_events.c.subject_id == bindparam("subject_id")),
        or_(bindparam("kind", type_=String).is_(None), audit_events.c.kind == bindparam("kind")),
    )
    .order_by(audit_events.c.id.desc())
    .limit(bindparam("limit")),
)
_EVERY_ORG_PAGE = Statement(
    "audit.every_org_page",
    select(*_COLUMNS)
    .where(
        audit_events.c.id < bindparam("before", type_=BigInteger),
        or_(bindparam("subject_id", type_=String).is_(None), audit_events.c.subject_id == bindparam("subject_id")),
        or_(bindparam("kind", type_=String).is_(None), audit_events.c.kind == bindparam("kind")),
    )
    .order_by(audit_events.c.id.desc())
    .limit(bindparam("limit")),
)
_EXPIRE = Statement("audit.expire", delete(audit_events).where(audit_events.c.at < bindparam("cutoff")))


def record(
    conn: Connection,
    *,
    at: datetime,
    org_id: str | None,
    kind: str,
    actor_id: str | None = None,
    subject_id: str | None = None,
    session_id: str | None = None,
    address: str | None = None,
    detail: str = "{}",
) -> int:
    """Append an event; its id."""
    return int(
        _INSERT.scalar(
            conn,
            at=at,
            org_id=org_id,
            kind=kind,
            actor_id=actor_id,
            subject_id=subject_id,
            session_id=session_id,
            address=address,
            detail=detail,
        )
    )


def page(
    conn: Connection,
    org_id: str | None,
    *,
    before: int | None,
    limit: int,
    subject_id: str | None = None,
    kind: str | None = None,
) -> list[AuditRow]:
    """Events newest first, with ids below `before`; `org_id` None: every org's (operators only)."""
    params = {
        "before": _NEWEST_FIRST if before is None else before,
        "limit": limit,
        "subject_id": subject_id,
        "kind": kind,
    }
    if org_id is None:
        return [AuditRow(*row) for row in _EVERY_ORG_PAGE.rows(conn, **params)]
    return [AuditRow(*row) for row in _PAGE.rows(conn, org_id=org_id, **params)]


def expire(conn: Connection, cutoff: datetime) -> int:
    """Delete the events older than `cutoff`; how many."""
    return _EXPIRE.run(conn, cutoff=cutoff)
