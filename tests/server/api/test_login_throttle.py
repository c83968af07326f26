"""Login throttling over HTTP (the app as `create_app` builds it, SQLite and PostgreSQL).

The app allows `login_failures_allowed` (5) failures per account and four times as many per
client address; the next failure blocks for 2 s. Each test signs in from addresses of its own
(the in-process transport's `client`), so the counts of other tests, which all come from the
shared client's address, never meet these.

- Past the account's allowance, sign-in answers 429 `rate_limited` with an integer
  Retry-After, even with the right password; another account from the same address is not
  affected, and the blocked account from another address is blocked all the same.
- A success forgets the account's failures.
- A flood of unknown emails from one address blocks that address (for a member with the right
  password too), not another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.conftest import Stack
from tests.support import PASSWORD, Orgs

TIMEOUT = 30.0
ALLOWED = 5  # Settings.login_failures_allowed's default, which the test stack keeps
ADDRESS_ALLOWED = 4 * ALLOWED


@asynccontextmanager
async def from_address(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app whose requests come from an address no other test uses."""
    address = f"192.0.2.{uuid.uuid4().int % 250 + 1}-{uuid.uuid4().hex[:8]}"
    transport = httpx.ASGITransport(app=stack.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test") as client:
        yield client


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await asyncio.wait_for(client.post("/v1/auth/login", json={"email": email, "password": password}), TIMEOUT)


def assert_throttled(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
    return int(retry_after)


async def test_past_the_allowance_the_account_is_refused_even_with_its_password(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=0, medics=2)
    victim, colleague = world.medics
    async with from_address(stack) as client, from_address(stack) as elsewhere:
        for _ in range(ALLOWED + 1):
            assert (await login(client, victim.email, "wrong password")).status_code == 401
        assert assert_throttled(await login(client, victim.email, PASSWORD)) <= 2
        assert_throttled(await login(elsewhere, victim.email.upper(), PASSWORD))  # the account, from anywhere
        assert (await login(client, colleague.email, PASSWORD)).status_code == 200  # the address is not blocked


async def test_a_success_forgets_the_accounts_failures(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(admins=0, medics=1)).medics[0]
    async with from_address(stack) as client:
        for _ in range(2):
            for _ in range(ALLOWED):
                assert (await login(client, medic.email, "wrong password")).status_code == 401
            assert (await login(client, medic.email, PASSWORD)).status_code == 200


async def test_a_flood_of_unknown_emails_blocks_its_address_only(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(admins=0, medics=1)).medics[0]
    async with from_address(stack) as flooding, from_address(stack) as elsewhere:
        for i in range(ADDRESS_ALLOWED + 1):
            response = await login(flooding, f"nobody-{i}-{uuid.uuid4().hex[:6]}@nowhere.example", "guess")
            assert response.status_code == 401, (i, response.text)
        assert_throttled(await login(flooding, medic.email, PASSWORD))
        assert (await login(elsewhere, medic.email, PASSWORD)).status_code == 200


async def test_a_burst_of_guesses_is_counted_as_it_comes(stack: Stack, orgs: Orgs) -> None:
    """Guesses sent at once do not all pass the check before the first failure is counted."""
    victim = (await orgs.make(admins=0, medics=1)).medics[0]
    async with from_address(stack) as client:
        answers = await asyncio.gather(*(login(client, victim.email, f"guess number {i}") for i in range(15)))
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(401) == ALLOWED + 1, statuses  # the 6th failure starts the block
    assert statuses.count(429) == 15 - (ALLOWED + 1), statuses
