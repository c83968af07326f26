"""Login throttling: failed sign-ins counted per account and per client address, in the database.

`Throttle` is the `LoginThrottle` sign-in consults (services/signin.py): `check` before the
password is hashed, `failed` after every failure, `succeeded` after a success. Two keys count
failures: `account:<email as sign-in normalises it>` (unknown emails too, so a refusal never
tells whether an account exists; none when the email was unusable) and `address:<client
address>`, which allows `address_factor` times as many, so a whole office behind one NAT is
not locked out by one person's typos. A key's first `allowed` failures cost nothing; each
further one blocks the key for 2^(failures - allowed) seconds, at most `max_delay`, and while
it is blocked sign-in is answered `Throttled` (429, Retry-After: the seconds left), even with
the right password. A success forgets the account's count, never the address's. A key quiet
for `quiet` (no failure and no block since) starts again from nothing; `prune()`, for a
periodic job, deletes such keys. The counters live in `login_throttle` (store/throttle.py), so
every server process on the database shares them. `check` is one read by primary key; a
success adds one delete, a failure one write transaction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from sitecomms.server.services.errors import Throttled
from sitecomms.store import throttle as store
from sitecomms.store.database import Connection, Database
from sitecomms.store.types import utcnow

DEFAULT_ADDRESS_FACTOR = 4
DEFAULT_MAX_DELAY = timedelta(minutes=15)
DEFAULT_QUIET = timedelta(minutes=15)
_KEY_CHARS = 300  # login_throttle.key
_MAX_EXPONENT = 40  # 2**40 s is far past any max_delay


def account_key(email: str) -> str | None:
    """The account's key, or None when sign-in had no usable email (nothing to count it on)."""
    normalised = email.strip().lower()
    return f"account:{normalised}"[:_KEY_CHARS] if normalised else None


def address_key(address: str) -> str:
    return f"address:{address}"[:_KEY_CHARS]


def delay_seconds(failures: int, allowed: int, max_delay: timedelta) -> float:
    """How long `failures` block a key allowed `allowed` free ones: 0, then 2, 4, 8 ... seconds."""
    if failures <= allowed:
        return 0.0
    return min(2.0 ** min(failures - allowed, _MAX_EXPONENT), max_delay.total_seconds())


class Throttle:
    """The database-backed `LoginThrottle`; see the module doc."""

    def __init__(
        self,
        db: Database,
        *,
        allowed: int,
        address_factor: int = DEFAULT_ADDRESS_FACTOR,
        max_delay: timedelta = DEFAULT_MAX_DELAY,
        quiet: timedelta = DEFAULT_QUIET,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if allowed < 1 or address_factor < 1:
            raise ValueError("allowed and address_factor must be at least 1")
        self._db = db
        self._allowed = {"account": allowed, "address": allowed * address_factor}
        self._max_delay = max_delay
        self._quiet = quiet
        self._clock = clock

    async def check(self, email: str, address: str) -> None:
        """Raise `Throttled` (the seconds left of the longer block) while either key is blocked."""
        now = self._clock()
        rows = await self._db.read("login_throttle_check", store.rows_of, self._keys(email, address))
        left = max(((row.blocked_until - now).total_seconds() for row in rows), default=0.0)
        if left > 0:
            raise Throttled(
                "too many failed sign-ins; retry after the Retry-After seconds", retry_after=math.ceil(left)
            )

    async def failed(self, email: str, address: str) -> None:
        now = self._clock()
        await self._db.write("login_throttle_failed", self._failed_txn, self._keys(email, address), now)

    async def succeeded(self, email: str, address: str) -> None:
        key = account_key(email)
        if key is not None:
            await self._db.write("login_throttle_reset", store.reset, key)

    async def prune(self) -> int:
        """Delete the keys quiet for `quiet` (they would start afresh anyway); how many."""
        return await self._db.write_background("login_throttle_prune", store.delete_quiet, self._clock() - self._quiet)

    def _keys(self, email: str, address: str) -> list[str]:
        account = account_key(email)
        return [address_key(address)] if account is None else [account, address_key(address)]

    def _failed_txn(self, conn: Connection, keys: list[str], now: datetime) -> None:
        for key in sorted(keys):  # one lock order for every transaction
            block_for = functools.partial(
                delay_seconds, allowed=self._allowed[key.partition(":")[0]], max_delay=self._max_delay
            )
            store.record_failure(conn, key, now=now, quiet_since=now - self._quiet, block_for=block_for)
