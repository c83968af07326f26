"""Fixtures: every API test runs on SQLite and on the real PostgreSQL (mandatory, never skipped)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sitecomms.config import Settings
from sitecomms.server.app import build_accounts, build_signin, create_app
from sitecomms.server.services.accounts import Accounts
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store.database import Database, open_database
from tests.servers import fresh_database
from tests.support import Orgs, create_postgres_database, drop_postgres_database, fast_settings

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'sitecomms.db'}"
        return
    name = f"sitecomms_test_{uuid.uuid4().hex[:10]}"
    try:
        url = await create_postgres_database(name)
    except OSError as exc:  # pragma: no cover - the run must fail, not skip
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable: {exc}")
    yield url
    await drop_postgres_database(name)


@dataclass
class Stack:
    """The app under test, a client driving it in-process, and services for setting up data."""

    settings: Settings
    app: FastAPI
    client: httpx.AsyncClient
    db: Database
    accounts: Accounts
    orgs: Orgs
    address: str = "127.0.0.1"  # where this test's requests come from (see `stack`)

    @property
    def dialect(self) -> str:
        return self.db.dialect


@pytest.fixture(scope="session")
async def _stack(database_url: str) -> AsyncIterator[tuple[Stack, httpx.ASGITransport]]:
    settings = fast_settings(database_url)
    app = create_app(settings)
    db = open_database(database_url, pool_size=4)
    accounts = build_accounts(settings, db, NoPublisher())
    signin = build_signin(settings, db, NoPublisher())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test") as client:
            yield Stack(settings, app, client, db, accounts, Orgs(accounts, signin, client)), transport
    await db.close()


_ADDRESSES = itertools.count(1)


@pytest.fixture
def stack(_stack: tuple[Stack, httpx.ASGITransport]) -> Stack:
    """The session's app; each test's requests come from an address of its own, so the sign-in
    failures one test provokes never throttle another's (the throttle counts per address)."""
    shared, transport = _stack
    number = next(_ADDRESSES)
    shared.address = f"198.18.{number // 250 % 250}.{number % 250 + 1}"
    transport.client = (shared.address, 40000)
    return shared


@pytest.fixture(params=BACKENDS)
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of its own for the test, on SQLite and on the real PostgreSQL."""
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def client(stack: Stack) -> httpx.AsyncClient:
    return stack.client


@pytest.fixture
def orgs(stack: Stack) -> Orgs:
    return stack.orgs


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sitecomms.db'}"
