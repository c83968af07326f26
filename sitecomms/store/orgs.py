"""Organisations and their stream rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select

from sitecomms.store.rows import OrgRow, build
from sitecomms.store.schema import org_streams, orgs


def insert_org(conn: Connection, *, org_id: str, name: str, now: datetime) -> OrgRow:
    conn.execute(insert(orgs).values(id=org_id, name=name, created_at=now))
    conn.execute(insert(org_streams).values(org_id=org_id, position=0))
    return OrgRow(id=org_id, name=name, created_at=now)


def get_org(conn: Connection, org_id: str) -> OrgRow | None:
    row = conn.execute(select(orgs).where(orgs.c.id == org_id)).mappings().first()
    return None if row is None else build(OrgRow, row)


def find_org_by_name(conn: Connection, name: str) -> OrgRow | None:
    row = conn.execute(select(orgs).where(orgs.c.name == name).order_by(orgs.c.created_at)).mappings().first()
    return None if row is None else build(OrgRow, row)
