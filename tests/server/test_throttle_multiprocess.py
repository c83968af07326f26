"""Login throttling across real `sitecomms serve` processes (SQLite file and PostgreSQL).

- Two servers on one database share the counts: 3 failures on A and 3 on B exhaust the
  account's 5 free ones, and the next sign-in on either, right password or not, is 429.
- A legitimate sign-in during a flood: 40 concurrent bad sign-ins (8 wrong passwords of one
  member, 32 unknown emails) against one server that hashes at a real cost, and while they
  queue for the hashing limit another member signs in with the right password. Every request
  here comes from 127.0.0.1, so the address key sees all of them: the server allows 10 failures
  per account, so 40 per address, and the flood is exactly 40. The legitimate sign-in must
  then succeed (200) within a generous bound (the flood's hashes are ahead of it in the
  queue). The 40 concurrent failures must all have been counted (no lost update): one more
  failure blocks the address, and then even the legitimate member is answered 429.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from sitecomms.protocol.enums import Role
from sitecomms.server.app import build_accounts
from sitecomms.server.services.accounts import NewUser
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store import migrate
from sitecomms.store.database import open_database
from tests.servers import BACKENDS, aserving, base_env, fresh_database
from tests.support import PASSWORD, fast_settings

WAIT = 30.0  # seconds for any one request
LEGIT_BOUND = 10.0  # seconds for the legitimate sign-in during the flood
FLOOD_VICTIM, FLOOD_UNKNOWN = 8, 32
COSTLY_HASHING = {"SITECOMMS_ARGON2_TIME_COST": "2", "SITECOMMS_ARGON2_MEMORY_KIB": "8192"}


async def seed_members(url: str, count: int, **hashing: int) -> list[str]:
    """Migrate the database and add `count` medics to a new org; their emails."""
    await asyncio.wait_for(migrate.upgrade_async(url), 60)
    db = open_database(url, pool_size=2)
    try:
        accounts = build_accounts(fast_settings(url, **hashing), db, NoPublisher())
        org = await accounts.create_org(f"Throttle {uuid.uuid4().hex[:8]}")
        emails = [f"{uuid.uuid4().hex[:12]}@throttle.example" for _ in range(count)]
        for i, email in enumerate(emails):
            await accounts.create_user(None, org.id, NewUser(email, f"Medic {i}", Role.MEDIC, PASSWORD))
    finally:
        await db.close()
    return emails


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await asyncio.wait_for(client.post("/v1/auth/login", json={"email": email, "password": password}), WAIT)


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_failures_on_two_servers_add_up(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        (email,) = await asyncio.wait_for(seed_members(url, 1), 60)
        env = base_env(url)
        async with AsyncExitStack() as stack:
            a, b = await asyncio.gather(
                stack.enter_async_context(aserving(env, tmp_path / "a.log")),
                stack.enter_async_context(aserving(env, tmp_path / "b.log")),
            )
            http_a = await stack.enter_async_context(httpx.AsyncClient(base_url=a.base_url, timeout=WAIT))
            http_b = await stack.enter_async_context(httpx.AsyncClient(base_url=b.base_url, timeout=WAIT))
            for client in (http_a, http_b, http_a, http_b, http_a, http_b):
                response = await login(client, email, "wrong password")
                assert response.status_code == 401, response.text
            assert_throttled(await login(http_a, email, PASSWORD))
            assert_throttled(await login(http_b, email, PASSWORD))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_legitimate_sign_in_during_a_flood_is_answered_in_bounded_time(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        victim, legit = await asyncio.wait_for(seed_members(url, 2, argon2_time_cost=2, argon2_memory_kib=8192), 60)
        env = base_env(url, SITECOMMS_LOGIN_FAILURES_ALLOWED="10", **COSTLY_HASHING)
        async with (
            aserving(env, tmp_path / "server.log") as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=WAIT, limits=httpx.Limits(max_connections=64)) as http,
        ):
            bad = [(victim, f"wrong {i}") for i in range(FLOOD_VICTIM)]
            bad += [(f"nobody-{i}-{uuid.uuid4().hex[:6]}@nowhere.example", "guess") for i in range(FLOOD_UNKNOWN)]
            flood = [asyncio.create_task(login(http, email, password)) for email, password in bad]
            try:
                await asyncio.wait_for(asyncio.wait(flood, return_when=asyncio.FIRST_COMPLETED), WAIT)
                still_queued = sum(not task.done() for task in flood)
                answer = await asyncio.wait_for(login(http, legit, PASSWORD), LEGIT_BOUND)
                answers = await asyncio.wait_for(asyncio.gather(*flood), WAIT)
            finally:
                for task in flood:
                    task.cancel()
            assert still_queued > 0, "the flood was over before the legitimate sign-in was sent"
            assert answer.status_code == 200, (answer.text, server.describe())
            assert [r.status_code for r in answers] == [401] * len(bad), [
                r.text for r in answers if r.status_code != 401
            ]

            assert (await login(http, "one-more@nowhere.example", "guess")).status_code == 401  # the address's 41st
            assert_throttled(await login(http, legit, PASSWORD))
