"""Read status: how far each user has read each conversation. Only ever moves forward."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, bindparam, insert, select, update

from sitecomms.store.prepared import Prepared
from sitecomms.store.rows import ReadStatusRow, build
from sitecomms.store.schema import conversations, read_status

_CHANGED_IN_ORG = Prepared(
    select(*[read_status.c[name] for name in ReadStatusRow.__dataclass_fields__])
    .where(read_status.c.org_id == bindparam("org"), read_status.c.position > bindparam("after"))
    .order_by(read_status.c.position)
    .limit(bindparam("limit"))
)


def get_read_status(conn: Connection, conversation_id: str, user_id: str) -> ReadStatusRow | None:
    query = select(read_status).where(
        read_status.c.conversation_id == conversation_id, read_status.c.user_id == user_id
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else build(ReadStatusRow, row)


def save_read_status(conn: Connection, row: ReadStatusRow, *, exists: bool) -> None:
    values = dict(last_read_position=row.last_read_position, last_read_at=row.last_read_at, position=row.position)
    if exists:
        conn.execute(
            update(read_status)
            .where(
                read_status.c.conversation_id == row.conversation_id,
                read_status.c.user_id == row.user_id,
                read_status.c.last_read_position < row.last_read_position,
            )
            .values(**values)
        )
    else:
        conn.execute(
            insert(read_status).values(
                conversation_id=row.conversation_id, user_id=row.user_id, org_id=row.org_id, **values
            )
        )


def read_statuses_of(conn: Connection, conversation_id: str) -> list[ReadStatusRow]:
    query = select(read_status).where(read_status.c.conversation_id == conversation_id)
    return [build(ReadStatusRow, r) for r in conn.execute(query).mappings()]


def read_statuses_in(conn: Connection, visible: ColumnElement[bool]) -> list[ReadStatusRow]:
    query = (
        select(read_status)
        .select_from(read_status.join(conversations, conversations.c.id == read_status.c.conversation_id))
        .where(visible)
        .order_by(read_status.c.position)
    )
    return [build(ReadStatusRow, r) for r in conn.execute(query).mappings()]


def read_statuses_changed_since(
    conn: Connection, visible: ColumnElement[bool], *, after: int, limit: int
) -> list[ReadStatusRow]:
    query = (
        select(read_status)
        .select_from(read_status.join(conversations, conversations.c.id == read_status.c.conversation_id))
        .where(visible, read_status.c.position > after)
        .order_by(read_status.c.position)
        .limit(limit)
    )
    return [build(ReadStatusRow, r) for r in conn.execute(query).mappings()]


def read_statuses_changed_in_org(conn: Connection, org_id: str, *, after: int, limit: int) -> list[ReadStatusRow]:
    """Every read status of the org changed after `after`: the server's own read, not any viewer's."""
    return [ReadStatusRow(*row) for row in _CHANGED_IN_ORG.rows(conn, org=org_id, after=after, limit=limit)]


def read_positions_of_user(conn: Connection, user_id: str, conversation_ids: list[str]) -> dict[str, int]:
    if not conversation_ids:
        return {}
    query = select(read_status.c.conversation_id, read_status.c.last_read_position).where(
        read_status.c.user_id == user_id, read_status.c.conversation_id.in_(conversation_ids)
    )
    return {cid: int(pos) for cid, pos in conn.execute(query)}


def read_statuses_for(conn: Connection, conversation_ids: list[str]) -> list[ReadStatusRow]:
    if not conversation_ids:
        return []
    query = select(read_status).where(read_status.c.conversation_id.in_(conversation_ids))
    return [build(ReadStatusRow, r) for r in conn.execute(query).mappings()]
