"""Readiness: whether this process can serve, that is whether its database answers reads *and*
accepts writes.

A probe is a read (`ping`) and a real committed write (`store/health.py`: the one probe row
rewritten, through SQLite's writer like a send, or a read-write PostgreSQL transaction), each
within `timeout` seconds. Its answer is kept for `every` seconds and one probe runs at a time,
so a balancer checking `/readyz` at any rate costs the database one read and one small write
per second per process; on SQLite the write joins the writer's next group commit (one savepoint
in a send's transaction, never a transaction of its own while sends wait). A send the database
refused (`write_refused`, the API's 503 path) marks the process not ready at once, until the
next probe, at most `every` seconds later, finds writes working again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sitecomms.server.services.errors import Unavailable
from sitecomms.store import errors as store_errors
from sitecomms.store import health
from sitecomms.store.database import Database
from sitecomms.store.types import utcnow

log = logging.getLogger("sitecomms.server.health")

PROBE_EVERY = 1.0  # seconds an answer is kept
PROBE_TIMEOUT = 2.0  # seconds each half of a probe may take before the database counts as not ready


class Health:
    def __init__(
        self,
        db: Database,
        *,
        every: float = PROBE_EVERY,
        timeout: float = PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._every, self._timeout, self._clock = every, timeout, clock
        self._probed_at: float | None = None
        self._failure: str | None = None
        self._probing = asyncio.Lock()

    async def ready(self) -> str:
        """The database dialect if it reads and writes; `Unavailable` (with the reason) otherwise."""
        if self._stale():
            async with self._probing:  # one probe at a time: the others wait for its answer
                if self._stale():
                    try:
                        self._failure = await self._probe()
                    except Exception as exc:  # a balancer needs an answer whatever failed: not ready
                        log.exception("the readiness probe failed unexpectedly")
                        self._failure = f"the probe failed ({type(exc).__name__})"
                    self._probed_at = self._clock()
        if self._failure is not None:
            raise Unavailable(f"database not ready: {self._failure}")
        return self._db.dialect

    def write_refused(self, exc: BaseException) -> None:
        """A write of a request failed as `Unavailable`: not ready until a probe finds writes working."""
        self._failure = f"a write was refused: {exc}"

    def _stale(self) -> bool:
        return self._probed_at is None or self._clock() - self._probed_at >= self._every

    async def _probe(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._db.ping()
        except TimeoutError:
            return f"no answer to a read within {self._timeout:g} s"
        except store_errors.Unavailable as exc:
            return f"reads fail: {exc}"
        try:
            async with asyncio.timeout(self._timeout):
                await self._db.write("health_probe", health.probe_write, at=utcnow())
        except TimeoutError:
            return f"no write committed within {self._timeout:g} s"
        except store_errors.Unavailable as exc:
            return f"writes are refused: {exc}"
        return None
