"""Push subscriptions: a device's Web Push endpoint, bound to the session that registered it.

A subscription belongs to the caller's session (their signed-in device), so ending the session
(sign-out, revocation, theft detection, deactivation, a password change elsewhere) deletes it
in the same transaction (services/sessions.py). The endpoint identifies a browser profile:
registering it again is idempotent (the same id), from another session or user it moves there
(a shared phone: only its current owner is notified; to another user without the pushes still
owed to the previous one, and counted against the new user's devices). A session keeps one subscription (a
browser that renews its endpoint replaces the old one) and a user at most
`PUSH_DEVICES_PER_USER`. Endpoints are client-supplied URLs the server will POST to, so they
pass the outbound guard's URL check here and its address check at every send.
"""

from __future__ import annotations

import uuid

from sitecomms.protocol.limits import PUSH_DEVICES_PER_USER
from sitecomms.protocol.models import PushKeyView, PushSubscriptionList, PushSubscriptionView
from sitecomms.protocol.requests import PushSubscriptionRequest
from sitecomms.server.services import webpush
from sitecomms.server.services.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from sitecomms.server.services.outbound import OutboundPolicy, OutboundRefused, check_url
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import push, sessions, stream
from sitecomms.store.database import Connection, Database
from sitecomms.store.errors import Duplicate
from sitecomms.store.rows import PushSubscriptionRow
from sitecomms.store.schema import UNIQUE_PUSH_ENDPOINT
from sitecomms.store.types import utcnow


def subscription_view(viewer: Viewer, row: PushSubscriptionRow) -> PushSubscriptionView:
    return PushSubscriptionView(
        id=row.id, endpoint=row.endpoint, created_at=row.created_at, current=row.session_id == viewer.session_id
    )


class PushSubscriptions:
    def __init__(self, db: Database, key: webpush.VapidKey, policy: OutboundPolicy) -> None:
        self._db = db
        self._key = key
        self._policy = policy

    def public_key(self) -> PushKeyView:
        return PushKeyView(public_key=self._key.public_key)

    async def subscribe(self, viewer: Viewer, request: PushSubscriptionRequest) -> tuple[PushSubscriptionView, bool]:
        """The device's subscription and whether it is new (False: this endpoint was known)."""
        if not viewer.session_id:
            raise Unauthenticated("push subscriptions belong to a signed-in device; sign in")
        try:
            check_url(request.endpoint, self._policy)
        except OutboundRefused as exc:
            raise InvalidInput(f"endpoint: {exc.reason}") from exc
        try:
            webpush.validate_keys(request.keys.p256dh, request.keys.auth)
        except ValueError as exc:
            raise InvalidInput(f"keys: {exc}") from exc
        for _ in range(2):  # a concurrent first registration of the same endpoint: then it is there
            try:
                row, created = await self._db.write("push_subscribe", _subscribe_txn, viewer, request)
            except Duplicate as exc:
                if exc.constraint != UNIQUE_PUSH_ENDPOINT:
                    raise
                continue
            return subscription_view(viewer, row), created
        raise Conflict("this endpoint is being registered by another request; retry")

    async def mine(self, viewer: Viewer) -> PushSubscriptionList:
        rows = await self._db.read("push_subscriptions_of", push.subscriptions_of, viewer.user_id)
        return PushSubscriptionList(subscriptions=[subscription_view(viewer, row) for row in rows])

    async def unsubscribe(self, viewer: Viewer, subscription_id: str) -> None:
        if not await self._db.write("push_unsubscribe", push.delete_subscription_of, subscription_id, viewer.user_id):
            raise NotFound("push subscription not found")


def _subscribe_txn(
    conn: Connection, viewer: Viewer, request: PushSubscriptionRequest
) -> tuple[PushSubscriptionRow, bool]:
    session = sessions.lock_session(conn, viewer.session_id)  # a revocation now waits, then removes this too
    if session is None or session.revoked_at is not None:  # ended since the request was authenticated
        raise Unauthenticated("this device's session has ended; sign in again")
    found = push.subscription_by_endpoint(conn, request.endpoint)
    row = PushSubscriptionRow(
        id=found.id if found is not None else str(uuid.uuid4()),
        org_id=viewer.org_id,
        user_id=viewer.user_id,
        session_id=viewer.session_id,
        endpoint=request.endpoint,
        p256dh=request.keys.p256dh,
        auth=request.keys.auth,
        created_at=found.created_at if found is not None else utcnow(),
    )
    mine = push.subscriptions_of(conn, viewer.user_id)
    renewed = [other.id for other in mine if other.session_id == viewer.session_id and other.id != row.id]
    push.delete_subscriptions(conn, renewed)  # the device renewed its endpoint: the old one goes
    if found is not None and found.user_id == viewer.user_id:
        if found != row:
            push.rebind_subscription(conn, row)
        return row, False
    if len(mine) - len(renewed) >= PUSH_DEVICES_PER_USER:
        raise Conflict(
            f"notifications are on for {PUSH_DEVICES_PER_USER} devices of yours already; turn them off on one first"
        )
    # Pushes start with the messages after now (never the org's history), from the org's first subscription.
    push.start_cursor(conn, viewer.org_id, stream.current_position(conn, viewer.org_id))
    if found is not None:  # another user's until now: it goes without the pushes still owed to them
        push.delete_subscriptions(conn, [found.id])
    push.insert_subscription(conn, row)
    return row, found is None
