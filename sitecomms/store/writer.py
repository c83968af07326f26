"""SQLite's single writer thread, with group commit.

SQLite has one writer at a time, so every write transaction of the process runs on one thread
holding one connection. Jobs queue up while a commit is in progress; the thread then takes all
of them (up to `max_batch`) and runs them in **one** transaction, each inside its own savepoint:

    BEGIN IMMEDIATE
      SAVEPOINT job; <job 1>; RELEASE job
      SAVEPOINT job; <job 2 raises>; ROLLBACK TO job; RELEASE job     -- job 2 alone fails
      ...
    COMMIT                                                            -- one fsync for all

A job's result is handed back only after the COMMIT, so an acknowledged write is durable. A job
that raises is rolled back to its savepoint and gets its exception (through `errors.translate`,
as every store failure); the others still commit. If the COMMIT itself fails, every job of the
batch that had succeeded gets that failure, and nothing of the batch is acknowledged. A lone
job runs without a savepoint. Jobs run in arrival order, and the results of a batch are handed
to the event loop in one callback, in that order.

Under load this turns N fsyncs and N thread hand-offs into one of each (docs/performance.md).

**Background jobs yield.** A job submitted as background (the push worker's bookkeeping, the
retention passes) never shares a transaction with the others and runs only when no other job
waits (alone, in arrival order among its kind), or once it has waited `background_max_wait`
(0.1 s), so that a steady stream of sends cannot starve it. A send then waits at most for the
one background transaction in progress, never for a batch it was grouped with.

**Checkpoints off the write path.** SQLite's automatic WAL checkpoint runs inside the COMMIT
that crosses 1,000 WAL pages: it copies those pages into the database file and (with
`synchronous=FULL`) fsyncs it, while every queued send waits. The writer's connection turns
the automatic checkpoint off; after each commit it pokes the `Checkpointer`, a thread of its
own that runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection (at most every
`CHECKPOINT_INTERVAL`). A passive checkpoint never blocks the writer or the readers; the WAL
is reused from the start once a checkpoint has caught up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from sitecomms.store.errors import Unavailable, translate

log = logging.getLogger("sitecomms.store.txn")

_STOP = None


@dataclass(slots=True)
class _Job:
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    background: bool = False
    submitted: float = field(default_factory=time.monotonic)
    value: Any = None
    error: BaseException | None = field(default=None)


CHECKPOINT_INTERVAL = 0.2  # seconds between two checkpoints at most


class Checkpointer:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="sitecomms-sqlite-checkpointer", daemon=True)
        self._thread.start()
        self.checkpoints = 0

    def wait_for(self, checkpoints: int, timeout: float) -> bool:
        """Block until `checkpoints` have run (for tests); False after `timeout` seconds."""
        with self._done:
            return self._done.wait_for(lambda: self.checkpoints >= checkpoints, timeout)

    def poke(self) -> None:
        """The WAL grew: checkpoint soon."""
        self._dirty.set()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        self._thread.join()

    def _run(self) -> None:
        conn = None
        try:
            while not self._stopping.is_set():
                self._dirty.wait()
                self._dirty.clear()
                if self._stopping.is_set():
                    return
                try:
                    conn = conn or self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    with self._done:
                        self.checkpoints += 1
                        self._done.notify_all()
                except sqlite3.Error as exc:  # the next poke retries; writes are not affected
                    log.warning("WAL checkpoint failed: %s", exc)
                    if conn is not None:
                        conn.close()
                    conn = None
                self._stopping.wait(CHECKPOINT_INTERVAL)
        finally:
            if conn is not None:
                conn.close()


class WriterThread:
    def __init__(
        self,
        engine: Engine,
        *,
        checkpointer: Checkpointer | None = None,
        max_batch: int = 256,
        background_max_wait: float = 0.1,
    ):
        self._engine = engine
        self._checkpointer = checkpointer
        self._max_batch = max_batch
        self._background_max_wait = background_max_wait
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sitecomms-sqlite-writer", daemon=True)
        self._thread.start()
        self.batches = 0  # commits so far (for tests and benchmarks)
        # Called on this thread after each transaction with its number of writes and its time
        # (the server's metrics); it must be quick and must not raise.
        self.on_commit: Callable[[int, float], None] | None = None

    def submit(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        background: bool = False,
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(_Job(name, fn, args, kwargs, loop, future, background))
        return future

    def stop(self) -> None:
        self._jobs.put(_STOP)
        self._thread.join()

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        conn: Connection | None = None
        waiting: collections.deque[_Job] = collections.deque()  # taken from the queue, not yet run
        behind: collections.deque[_Job] = collections.deque()  # background jobs, not yet run
        stopping = False
        try:
            while True:
                if not waiting and not behind:
                    if stopping:
                        return
                    job = self._jobs.get()
                    if job is None:
                        return
                    (behind if job.background else waiting).append(job)
                while not stopping:  # everything queued now, so that a send overtakes the background
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True  # finish what is queued, then stop
                    else:
                        (behind if more.background else waiting).append(more)
                overdue = behind and time.monotonic() - behind[0].submitted >= self._background_max_wait
                if waiting and not overdue:
                    batch = [waiting.popleft() for _ in range(min(len(waiting), self._max_batch))]
                else:
                    batch = [behind.popleft()]
                try:
                    if conn is None or conn.invalidated or conn.closed:
                        conn = self._connect(batch)
                        if conn is None:
                            continue
                    self._commit(conn, batch)
                    self.batches += 1
                except BaseException as exc:  # the thread must outlive anything a job does
                    log.exception("the SQLite writer failed a batch")
                    for job in batch:
                        job.value, job.error = None, job.error or Unavailable(f"{job.name}: {exc!r}")
                    if conn is not None:
                        conn.invalidate()
                        conn = None
                _hand_back(batch)
                if self._checkpointer is not None:
                    self._checkpointer.poke()
        finally:
            if conn is not None:
                conn.close()

    def _connect(self, batch: list[_Job]) -> Connection | None:
        try:
            return self._engine.connect()
        except Exception as exc:
            for job in batch:
                job.error = translate(exc, job.name)
            _hand_back(batch)
            return None

    def _commit(self, conn: Connection, batch: list[_Job]) -> None:
        started = time.perf_counter()
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            with conn.begin():
                if len(batch) == 1:
                    job = batch[0]
                    job.value = job.fn(conn, *job.args, **job.kwargs)
                else:
                    for job in batch:
                        raw.execute("SAVEPOINT job")
                        try:
                            job.value = job.fn(conn, *job.args, **job.kwargs)
                        except Exception as exc:
                            raw.execute("ROLLBACK TO job")
                            job.error = translate(exc, job.name)
                        raw.execute("RELEASE job")
        except Exception as exc:
            if len(batch) == 1:  # the lone job failed, or BEGIN/COMMIT did: nothing was written
                batch[0].error = translate(exc, batch[0].name)
            else:  # BEGIN, a savepoint or COMMIT failed: nothing of the batch was written
                failure = translate(exc, batch[0].name)
                for job in batch:
                    job.value = None
                    job.error = job.error or failure
        took = time.perf_counter() - started
        if self.on_commit is not None:
            self.on_commit(len(batch), took)
        if log.isEnabledFor(logging.DEBUG):
            names = ",".join(sorted({job.name for job in batch}))
            log.debug("txn %s ×%d took %.2f ms", names, len(batch), took * 1000)


def _hand_back(batch: list[_Job]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in batch:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, jobs)


def _resolve(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():  # the caller was cancelled; the write stands
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.value)
