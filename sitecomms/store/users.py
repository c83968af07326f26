"""Users: accounts, roles and display names."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, bindparam, insert, select, update

from sitecomms.store.prepared import Prepared
from sitecomms.store.rows import UserRow, build
from sitecomms.store.schema import users

_ROW_COLUMNS = [users.c[name] for name in UserRow.__dataclass_fields__]
_BY_ID = Prepared(select(*_ROW_COLUMNS).where(users.c.id == bindparam("user_id")))
_CHANGED_IN_ORG = Prepared(
    select(*_ROW_COLUMNS)
    .where(users.c.org_id == bindparam("org"), users.c.position > bindparam("after"))
    .order_by(users.c.position)
    .limit(bindparam("limit"))
)


def insert_user(
    conn: Connection,
    *,
    user_id: str,
    org_id: str,
    email: str,
    display_name: str,
    role: str,
    password_hash: str,
    now: datetime,
    position: int,
) -> UserRow:
    values = dict(
        id=user_id,
        org_id=org_id,
        email=email,
        display_name=display_name,
        role=role,
        password_hash=password_hash,
        created_at=now,
        position=position,
    )
    conn.execute(insert(users).values(**values))
    return UserRow(**values)  # type: ignore[arg-type]


def get_user(conn: Connection, user_id: str) -> UserRow | None:
    row = _BY_ID.first(conn, user_id=user_id)
    return None if row is None else UserRow(*row)


def get_user_by_email(conn: Connection, email: str) -> UserRow | None:
    row = conn.execute(select(users).where(users.c.email == email)).mappings().first()
    return None if row is None else build(UserRow, row)


def list_users(conn: Connection, visible: ColumnElement[bool]) -> list[UserRow]:
    query = select(users).where(visible).order_by(users.c.role, users.c.display_name, users.c.id)
    return [build(UserRow, r) for r in conn.execute(query).mappings()]


def users_changed_since(conn: Connection, visible: ColumnElement[bool], *, after: int, limit: int) -> list[UserRow]:
    query = select(users).where(visible, users.c.position > after).order_by(users.c.position).limit(limit)
    return [build(UserRow, r) for r in conn.execute(query).mappings()]


def users_changed_in_org(conn: Connection, org_id: str, *, after: int, limit: int) -> list[UserRow]:
    """Every user of the org changed after `after`: the server's own read, not any viewer's."""
    return [UserRow(*row) for row in _CHANGED_IN_ORG.rows(conn, org=org_id, after=after, limit=limit)]


def rename_user(conn: Connection, user_id: str, *, display_name: str, position: int) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(display_name=display_name, position=position))
