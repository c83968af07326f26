"""Which rows of an org a read may return: the shape of a filter, nothing more.

`Scope(org_id)` is every row of the org. `Scope(org_id, medic_id)` is the org's broadcast and
that medic's direct conversation, the messages in them, their read statuses except other
users' in the broadcast, and the medic's own user row. The query modules translate each shape
into statements (one variant per shape, `SHAPES`); who is given which scope is the visibility
policy's decision (`server/services/visibility.py`), not the store's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam

from sitecomms.store.statements import Statement

# The shapes a scope can take, in the order of `Scope.shape`: each one's name (in statement
# names) and whether it is a medic's. Query modules build one statement per shape from this.
SHAPES = (("org", False), ("medic", True))


@dataclass(frozen=True, slots=True)
class Scope:
    org_id: str
    medic_id: str | None = None

    @property
    def whole_org(self) -> bool:
        return self.medic_id is None

    @property
    def shape(self) -> int:
        """The index of this scope's shape in `SHAPES` (and in each list of per-shape statements)."""
        return 0 if self.medic_id is None else 1


def changed_after(table: str, scoped: Callable[[bool], Select[Any]], position: ColumnElement[Any]) -> list[Statement]:
    """Per shape, a table's rows a scope may see that changed after `:after`, in stream order,
    at most `:limit`: the stream read every table answers (`<table>.changed.<shape>`)."""
    return [
        Statement(
            f"{table}.changed.{shape}",
            scoped(medic).where(position > bindparam("after")).order_by(position).limit(bindparam("limit")),
        )
        for shape, medic in SHAPES
    ]
