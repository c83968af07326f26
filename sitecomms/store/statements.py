"""The one way the store runs SQL: `Statement`, built once, compiled once per dialect.

Building a Core statement, computing its cache key and looking up its compiled form costs
tens of microseconds per `execute`, several times what SQLite takes to run it (measured in
docs/performance.md), and a send runs several statements. So every query of the store is a
module-level `Statement(name, core_statement)` with named `bindparam`s, run by
`rows/first/scalar/run(conn, **params)` (`run_many(conn, rows)` for a batch of inserts); rows come
back as plain tuples in the order of the statement's columns.

- **SQLite** and **PostgreSQL in the server** (the fast paths): the statement is compiled once
  per dialect with SQLAlchemy's public compiler API (`positiontup`, `binds`, and each type's
  `dialect_impl(dialect)` bind and result processors), and the SQL runs on the raw driver
  inside the caller's transaction, so values are exactly what `conn.execute` gives (UTC
  datetimes included). On SQLite that is the `sqlite3` connection under SQLAlchemy's; driver
  errors are wrapped in SQLAlchemy's exception classes (`DBAPIError.instance`), as
  `conn.execute` does. On PostgreSQL it is the transaction's asyncpg connection (`PgConnection`,
  pg.py: prepared once per connection), whose errors are given the same SQLAlchemy shape
  (`pg.driver_error`). IN-lists are `bindparam(..., expanding=True)`; a list is
  padded (with its last element, which an IN ignores) to the next power of two, and each
  padded length is compiled once (`construct_expanded_state`): a small fixed set of variants,
  never one per call.
- **SQLAlchemy's own PostgreSQL connections** (the CLI's and migrations', `blocking.py`) run
  `conn.execute(statement, params)`: the statement is still built once, and SQLAlchemy
  compiles it once into its compiled cache.

Every `Statement` is recorded in `REGISTRY` by its unique name, so tests can check that each
one gives the same rows through this path as through plain `conn.execute`
(tests/store/test_statements.py). `dialects` names the engines a statement is written for
(the parity test runs it on those only); nothing checks it at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import ReturnsRows

from sitecomms.store.pg import PgConnection

Processor = Callable[[Any], Any] | None

Connection = SAConnection | PgConnection
"""What a transaction function gets: the server's PostgreSQL transactions get a `PgConnection`;
SQLite's, and the CLI's and migrations' on PostgreSQL (`blocking.py`), SQLAlchemy's."""

REGISTRY: dict[str, Statement] = {}

_NOT_A_LIST = -1
# A statement that changes rows or takes a lock that lasts to COMMIT (SQLAlchemy writes keywords
# in capitals, and every name of the schema is in lower case): it may not run outside a
# transaction unless its function says so (pg.py).
_CHANGES = re.compile(r"\b(INSERT|UPDATE|DELETE|SHARE)\b|_xact_lock\(")


class _Plan:
    """One compiled form (SQLite's, or asyncpg's): the SQL, whether it `changes` anything,
    where each positional value comes from, processors.

    The hot loops touch only what needs work: values are taken by name, then only the
    positions with a processor (or an IN-list element) are rewritten."""

    __slots__ = ("changes", "defaults", "names", "results", "special", "sql")

    def __init__(self, sql: str, binds: list[tuple[str, int, Any, Processor]], results: list[Processor]) -> None:
        self.sql = sql
        self.changes = _CHANGES.search(sql) is not None
        self.names = [name for name, _, _, _ in binds]
        # Values the statement itself holds (literals), which a caller's parameter may override.
        self.defaults = {name: default for name, _, default, _ in binds if default is not None}
        # (position, parameter name, index into its list or _NOT_A_LIST, bind processor)
        self.special = [
            (position, name, index, process)
            for position, (name, index, _, process) in enumerate(binds)
            if process is not None or index != _NOT_A_LIST
        ]
        self.results = [(position, process) for position, process in enumerate(results) if process is not None]

    def parameters(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional values; a KeyError names a required parameter the caller left out."""
        if self.defaults:
            params = self.defaults | dict(params)
        values = [params[name] for name in self.names]
        for position, name, index, process in self.special:
            value = params[name]
            if index != _NOT_A_LIST:
                value = value[index] if index < len(value) else value[-1]
            values[position] = value if process is None else process(value)
        return values

    def row(self, raw: Sequence[Any]) -> Sequence[Any]:
        if not self.results:
            return raw
        values = list(raw)
        for position, process in self.results:
            values[position] = process(values[position])
        return values


class Statement:
    """One named statement with named parameters; see the module doc."""

    __slots__ = ("_compiled", "_fixed", "_lists", "_plans", "dialects", "name", "statement")

    def __init__(self, name: str, statement: Executable, *, dialects: tuple[str, ...] | None = None) -> None:
        if name in REGISTRY:
            raise ValueError(f"two statements named {name!r}")
        self.name = name
        self.statement = statement
        self.dialects = dialects
        self._fixed: dict[str, _Plan] = {}  # by dialect: the plan, when the statement has no IN-list
        self._plans: dict[tuple[str, tuple[int, ...]], _Plan] = {}  # by dialect and padded list lengths
        self._compiled: dict[str, SQLCompiler] = {}
        self._lists: tuple[str, ...] | None = None  # names of the expanding parameters
        REGISTRY[name] = self

    def __repr__(self) -> str:
        return f"Statement({self.name!r})"

    def rows(self, conn: Connection, **params: Any) -> list[Sequence[Any]]:
        if isinstance(conn, PgConnection):
            plan = self._plan(conn.dialect, params)
            return [plan.row(raw) for raw in conn.fetch(plan.sql, plan.parameters(params), plan.changes)]
        if conn.dialect.name != "sqlite":
            return list(conn.execute(self.statement, params))
        plan = self._plan(conn.dialect, params)
        cursor = _execute(conn, plan, params)
        try:
            return [plan.row(raw) for raw in cursor.fetchall()]
        finally:
            cursor.close()

    def first(self, conn: Connection, **params: Any) -> Sequence[Any] | None:
        """The first row, or None (a write's RETURNING row: its changes are all made by then)."""
        if isinstance(conn, PgConnection):
            plan = self._plan(conn.dialect, params)
            found = conn.fetchrow(plan.sql, plan.parameters(params), plan.changes)
            return None if found is None else plan.row(found)
        if conn.dialect.name != "sqlite":
            return conn.execute(self.statement, params).first()
        plan = self._plan(conn.dialect, params)
        cursor = _execute(conn, plan, params)
        try:
            raw = cursor.fetchone()
        finally:
            cursor.close()
        return None if raw is None else plan.row(raw)

    def scalar(self, conn: Connection, **params: Any) -> Any:
        row = self.first(conn, **params)
        return None if row is None else row[0]

    def run(self, conn: Connection, **params: Any) -> int:
        """Execute a statement that returns no rows; the number of rows it changed."""
        if isinstance(conn, PgConnection):
            plan = self._plan(conn.dialect, params)
            return conn.execute(plan.sql, plan.parameters(params), plan.changes)
        if conn.dialect.name != "sqlite":
            return int(conn.execute(self.statement, params).rowcount)
        cursor = _execute(conn, self._plan(conn.dialect, params), params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute a statement (without IN-lists) once per parameter set, in one driver call."""
        if not rows:
            return
        if isinstance(conn, PgConnection):
            plan = self._plan(conn.dialect, rows[0])
            conn.executemany(plan.sql, [plan.parameters(row) for row in rows], plan.changes)
            return
        if conn.dialect.name != "sqlite":
            conn.execute(self.statement, [dict(row) for row in rows])
            return
        plan = self._plan(conn.dialect, rows[0])
        _execute_many(conn, plan, [plan.parameters(row) for row in rows])

    # --- compiled once: SQLite, and PostgreSQL's PgConnection -------------------------------

    def _plan(self, dialect: Dialect, params: Mapping[str, Any]) -> _Plan:
        fixed = self._fixed.get(dialect.name)
        if fixed is not None:
            return fixed
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        assert self._lists is not None
        if not self._lists:
            fixed = self._fixed[dialect.name] = self._build(dialect, compiled, {})
            return fixed
        lengths = tuple(_padded(len(params[name])) for name in self._lists)
        plan = self._plans.get((dialect.name, lengths))
        if plan is None:
            expansion = dict(zip(self._lists, lengths, strict=True))
            plan = self._plans[(dialect.name, lengths)] = self._build(dialect, compiled, expansion)
        return plan

    def _compile(self, dialect: Dialect) -> SQLCompiler:
        compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        assert isinstance(compiled, SQLCompiler)
        if compiled.positiontup is None:
            raise ValueError(f"{dialect.name}: statements need a positional paramstyle")
        self._compiled[dialect.name] = compiled
        self._lists = tuple(name for name in compiled.positiontup if compiled.binds[name].expanding)
        return compiled

    def _build(self, dialect: Dialect, compiled: SQLCompiler, lengths: dict[str, int]) -> _Plan:
        assert compiled.positiontup is not None
        sql, order = compiled.string, list(compiled.positiontup)
        source = {name: (name, _NOT_A_LIST) for name in order}
        if lengths:
            # Expand each IN-list to its padded length once; map the expanded names back.
            # (placeholder values: only the lengths matter, the SQL holds no value)
            placeholders = {bind.key: None for bind in compiled.binds.values() if bind.required}
            expanded = compiled.construct_expanded_state(placeholders | {n: [None] * k for n, k in lengths.items()})
            assert expanded.positiontup is not None
            sql, order = expanded.statement, list(expanded.positiontup)
            source = {name: (name, _NOT_A_LIST) for name in order}
            for name, names in expanded.parameter_expansion.items():
                source.update({each: (name, index) for index, each in enumerate(names)})
        binds: list[tuple[str, int, Any, Processor]] = []
        for position_name in order:
            name, index = source[position_name]
            bind = compiled.binds[name]
            default = None if bind.required else bind.effective_value
            binds.append((name, index, default, bind.type.dialect_impl(dialect).bind_processor(dialect)))
        return _Plan(sql, binds, _result_processors(self.statement, dialect))


def _execute(conn: SAConnection, plan: _Plan, params: Mapping[str, Any]) -> Any:
    values = plan.parameters(params)
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        return raw.execute(plan.sql, values)
    except conn.dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(  # no parameters in the message: they hold content and password hashes
            plan.sql, values, error, conn.dialect.loaded_dbapi.Error, hide_parameters=True, dialect=conn.dialect
        ) from error


def _execute_many(conn: SAConnection, plan: _Plan, values: list[list[Any]]) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        raw.executemany(plan.sql, values).close()
    except conn.dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(
            plan.sql, values[0], error, conn.dialect.loaded_dbapi.Error, hide_parameters=True, dialect=conn.dialect
        ) from error


def _padded(length: int) -> int:
    if length == 0:
        raise ValueError("an empty IN-list: the caller answers without a query")
    return 1 << (length - 1).bit_length()


def _result_processors(statement: Executable, dialect: Dialect) -> list[Processor]:
    """The result processor of each column the statement returns (selected or RETURNING)."""
    if not isinstance(statement, ReturnsRows):
        return []
    columns = statement.exported_columns
    return [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
