"""Password hashing: verification, rehash after a parameter change, and the bounded queue
(`max_concurrent` at work, `max_waiting` waiting, then `Busy`). The hasher's work is held
on a threading event, so the tests decide when it ends instead of sleeping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from sitecomms.protocol.errors import ErrorCode
from sitecomms.server.services.errors import Busy, Failure, describe
from sitecomms.server.services.passwords import Passwords

TIMEOUT = 10.0


def cheap(**overrides: int) -> Passwords:
    return Passwords(**{"time_cost": 1, "memory_kib": 64, "parallelism": 1, **overrides})


class Gate:
    """Holds each hash or verify in its worker thread until `open()`; says when one has started."""

    def __init__(self, passwords: Passwords) -> None:
        self._open = threading.Event()
        self.started = threading.Semaphore(0)
        self._hasher = passwords._hasher
        passwords._hasher = self  # type: ignore[assignment]  # stands in for the PasswordHasher

    def hash(self, password: str) -> str:
        self._hold()
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        self._hold()
        return self._hasher.verify(password_hash, password)

    def _hold(self) -> None:
        self.started.release()
        assert self._open.wait(TIMEOUT), "the test never opened the gate"

    async def one_started(self) -> None:
        assert await asyncio.to_thread(self.started.acquire, timeout=TIMEOUT), "no work started"

    def open(self) -> None:
        self._open.set()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run the other tasks until `condition` holds (a bounded number of turns)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_hash_verify_and_unknown_users() -> None:
    passwords = cheap()
    stored = await passwords.hash("correct horse battery")
    assert await passwords.verify(stored, "correct horse battery")
    assert not await passwords.verify(stored, "wrong horse battery")
    assert not await passwords.verify(None, "sitecomms-dummy-password"), "no user: never true, even for the dummy"
    assert not await passwords.verify("not-a-hash", "anything")


async def test_needs_rehash_when_the_parameters_change() -> None:
    stored = await cheap().hash("correct horse battery")
    assert not cheap().needs_rehash(stored)
    assert cheap(time_cost=2).needs_rehash(stored)
    assert cheap(memory_kib=128).needs_rehash(stored)
    assert cheap().needs_rehash("not-a-hash"), "an unreadable hash is replaced at the next sign-in"


async def test_past_max_waiting_callers_are_told_busy_with_a_retry_time() -> None:
    passwords = cheap(max_concurrent=1, max_waiting=2)
    gate = Gate(passwords)
    async with asyncio.timeout(TIMEOUT):
        working = asyncio.create_task(passwords.hash("first password"))
        await gate.one_started()
        waiting = [asyncio.create_task(passwords.verify(None, "unknown user")) for _ in range(2)]
        await until(lambda: passwords.waiting == 2)  # unknown users queue like anyone else

        with pytest.raises(Busy) as busy:
            await passwords.hash("one too many")
        assert describe(busy.value) == Failure(ErrorCode.UNAVAILABLE, busy.value.message, retry_after=1)
        assert passwords.waiting == 2, "the refused call did not take a place"

        gate.open()
        assert (await working).startswith("$argon2id$")
        assert await asyncio.gather(*waiting) == [False, False]
        assert passwords.waiting == 0
        assert await passwords.verify(await passwords.hash("again"), "again"), "the turns were all given back"


async def test_at_most_max_concurrent_run_at_once() -> None:
    passwords = cheap(max_concurrent=2, max_waiting=0)
    gate = Gate(passwords)
    async with asyncio.timeout(TIMEOUT):
        running = [asyncio.create_task(passwords.hash(f"password {n}")) for n in range(2)]
        await gate.one_started()
        await gate.one_started()
        with pytest.raises(Busy):  # both turns taken and no room to wait
            await passwords.hash("third")
        gate.open()
        assert len(set(await asyncio.gather(*running))) == 2


async def test_a_cancelled_call_keeps_its_turn_until_its_thread_is_done() -> None:
    passwords = cheap(max_concurrent=1, max_waiting=1)
    gate = Gate(passwords)
    async with asyncio.timeout(TIMEOUT):
        abandoned = asyncio.create_task(passwords.hash("abandoned"))
        await gate.one_started()
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        next_one = asyncio.create_task(passwords.hash("next"))
        await until(lambda: passwords.waiting == 1)  # the abandoned hash still runs: the next one waits
        assert not next_one.done()
        gate.open()
        assert (await next_one).startswith("$argon2id$")
        assert passwords.waiting == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    passwords = cheap(max_concurrent=1, max_waiting=1)
    gate = Gate(passwords)
    async with asyncio.timeout(TIMEOUT):
        working = asyncio.create_task(passwords.hash("working"))
        await gate.one_started()
        waiter = asyncio.create_task(passwords.hash("waiter"))
        await until(lambda: passwords.waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert passwords.waiting == 0
        replacement = asyncio.create_task(passwords.hash("replacement"))  # room again: no Busy
        await until(lambda: passwords.waiting == 1)
        gate.open()
        await asyncio.gather(working, replacement)
