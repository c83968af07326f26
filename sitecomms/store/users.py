"""Users: accounts, roles and display names."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Select, bindparam, func, insert, select, update

from sitecomms.store.pg import one_read
from sitecomms.store.rows import UserRow
from sitecomms.store.schema import users
from sitecomms.store.scopes import SHAPES, Scope, changed_after
from sitecomms.store.statements import Connection, Statement

COLUMNS = [users.c[name] for name in UserRow.__dataclass_fields__]


def _scoped(medic: bool) -> Select[tuple[object, ...]]:
    """The users a scope may see: the whole org, or the medic alone."""
    where: list[ColumnElement[bool]] = [users.c.org_id == bindparam("org_id")]
    if medic:
        where.append(users.c.id == bindparam("medic_id"))
    return select(*COLUMNS).where(*where)


_INSERT = Statement(
    "users.insert", insert(users).values({c.name: bindparam(c.name) for c in users.c}).returning(*COLUMNS)
)
_BY_ID = Statement("users.by_id", select(*COLUMNS).where(users.c.id == bindparam("user_id")))
_BY_EMAIL = Statement("users.by_email", select(*COLUMNS).where(users.c.email == bindparam("email")))
_RENAME = Statement(
    "users.rename",
    update(users)
    .where(users.c.id == bindparam("user_id"))
    .values(display_name=bindparam("display_name"), position=bindparam("position")),
)
_SET_ACTIVE = Statement(
    "users.set_active",
    update(users)
    .where(users.c.id == bindparam("user_id"))
    .values(active=bindparam("active"), deactivated_at=bindparam("deactivated_at"), position=bindparam("position")),
)
_SET_ROLE = Statement(
    "users.set_role",
    update(users)
    .where(users.c.id == bindparam("user_id"))
    .values(role=bindparam("role"), position=bindparam("position")),
)
_SET_PASSWORD = Statement(
    "users.set_password",
    update(users).where(users.c.id == bindparam("user_id")).values(password_hash=bindparam("password_hash")),
)
_ACTIVE_ADMINS = Statement(
    "users.active_admins",
    select(func.count())
    .select_from(users)
    .where(users.c.org_id == bindparam("org_id"), users.c.role == "admin", users.c.active.is_(True)),
)
# Per scope shape, [whole org, medic]: the directory, and the changes after a position.
_LIST = [
    Statement(f"users.list.{shape}", _scoped(medic).order_by(users.c.role, users.c.display_name, users.c.id))
    for shape, medic in SHAPES
]
CHANGED = changed_after("users", _scoped, users.c.position)


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
    row = _INSERT.first(
        conn,
        id=user_id,
        org_id=org_id,
        email=email,
        display_name=display_name,
        role=role,
        password_hash=password_hash,
        created_at=now,
        position=position,
        active=True,
        deactivated_at=None,
    )
    assert row is not None
    return UserRow(*row)


@one_read
def get_user(conn: Connection, user_id: str) -> UserRow | None:
    row = _BY_ID.first(conn, user_id=user_id)
    return None if row is None else UserRow(*row)


@one_read
def get_user_by_email(conn: Connection, email: str) -> UserRow | None:
    row = _BY_EMAIL.first(conn, email=email)
    return None if row is None else UserRow(*row)


def list_users(conn: Connection, scope: Scope) -> list[UserRow]:
    statement = _LIST[scope.shape]
    return [UserRow(*row) for row in statement.rows(conn, org_id=scope.org_id, medic_id=scope.medic_id)]


def users_changed_since(conn: Connection, scope: Scope, *, after: int, limit: int) -> list[UserRow]:
    statement = CHANGED[scope.shape]
    rows = statement.rows(conn, org_id=scope.org_id, medic_id=scope.medic_id, after=after, limit=limit)
    return [UserRow(*row) for row in rows]


def rename_user(conn: Connection, user_id: str, *, display_name: str, position: int) -> None:
    _RENAME.run(conn, user_id=user_id, display_name=display_name, position=position)


def set_active(conn: Connection, user_id: str, *, active: bool, now: datetime, position: int) -> None:
    _SET_ACTIVE.run(conn, user_id=user_id, active=active, deactivated_at=None if active else now, position=position)


def set_role(conn: Connection, user_id: str, *, role: str, position: int) -> None:
    _SET_ROLE.run(conn, user_id=user_id, role=role, position=position)


def set_password_hash(conn: Connection, user_id: str, password_hash: str) -> None:
    _SET_PASSWORD.run(conn, user_id=user_id, password_hash=password_hash)


def count_active_admins(conn: Connection, org_id: str) -> int:
    return int(_ACTIVE_ADMINS.scalar(conn, org_id=org_id) or 0)
