"""Test helpers: services infrastructure, organisations with members, and typed API calls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from sitecomms.config import Settings
from sitecomms.protocol.enums import Role
from sitecomms.protocol.requests import SendMessageRequest, body
from sitecomms.server.services.accounts import Accounts, NewUser
from sitecomms.server.services.signin import SignIn
from sitecomms.server.services.visibility import Viewer
from sitecomms.store.database import sqlite_file

POSTGRES_ADMIN_URL = os.environ.get("SITECOMMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
JWT_SECRET = "test-secret-test-secret-test-secret-0123456789"
PASSWORD = "correct horse battery"
# One VAPID key for every app and server this test process starts (its directory is the
# owner's only), instead of one beside each database, or in the working directory on PostgreSQL.
PUSH_KEY_FILE = Path(tempfile.mkdtemp(prefix="sitecomms-test-push-")) / "push.vapid"


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings with cheap password hashing and a fixed secret (tests only)."""
    values: dict[str, Any] = dict(
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        argon2_time_cost=1,
        argon2_memory_kib=64,
        argon2_parallelism=1,
        sqlite_synchronous="NORMAL",
        push_key_file=PUSH_KEY_FILE,
    )
    values.update(overrides)
    return Settings(**values)


async def _as_postgres_admin(*statements: str) -> None:
    engine = create_async_engine(
        POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def small_disk(directory: Path, size_mib: int = 16) -> Iterator[Path]:
    """A tmpfs of `size_mib` MiB mounted under `directory` (a disk that can really be filled; root only)."""
    if os.geteuid() != 0:
        pytest.skip("a disk that can be filled is a tmpfs mounted for the test: that needs root (CI runs as root)")
    mount_point = directory / f"disk-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def write_refusal(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Two coroutines: make the database at `url` refuse writes while reads still answer, and undo it.

    Real refusals, as root: SQLite's file lives on a `small_disk` that is filled up (its WAL
    checkpointed and truncated first, so the next write must grow it: SQLITE_FULL), then
    emptied; PostgreSQL's database gets `default_transaction_read_only` (a standby's or a
    maintenance window's refusal, 25006) and the connections to it are ended, so the server
    reconnects into it.
    """
    path = sqlite_file(url)
    if path is not None:
        filler = path.with_name("filler")

        async def fill_the_disk() -> None:
            conn = sqlite3.connect(path, timeout=10)
            try:
                for _ in range(200):  # the server's checkpointer may be running a checkpoint: then busy
                    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    if not busy:
                        break
                    await asyncio.sleep(0.01)
            finally:
                conn.close()
            assert busy == 0, "the WAL could not be truncated within 2 s"
            with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):  # until ENOSPC
                while True:
                    out.write(b"\0" * 65536)

        async def empty_the_disk() -> None:
            filler.unlink()

        return fill_the_disk, empty_the_disk
    name = url.rsplit("/", 1)[1]
    others = (
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )

    async def refuse_postgres() -> None:
        await _as_postgres_admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on', others)

    async def allow_postgres() -> None:
        await _as_postgres_admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only', others)

    return refuse_postgres, allow_postgres


async def create_postgres_database(name: str) -> str:
    """Create an empty database on the real server; fails loudly when PostgreSQL is not there."""
    await _as_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


async def drop_postgres_database(name: str) -> None:
    await _as_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Member:
    id: str
    email: str
    display_name: str
    role: Role
    org_id: str
    token: str
    conversation_id: str | None = None  # a medic's direct conversation

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.id, self.org_id, self.role)


@dataclass
class World:
    """One organisation and its members."""

    org_id: str
    name: str
    broadcast_id: str
    admins: list[Member] = field(default_factory=list)
    medics: list[Member] = field(default_factory=list)

    @property
    def members(self) -> list[Member]:
        return self.admins + self.medics


class Orgs:
    """Makes organisations with members straight through the services (fast, no HTTP)."""

    def __init__(self, accounts: Accounts, signin: SignIn, client: httpx.AsyncClient) -> None:
        self.accounts = accounts
        self.signin = signin
        self.client = client

    async def make(self, *, admins: int = 1, medics: int = 2, name: str | None = None) -> World:
        tag = uuid.uuid4().hex[:8]
        org = await self.accounts.create_org(name or f"Org {tag}")
        world = World(org_id=org.id, name=org.name, broadcast_id="")
        for i in range(admins):
            world.admins.append(await self.add(world, Role.ADMIN, f"Admin {i} {tag}"))
        for i in range(medics):
            world.medics.append(await self.add(world, Role.MEDIC, f"Medic {i} {tag}"))
        conversations = await self.get(world.admins[0], "/v1/conversations") if admins else None
        if conversations is not None:
            by_medic = {c["medic_id"]: c["id"] for c in conversations["conversations"]}
            world.broadcast_id = by_medic[None]
            for medic in world.medics:
                medic.conversation_id = by_medic[medic.id]
        return world

    async def add(self, world: World, role: Role, display_name: str) -> Member:
        email = f"{uuid.uuid4().hex[:12]}@{role.value}.example"
        user = await self.accounts.create_user(None, world.org_id, NewUser(email, display_name, role, PASSWORD))
        token = (await self.signin.mint_token(email)).access_token
        return Member(user.id, email, display_name, role, world.org_id, token)

    async def get(self, member: Member, path: str, **params: Any) -> Any:
        response = await self.client.get(path, headers=member.headers, params=params or None)
        assert response.status_code == 200, response.text
        return response.json()

    async def send(self, member: Member, conversation_id: str, content: str, key: str | None = None) -> Any:
        request = SendMessageRequest(conversation_id, content, key or uuid.uuid4().hex)
        response = await self.client.post("/v1/messages", json=body(request), headers=member.headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def sync_all(self, member: Member, cursor: str, limit: int = 500) -> tuple[list[Any], str]:
        """Follow the sync feed from `cursor` until `has_more` is false."""
        changes: list[Any] = []
        while True:
            page = await self.get(member, "/v1/sync", cursor=cursor, limit=limit)
            changes += page["changes"]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return changes, cursor
