"""The org stream after a position as one scope may see it: the head and every table, one statement.

A pull sync page and the live feed's org-wide read need, in one snapshot, the stream's head and
up to `limit` rows changed after `after` from each of users, conversations, messages and read
statuses (each table's own `<table>.changed.<shape>` select). Five statements in a transaction
are seven round trips on PostgreSQL; here they are one `UNION ALL`, which is one snapshot by
itself. The rows are laid side by side: a `kind` column, the head, then one segment of columns
per table, the other segments NULL (cast to their columns' types, so that each column has one
type in every part and keeps its result processing). A last part gives the conversations the
changed messages and read statuses are in, as they are now (the live feed renders each change
with its conversation), so the feed's read is this one statement and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, bindparam, cast, literal_column, null, select, union_all

from sitecomms.store import conversations, messages, reads, users
from sitecomms.store.pg import one_read
from sitecomms.store.rows import ConversationRow, MessageRow, ReadStatusRow, UserRow
from sitecomms.store.schema import conversations as conversation_table
from sitecomms.store.schema import org_streams
from sitecomms.store.scopes import SHAPES, Scope
from sitecomms.store.statements import Connection, Statement

_TABLES = (users.CHANGED, conversations.CHANGED, messages.CHANGED, reads.CHANGED)  # each: one Statement per shape
_ROWS = (UserRow, ConversationRow, MessageRow, ReadStatusRow)
_CONVERSATIONS, _MESSAGES, _READS = 1, 2, 3  # indexes into _TABLES
_HEAD_KIND = len(_TABLES)
_REFERENCED_KIND = _HEAD_KIND + 1  # rows in the conversations' segment


@dataclass(frozen=True, slots=True)
class Changes:
    head: int
    users: list[UserRow]
    conversations: list[ConversationRow]
    messages: list[MessageRow]
    read_statuses: list[ReadStatusRow]
    referenced: list[ConversationRow]  # the conversations of those messages and read statuses, now


def _side_by_side(shape: int) -> Select[Any]:
    selects = [changed[shape].statement for changed in _TABLES]
    parts = [statement.cte(f"t{index}") for index, statement in enumerate(selects) if isinstance(statement, Select)]
    assert len(parts) == len(_TABLES)
    segments = [list(part.c) for part in parts]

    def row(kind: int, head: Any, filled: int | None = None, source: list[Any] | None = None) -> list[Any]:
        """The columns of one part: segment `filled` from `source` (or the part's own), the others NULL."""
        columns: list[Any] = [literal_column(str(kind), Integer()).label("kind"), head.label("head")]
        for index, segment in enumerate(segments):
            values = (source or segment) if index == filled else [cast(null(), column.type) for column in segment]
            columns += [value.label(f"c{index}_{number}") for number, value in enumerate(values)]
        return columns

    no_head = cast(null(), BigInteger())
    head = select(*row(_HEAD_KIND, org_streams.c.position)).where(org_streams.c.org_id == bindparam("org_id"))
    tables = [select(*row(index, no_head, index)).select_from(part) for index, part in enumerate(parts)]
    involved = select(parts[_MESSAGES].c.conversation_id).union(select(parts[_READS].c.conversation_id))
    current = conversations.ROW_SELECT.where(conversation_table.c.id.in_(involved)).subquery("referenced")
    referenced = select(*row(_REFERENCED_KIND, no_head, _CONVERSATIONS, list(current.c)))
    return union_all(head, *tables, referenced)  # type: ignore[return-value]


_CHANGES = [Statement(f"changes.after.{name}", _side_by_side(shape)) for shape, (name, _) in enumerate(SHAPES)]
_WIDTHS = [len(row.__dataclass_fields__) for row in _ROWS]
_STARTS = [2 + sum(_WIDTHS[:kind]) for kind in range(len(_ROWS))]  # after `kind` and `head`


@one_read
def changes_after(conn: Connection, scope: Scope, *, after: int, limit: int) -> Changes:
    """The head, and up to `limit` rows of each table changed after `after` (in stream order)."""
    found: list[list[Any]] = [[] for _ in _TABLES]
    referenced: list[ConversationRow] = []
    head = 0
    rows = _CHANGES[scope.shape].rows(conn, org_id=scope.org_id, medic_id=scope.medic_id, after=after, limit=limit)
    for row in rows:
        kind = row[0]
        if kind == _HEAD_KIND:
            head = int(row[1])
            continue
        if kind == _REFERENCED_KIND:
            start = _STARTS[_CONVERSATIONS]
            referenced.append(ConversationRow(*row[start : start + _WIDTHS[_CONVERSATIONS]]))
            continue
        start = _STARTS[kind]
        found[kind].append(_ROWS[kind](*row[start : start + _WIDTHS[kind]]))
    for table in found:  # each part is in stream order; a UNION ALL promises no order of its own
        table.sort(key=lambda changed: changed.position)
    found_users, found_conversations, found_messages, found_statuses = found
    return Changes(head, found_users, found_conversations, found_messages, found_statuses, referenced)
