"""Delivering Web Push: what is due, derived from committed messages, sent by every process.

Design §10: a push is a hint, the stream stays the record. The *planner* turns each org's new
messages (after its push cursor) into deliveries, one per device that may see the message (the
visibility module's `may_be_notified`, never the sender's devices), in the transaction that
moves the cursor: a crash after a send's commit loses nothing, since the cursor still points
before it. The *worker* claims due deliveries for a lease (`FOR UPDATE SKIP LOCKED` on
PostgreSQL: two processes never both send one), sends them with bounded concurrency through the
outbound guard, and settles each: accepted → deleted; 404/410, a refused address or keys that
cannot encrypt → the subscription is deleted; 413 → sent again at once without content;
429/5xx/no answer (or an unexpected error) → retried after the longer of `Retry-After` and the
push backoff, until the TTL runs out; anything else → given up. Visibility is checked again at
the claim (a role changed since planning: what its owner may no longer see is dropped). A
worker that dies mid-send leaves its lease to expire, and the push goes out again then; one
that is closed claims no more and finishes the pushes in flight (for up to `CLOSE_GRACE`). The
send path never waits for any of this: notices wake the worker, and a poll catches what a lost
notice or another process's crash left behind. No message text is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from sitecomms.protocol import backoff
from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import PushKind, Role
from sitecomms.protocol.limits import PUSH_TEXT_CHARS
from sitecomms.protocol.models import PushNotice
from sitecomms.server.services import visibility, webpush
from sitecomms.server.services.messaging import preview_of
from sitecomms.server.services.outbound import Outbound, OutboundFailed, OutboundRefused
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import conversations, messages, push
from sitecomms.store.database import Connection, Database
from sitecomms.store.rows import ConversationRow, DuePush
from sitecomms.store.types import utcnow

log = logging.getLogger("sitecomms.push")

LEASE = timedelta(seconds=60)  # longer than the outbound guard's total timeout
DEPTH_EVERY = 10.0  # seconds between two counts of the push queue (one indexed count)
CLOSE_GRACE = 4.0  # seconds `close` waits for the pushes in flight (within the app's 5 s shutdown step)
_ORGS_PER_PLAN = 8
_MESSAGES_PER_PLAN = 500
_LANES = 4  # claim-send-settle loops at once (see `_deliver_due`)
# Deliveries one planning transaction records (a message to more devices is planned in parts):
# it shares the writer (SQLite) or the loop (PostgreSQL's run_sync) with the send path, and a
# backlog of 500 messages to 10,000 devices would be 5 million rows in one go. SQLite: under
# 10 ms of the one writer.
_DELIVERIES_PER_PLAN = 250
_ACCEPTED = frozenset({200, 201, 202, 204})
_GONE = frozenset({404, 410})
_TOO_LARGE = 413
_RETRIED = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class PushPolicy:
    ttl_seconds: int = 24 * 3600
    include_content: bool = False
    subject: str = "mailto:push@sitecomms.invalid"
    concurrency: int = 64
    session_idle: timedelta = timedelta(days=30)  # a session unused this long is expired: no pushes
    poll_seconds: float = 1.0


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    GONE = "gone"  # the subscription is dead: delete it
    SHRINK = "shrink"  # 413: again, without content
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True)
class Settled:
    due: DuePush
    outcome: Outcome
    retry_at: datetime | None = None


def notice_for(due: DuePush, *, include_content: bool) -> PushNotice:
    """The payload of a push (see `PushNotice`): with the text only when pushes carry it."""
    sender = text = None
    if include_content and due.with_content:
        viewer = Viewer(due.user_id, due.org_id, Role(due.user_role))
        sender = visibility.sender_name(viewer, due.sender_role, due.sender_name)
        text = preview_of(due.content, PUSH_TEXT_CHARS)
    return PushNotice(
        type=PushKind.MESSAGE,
        org_id=due.org_id,
        conversation_id=due.conversation_id,
        message_id=due.message_id,
        cursor=str(Cursor(due.position, due.org_id)),
        sender=sender,
        text=text,
    )


_NOTICE_FIELDS = tuple(f.name for f in dataclasses.fields(PushNotice))


def encode_notice(notice: PushNotice) -> bytes:
    """The notice as JSON, without its empty fields (flat: no `dataclasses.asdict` deep copy)."""
    return orjson.dumps({name: value for name in _NOTICE_FIELDS if (value := getattr(notice, name)) is not None})


def plan_txn(conn: Connection, *, now: datetime, ttl: timedelta, active_since: datetime) -> tuple[int, bool]:
    """Record the deliveries of messages after the push cursors of a few orgs, at most about
    `_DELIVERIES_PER_PLAN` (a broadcast to more devices is planned in parts, in subscription id
    order, reading only each part's devices), and move those cursors; (deliveries recorded,
    whether more may be waiting)."""
    recorded = 0
    for org_id, cursor, after, head in push.orgs_behind(conn, _ORGS_PER_PLAN):
        rows = messages.messages_changed_since(
            conn, visibility.org_scope(org_id), after=cursor, limit=_MESSAGES_PER_PLAN
        )
        rows = [row for row in rows if row.position <= head]
        full = len(rows) == _MESSAGES_PER_PLAN
        reached, part = (rows[-1].position if full else head), ""
        fresh = [row for row in rows if row.created_at + ttl > now]  # older ones would expire unsent
        if fresh:
            found = conversations.get_conversations(conn, sorted({row.conversation_id for row in fresh}))
            directs: dict[str, list[tuple[str, Viewer]]] = {}  # a direct conversation's, by its medic
            due: list[dict[str, object]] = []
            for row in fresh:
                conversation = found.get(row.conversation_id)
                if conversation is None:
                    continue
                planned_up_to = after if row is rows[0] else ""  # a message planned in part before
                room = _DELIVERIES_PER_PLAN - recorded - len(due)
                examined, more_after = _audience_part(
                    conn, org_id, conversation.medic_id, directs, after=planned_up_to, room=room, since=active_since
                )
                devices = [
                    subscription_id
                    for subscription_id, viewer in examined
                    if visibility.may_be_notified(viewer, conversation, row.sender_id)
                ]
                if more_after:  # this message's other devices in the next transaction
                    reached, part = row.position - 1, more_after
                expires = row.created_at + ttl
                due.extend(
                    {
                        "subscription_id": subscription_id,
                        "message_id": row.id,
                        "due_at": now,
                        "expires_at": expires,
                        "leased_until": push.NEVER,
                    }
                    for subscription_id in devices
                )
                if part or recorded + len(due) >= _DELIVERIES_PER_PLAN:
                    if not part:
                        reached = row.position
                    break
            push.record_deliveries(conn, due)
            recorded += len(due)
        push.move_cursor(conn, org_id, reached, after_subscription=part)
        if recorded >= _DELIVERIES_PER_PLAN or full or part:
            return recorded, True
    return recorded, False


def _audience_part(
    conn: Connection,
    org_id: str,
    medic_id: str | None,
    directs: dict[str, list[tuple[str, Viewer]]],
    *,
    after: str,
    room: int,
    since: datetime,
) -> tuple[list[tuple[str, Viewer]], str]:
    """The next at most `room` devices (after subscription `after`) that could be due a push of
    a message in a conversation (the broadcast's: the org's, read a page at a time; a direct
    one's: its users', read once per transaction), each with its owner as a viewer; and the last
    of them if more may follow ("" if none)."""
    if medic_id is None:
        page = push.targets_of_org(conn, org_id, after=after, limit=room, active_since=since)
        examined = [(t.subscription_id, Viewer(t.user_id, org_id, Role(t.role))) for t in page]
        return examined, (examined[-1][0] if len(examined) == room else "")
    viewers = directs.get(medic_id)
    if viewers is None:
        targets = push.targets_of_direct(conn, org_id, medic_id=medic_id, active_since=since)
        viewers = directs[medic_id] = [
            (t.subscription_id, Viewer(t.user_id, org_id, Role(t.role)))
            for t in sorted(targets, key=lambda t: t.subscription_id)
        ]
    examined = [(subscription_id, viewer) for subscription_id, viewer in viewers if subscription_id > after]
    if len(examined) > room:
        return examined[:room], examined[room - 1][0]
    return examined, ""


def claimed_txn(conn: Connection, ids: list[int]) -> tuple[list[DuePush], dict[str, ConversationRow]]:
    """The claimed deliveries still there (a subscription deleted since took its own along), with
    their conversations as they are now. A read: the claim's write stays one short statement."""
    claimed = push.due_pushes(conn, ids)
    return claimed, conversations.get_conversations(conn, sorted({due.conversation_id for due in claimed}))


def _still_notified(due: DuePush, found: dict[str, ConversationRow]) -> bool:
    """Whether the device's owner may still be pushed the message: a role changed since it was
    planned (an admin made medic) takes away what they may no longer see."""
    conversation = found.get(due.conversation_id)
    viewer = Viewer(due.user_id, due.user_org_id, Role(due.user_role))
    return conversation is not None and visibility.may_be_notified(viewer, conversation, due.sender_id)


def settle_txn(conn: Connection, settled: list[Settled]) -> None:
    push.delete_deliveries(conn, [s.due.id for s in settled if s.outcome in (Outcome.DELIVERED, Outcome.GIVE_UP)])
    push.delete_subscriptions(conn, sorted({s.due.subscription_id for s in settled if s.outcome is Outcome.GONE}))
    for s in settled:
        if s.outcome is Outcome.SHRINK:
            push.retry_delivery(conn, s.due.id, due_at=utcnow(), with_content=False)
        elif s.outcome is Outcome.RETRY:
            assert s.retry_at is not None
            push.retry_delivery(conn, s.due.id, due_at=s.retry_at, with_content=s.due.with_content)


class PushDelivery:
    """This process's planner and worker (see the module doc). `poke()` after any commit."""

    def __init__(
        self,
        db: Database,
        key: webpush.VapidKey,
        outbound: Outbound,
        policy: PushPolicy,
        count_outcomes: Callable[[Iterable[str]], None] | None = None,  # the metrics' `settled`
    ) -> None:
        self._db, self._key, self._outbound, self._policy = db, key, outbound, policy
        self._count_outcomes = count_outcomes
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(policy.concurrency)
        self._rounds = 0  # rounds running (the task's, and any caller's)
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._closing = False
        self.queue_depth = 0  # deliveries not yet settled, in every org: read every `DEPTH_EVERY`
        self._depth_read_at = -DEPTH_EVERY

    def poke(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="push-delivery")

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Claim no more; let the pushes in flight be answered and settled (for up to `grace`
        seconds: the rest keep their lease and go out again when it ends); stop."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._quiet.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._outbound.aclose()

    async def _run(self) -> None:
        failures = 0
        wait = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            try:
                wait = await self.round()
                failures = 0
            except Exception as exc:  # the database or a bug: log, back off, go on
                log.warning("push delivery round failed (%r); retrying", exc)
                wait = backoff.RECONNECT.delay(failures)
                failures += 1

    async def count_queue(self) -> int:
        """Count the deliveries not yet settled, in every org, into `queue_depth` (the metric's)."""
        self._depth_read_at = time.monotonic()
        self.queue_depth = await self._db.read("push_depth", push.pending)
        return self.queue_depth

    async def quiet(self) -> None:
        """Until no round is running: every push claimed in this process has been settled."""
        await self._quiet.wait()

    async def round(self) -> float:
        """Plan and send everything due now; seconds until the next retry is due (or the poll)."""
        self._rounds += 1
        self._quiet.clear()
        try:
            return await self._round()
        finally:
            self._rounds -= 1
            if not self._rounds:
                self._quiet.set()

    async def _round(self) -> float:
        next_due: datetime | None = None
        while not self._closing:
            behind, next_due = await self._db.read("push_pending", push.pending_work)
            now = utcnow()
            if behind:
                recorded, more = await self._db.write_background(
                    "push_plan",
                    plan_txn,
                    now=now,
                    ttl=timedelta(seconds=self._policy.ttl_seconds),
                    active_since=now - self._policy.session_idle,
                )
                if more:
                    continue
                if recorded:  # (nothing: no one to push, or another process holds the org and sends)
                    next_due = now
            if next_due is None or next_due > now:
                break
            if not await self._deliver_due():
                break
        if time.monotonic() - self._depth_read_at >= DEPTH_EVERY:
            await self.count_queue()
        wait = self._policy.poll_seconds
        if next_due is not None:
            wait = min(wait, max(0.0, (next_due - utcnow()).total_seconds()))
        return wait

    async def _deliver_due(self) -> int:
        """Claim and send in `_LANES` lanes until nothing is due: while one lane claims or settles
        (a write each), the others' pushes are in flight; the semaphore bounds them together."""

        async def lane() -> int:
            total = 0
            while not self._closing and (count := await self._deliver_batch()):
                total += count
            return total

        async with asyncio.TaskGroup() as lanes:
            running = [lanes.create_task(lane()) for _ in range(_LANES)]
        return sum(task.result() for task in running)

    async def _deliver_batch(self) -> int:
        now = utcnow()
        ids = await self._db.write_background(
            "push_claim", push.claim, now=now, until=now + LEASE, limit=self._policy.concurrency
        )
        if not ids:
            return 0
        claimed, found = await self._db.read("push_claimed", claimed_txn, ids)
        allowed = [due for due in claimed if _still_notified(due, found)]
        answers = await asyncio.gather(*(self._send(due) for due in allowed), return_exceptions=True)
        settled = [
            self._unexpected(due, answer) if isinstance(answer, BaseException) else answer
            for due, answer in zip(allowed, answers, strict=True)
        ]
        kept = {due.id for due in allowed}
        settled += [Settled(due, Outcome.GIVE_UP) for due in claimed if due.id not in kept]
        await self._db.write_background("push_settle", settle_txn, settled)
        if self._count_outcomes is not None:
            self._count_outcomes(s.outcome.value for s in settled)
        return len(ids)

    def _unexpected(self, due: DuePush, error: BaseException) -> Settled:
        """A send that failed unexpectedly (a bug) is retried like a failed call; the others of
        its batch are settled all the same (unsettled, they would go out again after the lease)."""
        if not isinstance(error, Exception):
            raise error
        log.error("push to subscription %s failed unexpectedly (%r)", due.subscription_id, error)
        return self._retry(due, None, "an unexpected error")

    async def _send(self, due: DuePush) -> Settled:
        async with self._limit:
            await asyncio.sleep(0)  # one encryption at a time between the loop's other work
            now = time.time()
            remaining = int((due.expires_at - utcnow()).total_seconds())
            if remaining <= 0:
                return Settled(due, Outcome.GIVE_UP)
            payload = encode_notice(notice_for(due, include_content=self._policy.include_content))
            try:
                request = webpush.build_request(
                    self._key,
                    endpoint=due.endpoint,
                    p256dh=due.p256dh,
                    auth=due.auth,
                    payload=payload,
                    ttl=remaining,
                    topic=webpush.topic_for(due.conversation_id),
                    subject=self._policy.subject,
                    now=now,
                )
            except ValueError as exc:  # its keys (or endpoint) can never make a push: as good as gone
                log.warning("push subscription %s cannot be pushed to (%s): removed", due.subscription_id, exc)
                return Settled(due, Outcome.GONE)
            try:
                response = await self._outbound.post(request.endpoint, request.headers, request.body)
            except OutboundRefused as exc:
                log.warning("push endpoint refused (%s): subscription %s removed", exc.reason, due.subscription_id)
                return Settled(due, Outcome.GONE)
            except OutboundFailed as exc:
                return self._retry(due, None, f"no answer ({exc.reason})")
        status = response.status
        if status in _ACCEPTED:
            return Settled(due, Outcome.DELIVERED)
        if status in _GONE:
            log.info("push subscription %s is gone (%d): removed", due.subscription_id, status)
            return Settled(due, Outcome.GONE)
        if status == _TOO_LARGE and due.with_content and self._policy.include_content:  # else: no smaller
            return Settled(due, Outcome.SHRINK)
        if status in _RETRIED:
            return self._retry(due, response.retry_after, f"status {status}")
        log.warning("push to subscription %s refused with %d: given up", due.subscription_id, status)
        return Settled(due, Outcome.GIVE_UP)

    def _retry(self, due: DuePush, retry_after: float | None, why: str) -> Settled:
        # Retry-After is a least wait: a push service's "0" must not make a hot loop of it.
        wait = max(retry_after or 0.0, backoff.RETRY_PUSH.delay(due.attempts - 1))
        now = utcnow()
        if wait >= (due.expires_at - now).total_seconds():  # compared as seconds: any float, even inf
            log.warning("push to subscription %s not delivered before its TTL (%s): given up", due.subscription_id, why)
            return Settled(due, Outcome.GIVE_UP)
        log.info("push to subscription %s: %s; retry in %.1f s", due.subscription_id, why, wait)
        return Settled(due, Outcome.RETRY, now + timedelta(seconds=wait))
