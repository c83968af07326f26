"""Users: accounts, roles and display names."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, bindparam, insert, select, update

from sitecomms.store.prepared import Prepared
from sitecomms.store.rows import UserRow, build
from sitecomms.store.schema import users

_BY_ID = Prepared(
    select(*[users.c[name] for name in UserRow.__dataclass_fields__]).where(users.c.id == bindparam("user_id"))
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


def rename_user(conn: Connection, user_id: str, *, display_name: str, position: int) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(display_name=display_name, position=position))
