"""Organisations and their stream rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, insert, select

from sitecomms.store.rows import OrgRow
from sitecomms.store.schema import org_streams, orgs
from sitecomms.store.statements import Connection, Statement

_COLUMNS = [orgs.c[name] for name in OrgRow.__dataclass_fields__]
_INSERT = Statement(
    "orgs.insert",
    insert(orgs)
    .values(id=bindparam("org_id"), name=bindparam("name"), created_at=bindparam("created_at"))
    .returning(*_COLUMNS),
)
_INSERT_STREAM = Statement("orgs.insert_stream", insert(org_streams).values(org_id=bindparam("org_id"), position=0))
_BY_ID = Statement("orgs.by_id", select(*_COLUMNS).where(orgs.c.id == bindparam("org_id")))
_BY_NAME = Statement(
    "orgs.by_name", select(*_COLUMNS).where(orgs.c.name == bindparam("name")).order_by(orgs.c.created_at).limit(1)
)


def insert_org(conn: Connection, *, org_id: str, name: str, now: datetime) -> OrgRow:
    row = _INSERT.first(conn, org_id=org_id, name=name, created_at=now)
    assert row is not None
    _INSERT_STREAM.run(conn, org_id=org_id)
    return OrgRow(*row)


def get_org(conn: Connection, org_id: str) -> OrgRow | None:
    row = _BY_ID.first(conn, org_id=org_id)
    return None if row is None else OrgRow(*row)


def find_org_by_name(conn: Connection, name: str) -> OrgRow | None:
    row = _BY_NAME.first(conn, name=name)
    return None if row is None else OrgRow(*row)
