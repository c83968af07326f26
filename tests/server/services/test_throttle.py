"""Login throttling against the real store (SQLite and PostgreSQL), with a clock the tests move.

- The delay sequence: `allowed` free failures, then 2, 4, 8 ... seconds, capped; `check` says
  the seconds left and lets sign-in through once they have passed.
- A success forgets the account's count, never the address's.
- A key quiet (no failure, no block) for `quiet` starts again from one; one that failed again
  soon after its block ended keeps counting. `prune` deletes quiet keys, and only those.
- The account and address keys: unknown emails are counted like known ones, emails as sign-in
  normalises them, no account key without an email, and the address allowing more failures.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest

from sitecomms.server.services.errors import Throttled
from sitecomms.server.services.throttle import Throttle, account_key, address_key, delay_seconds
from sitecomms.store import throttle as store
from sitecomms.store.types import utcnow
from tests.conftest import Stack

TIMEOUT = 30.0


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _email() -> str:
    return f"{uuid.uuid4().hex[:12]}@throttle.example"


def _address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"


async def _blocked_for(throttle: Throttle, email: str, address: str) -> int | None:
    """The Retry-After seconds `check` answers, or None when sign-in may go on."""
    try:
        await asyncio.wait_for(throttle.check(email, address), TIMEOUT)
    except Throttled as exc:
        assert exc.retry_after is not None
        return exc.retry_after
    return None


async def _fail(throttle: Throttle, email: str, address: str, times: int = 1) -> None:
    for _ in range(times):
        await asyncio.wait_for(throttle.failed(email, address), TIMEOUT)


async def _failures(stack: Stack, key: str) -> int | None:
    rows = await stack.db.read("test_throttle_rows", store.rows_of, [key])
    return rows[0].failures if rows else None


def test_the_delay_doubles_after_the_allowed_failures_up_to_the_cap() -> None:
    cap = timedelta(minutes=15)
    assert [delay_seconds(n, 5, cap) for n in range(1, 11)] == [0, 0, 0, 0, 0, 2, 4, 8, 16, 32]
    assert delay_seconds(15, 5, cap) == 900 and delay_seconds(10**6, 5, cap) == 900


async def test_each_failure_past_the_allowed_blocks_twice_as_long(stack: Stack) -> None:
    clock = Clock(utcnow())
    throttle = Throttle(stack.db, allowed=3, address_factor=100, max_delay=timedelta(seconds=20), clock=clock)
    email, address = _email(), _address()
    for _ in range(3):
        assert await _blocked_for(throttle, email, address) is None
        await _fail(throttle, email, address)
    seen = []
    for _ in range(5):
        assert await _blocked_for(throttle, email, address) is None
        await _fail(throttle, email, address)
        blocked = await _blocked_for(throttle, email, address)
        assert blocked is not None
        seen.append(blocked)
        clock.advance(blocked - 0.5)
        assert await _blocked_for(throttle, email, address) == 1  # half a second left: rounded up
        clock.advance(0.5)
    assert seen == [2, 4, 8, 16, 20]
    assert await _failures(stack, account_key(email) or "") == 8


async def test_a_success_forgets_the_accounts_failures_but_not_the_addresss(stack: Stack) -> None:
    clock = Clock(utcnow())
    throttle = Throttle(stack.db, allowed=2, address_factor=2, clock=clock)
    email, other, address = _email(), _email(), _address()
    await _fail(throttle, email, address, 2)
    await asyncio.wait_for(throttle.succeeded(email, address), TIMEOUT)
    assert await _failures(stack, account_key(email) or "") is None
    assert await _failures(stack, address_key(address)) == 2
    await _fail(throttle, email, address, 2)  # two again: still within the account's allowance
    assert await _blocked_for(throttle, email, address) is None
    await _fail(throttle, other, address)  # the address's fifth: past its 2 x 2
    assert await _blocked_for(throttle, _email(), address) == 2  # anyone from that address
    assert await _blocked_for(throttle, email, _address()) is None  # the account from elsewhere: 2, allowed


async def test_a_quiet_key_starts_afresh_and_a_key_failing_soon_after_its_block_does_not(stack: Stack) -> None:
    clock = Clock(utcnow())
    quiet = timedelta(seconds=60)
    throttle = Throttle(stack.db, allowed=1, address_factor=100, quiet=quiet, clock=clock)
    email, address = _email(), _address()
    key = account_key(email) or ""
    await _fail(throttle, email, address, 8)  # blocked 2**7 = 128 s
    clock.advance(100)  # the last failure is older than `quiet`, the block is not over
    assert await _blocked_for(throttle, email, address) == 28
    clock.advance(50)  # the block ended 22 s ago
    await _fail(throttle, email, address)
    assert await _failures(stack, key) == 9
    assert await _blocked_for(throttle, email, address) == 256
    clock.advance(256 + quiet.total_seconds() + 1)
    await _fail(throttle, email, address)
    assert await _failures(stack, key) == 1
    assert await _blocked_for(throttle, email, address) is None


async def test_prune_deletes_the_quiet_keys_only(stack: Stack) -> None:
    clock = Clock(utcnow() - timedelta(hours=2))
    throttle = Throttle(stack.db, allowed=1, max_delay=timedelta(minutes=30), clock=clock)
    old, blocked, recent, address = _email(), _email(), _email(), _address()
    await _fail(throttle, old, address)
    clock.advance(5100)
    await _fail(throttle, blocked, address, 12)  # 35 min before now, blocked for 30 min: until 5 min ago
    clock.now = utcnow()
    await _fail(throttle, recent, address)
    assert await asyncio.wait_for(throttle.prune(), TIMEOUT) >= 1
    assert await _failures(stack, account_key(old) or "") is None
    assert await _failures(stack, account_key(blocked) or "") == 12  # its block ended within `quiet`
    assert await _failures(stack, account_key(recent) or "") == 1


@pytest.mark.parametrize("known", [True, False], ids=["member", "unknown"])
async def test_the_account_key_counts_any_email_as_sign_in_normalises_it(stack: Stack, known: bool) -> None:
    throttle = Throttle(stack.db, allowed=2, address_factor=100)
    email = (await stack.orgs.make(admins=0, medics=1)).medics[0].email if known else _email()
    await _fail(throttle, email, _address())
    await _fail(throttle, f"  {email.upper()} ", _address())
    await _fail(throttle, email, _address())
    assert await _failures(stack, account_key(email) or "") == 3
    assert await _blocked_for(throttle, email, _address()) == 2


async def test_without_an_email_only_the_address_counts(stack: Stack) -> None:
    throttle = Throttle(stack.db, allowed=1, address_factor=3)
    address = _address()
    assert account_key("  ") is None
    await _fail(throttle, "", address, 3)
    assert await _blocked_for(throttle, "", address) is None
    await _fail(throttle, "", address)
    assert await _failures(stack, address_key(address)) == 4
    assert await _blocked_for(throttle, "", address) == 2
    assert await _blocked_for(throttle, _email(), address) == 2
    await asyncio.wait_for(throttle.succeeded("", address), TIMEOUT)  # nothing to forget
    assert await _failures(stack, address_key(address)) == 4
