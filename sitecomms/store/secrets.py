"""Server-wide secrets kept in the database, so every process on one database shares them."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import bindparam, insert, select

from sitecomms.store import blocking
from sitecomms.store.database import Connection
from sitecomms.store.errors import Duplicate, translate
from sitecomms.store.schema import server_secrets
from sitecomms.store.statements import Statement

_BY_NAME = Statement(
    "secrets.by_name", select(server_secrets.c.value).where(server_secrets.c.name == bindparam("name"))
)
_INSERT = Statement("secrets.insert", insert(server_secrets).values(name=bindparam("name"), value=bindparam("value")))


def get_or_create_secret(conn: Connection, name: str, make: Callable[[], str]) -> str:
    found = _BY_NAME.scalar(conn, name=name)
    if found is not None:
        return str(found)
    value = make()
    try:
        with conn.begin_nested():
            _INSERT.run(conn, name=name, value=value)
    except Exception as exc:
        if not isinstance(translate(exc, "create_secret"), Duplicate):
            raise
        # another process made it first
        found = _BY_NAME.scalar(conn, name=name)
        if found is None:  # never a secret of "None": fail closed
            raise LookupError(f"the secret {name!r} was neither created nor found") from exc
        return str(found)
    return value


def ensure_secret(url: str, name: str, make: Callable[[], str]) -> str:
    """Blocking: read the named secret from the database at `url`, creating it if absent."""
    return blocking.run(url, "ensure_secret", get_or_create_secret, name, make)
