"""The hub: this process's sockets grouped by org, one reader per org, fan-out, and liveness.

Each org with at least one local socket has an `OrgReader`. A bus notice for the org wakes it;
it reads the org's changes after the last position it fanned out — once, however many sockets —
and offers each change to every local connection allowed to see it (the visibility policy
decides, per recipient; frames are rendered once per role). Notices only wake readers, so many
notices in a burst coalesce into one read. Changes this process committed itself arrive as
`committed(org, items)` and are fanned out without a read when they directly follow the last
position fanned out (the feed module's "local hand-off"); anything else falls back to a read.
After the bus reconnects, `on_reset` wakes every reader: whatever notices were lost, the
database has the changes.

**No silent gap when a notice never comes.** A process killed between a commit and its notice
(or a notice the bus dropped) would leave the other processes' readers behind until the org's
next write. So every `head_check_seconds` the hub reads the stream heads of the orgs it has
readers for (one indexed read for all of them, `_HEAD_CHECK_ORGS` at a time) and wakes each
reader whose head is past what it fanned out: such a change is delivered within about that
interval, with no further write.

**Gapless hand-off.** A new connection joins its org's reader *before* it replays from the
database. The reader's first position is the stream head read when the reader started, so every
change is either at or below the replay's snapshot (replayed) or above it (fanned out after the
join); the connection drops fanned-out frames at or below what it already sent. Nothing is lost
between replay and live, and nothing is sent twice.

The sweep task pings idle sockets every heartbeat, drops sockets silent for longer than the idle
timeout, and closes sockets whose token expired without a refresh.

**Access.** The hub keeps each user's local sockets, oldest first (a Phoenix socket's channels
count as one socket). A user may hold `sockets_per_user` at once: one more closes the oldest
(4429; every channel of a Phoenix socket). When the access-change log says
a user's access changed (services/access.py), each of their sockets is checked again against
the database and closed with 4401 if its session is no longer live, the user no longer active,
or their role or org changed (the client refreshes its token and reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
from collections.abc import Iterable

from sitecomms.bus import Notice
from sitecomms.protocol import backoff
from sitecomms.protocol.frames import CloseCode, ServerFrame
from sitecomms.server.realtime.connection import CONTROL, Connection, control_frame
from sitecomms.server.services.access import Access
from sitecomms.server.services.feed import Feed, FeedItem
from sitecomms.server.services.visibility import EVERY_MEDIC

log = logging.getLogger("sitecomms.realtime")

_READ_BATCH = 1000
_HEAD_CHECK_ORGS = 500  # orgs per stream-head read


class OrgReader:
    def __init__(self, org_id: str, feed: Feed) -> None:
        self.org_id = org_id
        self.connections: set[Connection] = set()
        self._admins: set[Connection] = set()
        self._medics: dict[str, set[Connection]] = {}  # medic user id -> their sockets
        self.last = -1  # the last position fanned out; -1 until the head has been read
        self.ready = asyncio.Event()
        self._feed = feed
        self._wake = asyncio.Event()
        self._notified = -1  # the highest position a notice announced
        self._read_needed = False  # a reset, a gap or a failure: read whatever there is
        self._pending: list[FeedItem] = []  # local commits following `last`, in order
        # started by a socket's first join, it serves the org: not in that socket's log context
        self._task = asyncio.create_task(
            self._run(), name=f"sitecomms-org-reader-{org_id}", context=contextvars.Context()
        )

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        if conn.viewer.is_admin:
            self._admins.add(conn)
        else:
            self._medics.setdefault(conn.viewer.user_id, set()).add(conn)

    def discard(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn.viewer.is_admin:
            self._admins.discard(conn)
        else:
            own = self._medics.get(conn.viewer.user_id)
            if own is not None:
                own.discard(conn)
                if not own:
                    del self._medics[conn.viewer.user_id]

    def wake(self, position: int | None = None) -> None:
        """A notice that the stream reached `position` (None: read whatever there is)."""
        if position is None:
            self._read_needed = True
        elif position > self.last:
            self._notified = max(self._notified, position)
        else:
            return
        self._wake.set()

    def committed(self, items: list[FeedItem]) -> None:
        """Changes this process just committed: queued for fan-out if they follow on, else read.

        The reader task fans them out, never the caller: a send into a broadcast answers its
        HTTP request without waiting for ten thousand sockets to be offered the frame.
        """
        tail = self._pending[-1].position if self._pending else self.last
        if self.last >= 0 and items and items[0].position == tail + 1:
            self._pending += items
        else:
            self._read_needed = True
        self._wake.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self.last < 0:
                    self.last = await self._feed.head(self.org_id)
                    self.ready.set()
                await self._wake.wait()
                self._wake.clear()
                self._flush_local()
                if self._read_needed or self._notified > self.last:
                    self._read_needed = False
                    await self._catch_up()
                    self._flush_local()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = backoff.delay(failures, 0.05, 5.0)
                log.exception("org %s: reading the feed failed; retrying in %.2fs", self.org_id, delay)
                self._read_needed = True
                self._wake.set()
                await asyncio.sleep(delay)

    def _flush_local(self) -> None:
        """Fan out the queued local commits that a read has not already covered."""
        pending, self._pending = self._pending, []
        fresh = [item for item in pending if item.position > self.last]
        if not fresh:
            return
        if fresh[0].position != self.last + 1:  # a read stopped inside them: let the next read decide
            self._read_needed = True
            self._wake.set()
            return
        self._fan_out(fresh)
        self.last = fresh[-1].position

    async def _catch_up(self) -> None:
        while True:
            batch = await self._feed.read(self.org_id, self.last, _READ_BATCH)
            self._fan_out([item for item in batch.items if item.position > self.last])
            self.last = max(self.last, batch.upto)
            if not batch.has_more:
                return

    def _fan_out(self, items: list[FeedItem]) -> None:
        for item in items:
            for conn in self._candidates(item):
                if item.visible_to(conn.viewer):
                    conn.deliver(item)

    def _candidates(self, item: FeedItem) -> Iterable[Connection]:
        """The sockets that could see the change: never a scan of the org for one medic's message."""
        medics = item.medic_audience()
        if medics == EVERY_MEDIC:
            return self.connections
        own = self._medics.get(medics, ()) if medics is not None else ()
        return itertools.chain(self._admins, own)


class Hub:
    def __init__(
        self,
        feed: Feed,
        *,
        heartbeat_seconds: float,
        idle_timeout_seconds: float,
        sockets_per_user: int = 20,
        head_check_seconds: float = 1.0,
    ) -> None:
        self._feed = feed
        self._head_check = head_check_seconds
        self._head_checker: asyncio.Task[None] | None = None
        self._heartbeat = heartbeat_seconds
        self._idle_timeout = idle_timeout_seconds
        self._sockets_per_user = sockets_per_user
        self._orgs: dict[str, OrgReader] = {}
        # user id -> their sockets, oldest first -> each socket's connections (a Phoenix socket
        # carries several channels, each a connection; any other socket is one)
        self._of_user: dict[str, dict[object, dict[Connection, None]]] = {}
        self._access: Access | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # --- access ----------------------------------------------------------------------------

    def guard_with(self, access: Access) -> None:
        """Close sockets that lose access, as the access-change log reports them."""
        self._access = access
        access.subscribe(self.access_changed)

    def access_changed(self, user_ids: set[str]) -> None:
        affected = [conn for user_id in user_ids for conns in self._of_user.get(user_id, {}).values() for conn in conns]
        if affected and self._access is not None:
            task = asyncio.create_task(self._recheck(self._access, affected), name="sitecomms-access-recheck")
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _recheck(self, access: Access, connections: list[Connection]) -> None:
        for conn in connections:
            try:
                refused = await access.recheck(conn.viewer)
            except Exception as exc:  # cannot tell: closing is safe, the client reconnects and is checked anew
                log.warning("access recheck failed (%r); closing the socket", exc)
                conn.close(CloseCode.TRY_AGAIN_LATER, "access could not be checked; reconnect")
                continue
            if refused is not None:
                conn.close(CloseCode.UNAUTHENTICATED, refused)

    # --- the bus subscriber ----------------------------------------------------------------

    def on_notice(self, notice: Notice) -> None:
        reader = self._orgs.get(notice.org_id)
        if reader is not None:
            reader.wake(notice.position)

    def on_reset(self) -> None:
        for reader in self._orgs.values():
            reader.wake()

    # --- this process's own commits (LocalFanOut) ------------------------------------------

    def committed(self, org_id: str, items: list[FeedItem]) -> None:
        reader = self._orgs.get(org_id)
        if reader is not None:
            reader.committed(items)

    # --- connections -----------------------------------------------------------------------

    def sockets(self) -> int:
        """Sockets registered now (the live sockets gauge)."""
        return sum(len(own) for own in self._of_user.values())

    async def join(self, conn: Connection) -> None:
        """Register for fan-out; returns once the org's reader knows its starting position."""
        org_id = conn.viewer.org_id
        reader = self._orgs.get(org_id)
        if reader is None:
            reader = self._orgs[org_id] = OrgReader(org_id, self._feed)
        reader.add(conn)
        own = self._of_user.setdefault(conn.viewer.user_id, {})
        own.setdefault(conn.socket, {})[conn] = None
        while len(own) > self._sockets_per_user:
            for oldest in own.pop(next(iter(own))):
                oldest.close(CloseCode.TOO_MANY_SOCKETS, f"more than {self._sockets_per_user} sockets for this user")
        await reader.ready.wait()

    async def leave(self, conn: Connection) -> None:
        own = self._of_user.get(conn.viewer.user_id)
        conns = None if own is None else own.get(conn.socket)
        if own is not None and conns is not None:
            conns.pop(conn, None)
            if not conns:
                del own[conn.socket]
            if not own:
                del self._of_user[conn.viewer.user_id]
        org_id = conn.viewer.org_id
        reader = self._orgs.get(org_id)
        if reader is None:
            return
        reader.discard(conn)
        if not reader.connections:
            del self._orgs[org_id]
            await reader.stop()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="sitecomms-realtime-sweeper")
        self._head_checker = asyncio.create_task(self._check_heads_forever(), name="sitecomms-realtime-head-check")

    async def close(self) -> None:
        for task in [self._sweeper, self._head_checker, *self._checks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        readers = list(self._orgs.values())
        self._orgs.clear()
        for reader in readers:
            for conn in reader.connections:
                conn.close(CloseCode.GOING_AWAY, "server shutting down")
        await asyncio.gather(*(reader.stop() for reader in readers))

    async def _sweep_forever(self) -> None:
        interval = max(0.05, min(self._heartbeat, self._idle_timeout) / 4)
        while True:
            await asyncio.sleep(interval)
            self.sweep(time.monotonic(), time.time())

    async def _check_heads_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._head_check)
            try:
                await self.check_heads()
                failing = False
            except Exception as exc:  # the database is away: the readers' own reads will say so too
                if not failing:
                    log.warning("reading the stream heads failed (%r); trying again", exc)
                failing = True

    async def check_heads(self) -> None:
        """Wake each reader whose org's stream went past what it fanned out (a lost notice)."""
        orgs = [org_id for org_id, reader in self._orgs.items() if reader.last >= 0]
        for start in range(0, len(orgs), _HEAD_CHECK_ORGS):
            heads = await self._feed.heads(orgs[start : start + _HEAD_CHECK_ORGS])
            for org_id, head in heads.items():
                reader = self._orgs.get(org_id)
                if reader is not None:
                    reader.wake(head)

    def sweep(self, now: float, wall_now: float) -> None:
        ping = control_frame(ServerFrame.PING)
        for reader in self._orgs.values():
            for conn in reader.connections:
                if not conn.hub_heartbeat:
                    if wall_now >= conn.expires_at:
                        conn.close(CloseCode.UNAUTHENTICATED, "token expired")
                elif now - conn.last_heard > self._idle_timeout:
                    conn.close(CloseCode.HEARTBEAT_TIMEOUT, "nothing heard from the client")
                elif wall_now >= conn.expires_at:
                    conn.close(CloseCode.UNAUTHENTICATED, "token expired")
                elif now - conn.last_pinged >= self._heartbeat:
                    conn.last_pinged = now
                    conn.offer(CONTROL, ping)
