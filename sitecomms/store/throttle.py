"""Failed sign-in counters (`login_throttle`): one row per throttled key, shared by every process.

A key (services/throttle.py names them: an account or a client address) has a count of
failures, the time of the last one, and the time until which sign-in is refused. A failure is
counted by one upsert that adds one to the count, or starts again at one when the key has been
quiet (no failure and no block) since `quiet_since`; the count comes back from the same
statement, so concurrent failures on several processes each see their own number, and the
block that number earns is set in the same transaction (`record_failure`). `INSERT ... ON
CONFLICT` is written with each dialect's own `insert`, one statement per dialect. Rows quiet
since a cut-off are deleted by `delete_quiet` (through the `last_failure_at` index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sitecomms.store.schema import login_throttle
from sitecomms.store.statements import Connection, Statement
from sitecomms.store.types import UTCDateTime

_t = login_throttle.c


@dataclass(frozen=True, slots=True)
class ThrottleRow:
    key: str
    failures: int
    last_failure_at: datetime
    blocked_until: datetime


_COLUMNS = [_t[name] for name in ThrottleRow.__dataclass_fields__]


def _now() -> Any:
    return bindparam("now", type_=UTCDateTime())


def _failure(insert: Callable[..., Any]) -> Any:
    """One more failure for `key` at `now`, or the first again when it was quiet since `quiet_since`."""
    fresh = insert(login_throttle).values(
        key=bindparam("throttle_key"), failures=1, last_failure_at=_now(), blocked_until=_now()
    )
    quiet = (_t.last_failure_at < bindparam("quiet_since", type_=UTCDateTime())) & (
        _t.blocked_until < bindparam("quiet_since", type_=UTCDateTime())
    )
    return fresh.on_conflict_do_update(
        index_elements=[_t.key],
        set_={"failures": case((quiet, 1), else_=_t.failures + 1), "last_failure_at": _now()},
    ).returning(_t.failures)


_OF_KEYS = Statement("login_throttle.of_keys", select(*_COLUMNS).where(_t.key.in_(bindparam("keys", expanding=True))))
_FAILURE = {
    "sqlite": Statement("login_throttle.failure.sqlite", _failure(sqlite.insert), dialects=("sqlite",)),
    "postgresql": Statement("login_throttle.failure.postgresql", _failure(postgresql.insert), dialects=("postgresql",)),
}
_BLOCK = Statement(
    "login_throttle.block",
    update(login_throttle)
    .where(_t.key == bindparam("throttle_key"))
    .values(blocked_until=bindparam("until", type_=UTCDateTime())),
)
_RESET = Statement("login_throttle.reset", delete(login_throttle).where(_t.key == bindparam("throttle_key")))
_DELETE_QUIET = Statement(
    "login_throttle.delete_quiet",
    delete(login_throttle).where(
        _t.last_failure_at < bindparam("before", type_=UTCDateTime()),
        _t.blocked_until < bindparam("before", type_=UTCDateTime()),
    ),
)


def rows_of(conn: Connection, keys: Sequence[str]) -> list[ThrottleRow]:
    """The rows of those keys that have one (a key never failed, or reset, has none)."""
    if not keys:
        return []
    return [ThrottleRow(*row) for row in _OF_KEYS.rows(conn, keys=list(keys))]


def record_failure(
    conn: Connection,
    key: str,
    *,
    now: datetime,
    quiet_since: datetime,
    block_for: Callable[[int], float],
) -> tuple[int, datetime | None]:
    """Count a failure of `key`; block it until `now + block_for(failures)` seconds when that is > 0.

    Returns the key's failures and the end of its new block (None: not blocked)."""
    failures = int(_FAILURE[conn.dialect.name].scalar(conn, throttle_key=key, now=now, quiet_since=quiet_since))
    seconds = block_for(failures)
    if seconds <= 0:
        return failures, None
    until = now + timedelta(seconds=seconds)
    _BLOCK.run(conn, throttle_key=key, until=until)
    return failures, until


def reset(conn: Connection, key: str) -> bool:
    """Forget the key's failures; False if it had none."""
    return _RESET.run(conn, throttle_key=key) == 1


def delete_quiet(conn: Connection, before: datetime) -> int:
    """Delete every key with neither a failure nor a block since `before`; how many."""
    return _DELETE_QUIET.run(conn, before=before)
