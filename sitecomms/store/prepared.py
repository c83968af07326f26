"""Prepared statements for the hot paths: built once, compiled once per dialect.

Building a Core statement, computing its cache key and looking up its compiled form costs
tens of microseconds per `execute`, several times what SQLite takes to run it (measured in
docs/performance.md). A send runs seven statements, so the hot paths (send, the stream
position, the feed head) use `Prepared`: a statement built once at import with named
`bindparam`s.

On SQLite, `Prepared` compiles the statement once and runs the SQL on the raw `sqlite3`
connection inside the caller's transaction, applying SQLAlchemy's own bind and result
processors, so values are exactly what `conn.execute` gives (UTC datetimes included). Driver
errors are wrapped in SQLAlchemy's exception classes (`IntegrityError`, `OperationalError`)
as `conn.execute` would. On every other dialect it is `conn.execute(statement, params)`:
only the construction is saved there, and SQLAlchemy's compiled cache does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

Processor = Callable[[Any], Any] | None


class _Compiled:
    __slots__ = ("binds", "defaults", "results", "returns_rows", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled: Any = statement.compile(dialect=dialect)
        if compiled.positiontup is None:
            raise ValueError(f"{dialect.name}: prepared statements need a positional paramstyle")
        processors = compiled._bind_processors
        self.sql: str = compiled.string
        self.binds: list[tuple[str, Processor]] = [(name, processors.get(name)) for name in compiled.positiontup]
        self.defaults = {
            name: bind.value for name, bind in compiled.binds.items() if not bind.required and bind.value is not None
        }
        self.results: list[Processor] = [
            column.type._cached_result_processor(dialect, None) for column in compiled._result_columns
        ]
        self.returns_rows = bool(compiled._result_columns)

    def parameters(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, process in self.binds:
            value = params[name] if name in params else self.defaults[name]
            values.append(value if process is None else process(value))
        return values

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None else process(value) for value, process in zip(raw, self.results, strict=True)
        )


class Prepared:
    """One statement with named parameters; see the module doc."""

    __slots__ = ("_sqlite", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._sqlite: _Compiled | None = None

    def rows(self, conn: Connection, **params: Any) -> list[tuple[Any, ...]]:
        if conn.dialect.name != "sqlite":
            return [tuple(row) for row in conn.execute(self.statement, params)]  # type: ignore[call-overload]
        compiled = self._compiled(conn)
        cursor = self._execute(conn, compiled, params)
        try:
            return [compiled.row(raw) for raw in cursor.fetchall()]
        finally:
            cursor.close()

    def first(self, conn: Connection, **params: Any) -> tuple[Any, ...] | None:
        rows = self.rows(conn, **params)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, **params: Any) -> Any:
        row = self.first(conn, **params)
        return None if row is None else row[0]

    def run(self, conn: Connection, **params: Any) -> int:
        """Execute a statement that returns no rows; the number of rows it changed."""
        if conn.dialect.name != "sqlite":
            return int(conn.execute(self.statement, params).rowcount)  # type: ignore[call-overload]
        cursor = self._execute(conn, self._compiled(conn), params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _compiled(self, conn: Connection) -> _Compiled:
        if self._sqlite is None:
            self._sqlite = _Compiled(self.statement, conn.dialect)
        return self._sqlite

    @staticmethod
    def _execute(conn: Connection, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = compiled.parameters(params)
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            return raw.execute(compiled.sql, values)
        except conn.dialect.loaded_dbapi.Error as error:
            raise exc.DBAPIError.instance(
                compiled.sql, values, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from error
