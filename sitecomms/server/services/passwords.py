"""Password hashing with argon2id: off the event loop, a bounded number at once, constant work
for unknown users.

Hashing and verifying are deliberately expensive, so at most `max_concurrent` run at a time
(each in a worker thread) and at most `max_waiting` more wait for a turn; past that the caller
is told `Busy` (retry shortly) instead of queueing without end. A verification abandoned by
its caller keeps its turn until its thread is done, so the bound holds for the CPU as well.
Sign-in for an unknown user verifies against a dummy hash, through the same queue, so it costs
what a known user's does. `needs_rehash` says when a stored hash was made with other
parameters than today's, so sign-in can store a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sitecomms.server.services.errors import Busy

T = TypeVar("T")

BUSY_RETRY_AFTER_SECONDS = 1


class Passwords:
    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, max_concurrent: int = 1, max_waiting: int = 64
    ) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self._dummy_hash = self._hasher.hash("sitecomms-dummy-password")
        self._turns = asyncio.Semaphore(max_concurrent)
        self._max_waiting = max_waiting
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """How many hash or verify calls wait for a turn now."""
        return self._waiting

    async def hash(self, password: str) -> str:
        return await self._in_turn(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if `password` matches; with no hash, spend the same time and say False."""
        return await self._in_turn(self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True if `password_hash` was made with other parameters than these (or cannot be read)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            ok = self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None

    async def _in_turn(self, work: Callable[..., T], *args: object) -> T:
        """Run `work(*args)` in a thread once a turn is free; `Busy` if too many wait already."""
        if self._turns.locked() and self._waiting >= self._max_waiting:
            raise Busy("the server is busy checking passwords; retry shortly", retry_after=BUSY_RETRY_AFTER_SECONDS)
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        running = asyncio.ensure_future(asyncio.to_thread(work, *args))
        running.add_done_callback(self._end_turn)
        return await asyncio.shield(running)

    def _end_turn(self, done: asyncio.Future[T]) -> None:
        self._turns.release()
        if not done.cancelled():
            done.exception()  # retrieved: a failure nobody awaits any more is not logged as lost
