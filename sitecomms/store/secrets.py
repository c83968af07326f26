"""Server-wide secrets kept in the database, so every process on one database shares them."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import insert, select

from sitecomms.store import blocking
from sitecomms.store.database import Connection
from sitecomms.store.errors import Duplicate, translate
from sitecomms.store.schema import server_secrets


def get_or_create_secret(conn: Connection, name: str, make: Callable[[], str]) -> str:
    found = conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name)).scalar()
    if found is not None:
        return str(found)
    value = make()
    try:
        with conn.begin_nested():
            conn.execute(insert(server_secrets).values(name=name, value=value))
    except Exception as exc:
        if not isinstance(translate(exc, "create_secret"), Duplicate):
            raise
        # another process made it first
        return str(conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name)).scalar_one())
    return value


def ensure_secret(url: str, name: str, make: Callable[[], str]) -> str:
    """Blocking: read the named secret from the database at `url`, creating it if absent."""
    return blocking.run(url, "ensure_secret", get_or_create_secret, name, make)
