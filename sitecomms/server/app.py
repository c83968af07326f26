"""The composition root: `create_app(settings)` builds every component and wires it by hand.

Nothing is global. The database, the services and the routes are made here, each given what
it needs; the lifespan closes what was opened. `sitecomms serve` and the tests both go through
this function.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.websockets import WebSocket

from sitecomms import __version__
from sitecomms.bus import Notice, open_bus
from sitecomms.config import Settings
from sitecomms.protocol.limits import MAX_BODY_BYTES
from sitecomms.server import dashboard, keys
from sitecomms.server.api import (
    audit,
    auth,
    conversations,
    docs,
    errors,
    gotrue,
    health,
    messages,
    metrics,
    push,
    request_id,
    security_headers,
    sync,
    users,
    watermelon,
)
from sitecomms.server.api.body_limit import BodyLimit
from sitecomms.server.api.route import Route
from sitecomms.server.metrics import CountingThrottle, HttpMetrics, Metrics
from sitecomms.server.realtime.endpoint import Session, endpoint
from sitecomms.server.realtime.hub import Hub
from sitecomms.server.realtime.supabase import PhoenixSocket
from sitecomms.server.realtime.supabase import endpoint as supabase_endpoint
from sitecomms.server.services import failpoints
from sitecomms.server.services.access import Access
from sitecomms.server.services.accounts import Accounts
from sitecomms.server.services.audit_log import AuditLog
from sitecomms.server.services.feed import Feed
from sitecomms.server.services.health import Health
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.outbound import Outbound, OutboundPolicy
from sitecomms.server.services.passwords import Passwords
from sitecomms.server.services.publisher import NoPublisher, Publisher
from sitecomms.server.services.push import PushSubscriptions
from sitecomms.server.services.push_delivery import DEPTH_EVERY, Outcome, PushDelivery, PushPolicy
from sitecomms.server.services.sessions import RefreshChain, RefreshPolicy
from sitecomms.server.services.signin import LoginThrottle, NoThrottle, SignIn
from sitecomms.server.services.sync import Sync
from sitecomms.server.services.throttle import Throttle
from sitecomms.server.services.tokens import Tokens
from sitecomms.server.services.watermelon import Watermelon
from sitecomms.server.services.webpush import VapidKey
from sitecomms.store import migrate
from sitecomms.store.database import Database, open_database

T = TypeVar("T")

SHUTDOWN_STEP_SECONDS = 5.0
log = logging.getLogger("sitecomms.server")


def _off_loop(fn: Callable[[], T]) -> T:
    """Run blocking start-up work on a fresh thread (safe whether or not a loop is running)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def build_passwords(settings: Settings) -> Passwords:
    return Passwords(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        max_concurrent=settings.password_hash_concurrency,
    )


def build_accounts(settings: Settings, db: Database, publisher: Publisher) -> Accounts:
    return Accounts(db, build_passwords(settings), publisher)


def build_tokens(settings: Settings, keyring: keys.Keyring) -> Tokens:
    return Tokens(keyring, timedelta(seconds=settings.token_ttl_seconds))


def build_signin(
    settings: Settings,
    db: Database,
    publisher: Publisher,
    throttle: LoginThrottle | None = None,
    *,
    keyring: keys.Keyring | None = None,
) -> SignIn:
    """Sign-in and sessions, signing with the key file's keys (or SITECOMMS_JWT_SECRET's)."""
    keyring = keyring or _off_loop(lambda: keys.keyring_for(settings))
    tokens = build_tokens(settings, keyring)
    refresh = RefreshPolicy(
        RefreshChain(keyring.refresh_key),
        idle_ttl=timedelta(seconds=settings.refresh_idle_seconds),
        retry_grace=timedelta(seconds=settings.refresh_retry_grace_seconds),
    )
    return SignIn(db, build_passwords(settings), tokens, refresh, publisher, throttle or NoThrottle())


class _Deaf:
    """A bus subscriber for processes that only publish."""

    def on_notice(self, notice: Notice) -> None:
        return None

    def on_reset(self) -> None:
        return None

    def on_access_changed(self) -> None:
        return None


class _LocalFirst:
    """The services' publisher: the bus, but an access change is applied in this process before
    the call that made it answers (its caller's next request must already see it)."""

    def __init__(self, bus: Publisher, access: Access) -> None:
        self._bus, self._access = bus, access

    async def publish(self, org_id: str, position: int) -> None:
        await self._bus.publish(org_id, position)

    async def access_changed(self) -> None:
        try:
            await self._access.catch_up()
        except Exception as exc:  # the follower task retries; other processes hear the bus
            log.warning("applying an access change locally failed (%r)", exc)
        await self._bus.access_changed()


class _Listeners:
    """What this process does with bus notices: stream notices wake the hub's readers; access
    notices (and a reconnect, after which anything may have been missed) wake the access log."""

    def __init__(self, hub: Hub, access: Access, pusher: PushDelivery | None) -> None:
        self._hub, self._access, self._pusher = hub, access, pusher

    def on_notice(self, notice: Notice) -> None:
        self._hub.on_notice(notice)
        if self._pusher is not None:
            self._pusher.poke()

    def on_reset(self) -> None:
        self._hub.on_reset()
        self._access.wake()
        if self._pusher is not None:
            self._pusher.poke()

    def on_access_changed(self) -> None:
        self._access.wake()


@asynccontextmanager
async def command_publisher(bus_url: str) -> AsyncIterator[Publisher]:
    """For CLI commands: publish to a shared bus so running servers show their changes live."""
    if urlsplit(bus_url).scheme == "memory":
        yield NoPublisher()
        return
    bus = open_bus(bus_url)
    bus.start(_Deaf())
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await bus.connected.wait()
        yield bus
    finally:
        await bus.close()


def push_policy(settings: Settings) -> PushPolicy:
    return PushPolicy(
        ttl_seconds=settings.push_ttl_seconds,
        include_content=settings.push_include_content,
        subject=settings.push_subject,
        concurrency=settings.push_concurrency,
        session_idle=timedelta(seconds=settings.refresh_idle_seconds),
    )


def outbound_policy(settings: Settings) -> OutboundPolicy:
    hosts = frozenset(host.strip().lower() for host in settings.push_allowed_hosts.split(",") if host.strip())
    return OutboundPolicy(allowed_hosts=hosts, ca_file=settings.push_ca_file)


def create_app(settings: Settings) -> FastAPI:
    if settings.migrate_on_start:
        _off_loop(lambda: migrate.upgrade(settings.database_url))
    db = open_database(
        settings.database_url, sqlite_synchronous=settings.sqlite_synchronous, pool_size=settings.db_pool_size
    )
    bus = open_bus(settings.bus_url)
    measured = Metrics()
    db.observe_commits(measured.committed)
    keyring = _off_loop(lambda: keys.keyring_for(settings))
    access = Access(db, build_tokens(settings, keyring), poll_seconds=settings.access_poll_seconds)
    publisher = _LocalFirst(bus, access)
    accounts = build_accounts(settings, db, publisher)
    throttle = Throttle(db, allowed=settings.login_failures_allowed)
    signin = build_signin(settings, db, publisher, CountingThrottle(throttle, measured), keyring=keyring)

    async def housekeeping() -> int:  # with the audit retention, hourly: logs that only grow otherwise
        return await access.expire_log() + await throttle.prune()

    audit_log = AuditLog(db, expire_also=housekeeping)
    pull = Sync(db)
    feed = Feed(db)
    hub = Hub(
        feed,
        heartbeat_seconds=settings.ws_heartbeat_seconds,
        idle_timeout_seconds=settings.ws_idle_timeout_seconds,
        sockets_per_user=settings.ws_sockets_per_user,
        head_check_seconds=settings.ws_head_check_seconds,
    )
    hub.guard_with(access)
    readiness = Health(db)
    messaging = Messaging(
        db,
        bus,
        hub,
        metrics=measured,
        write_refused=readiness.write_refused,
        armed=failpoints.parse(settings.failpoints),
    )
    authenticate = auth.Authenticator(access)
    vapid = _off_loop(lambda: VapidKey.open(keys.push_key_path(settings)))
    guard = outbound_policy(settings)
    subscriptions = PushSubscriptions(db, vapid, guard)
    pusher = (
        PushDelivery(
            db,
            vapid,
            Outbound(guard, max_connections=settings.push_concurrency),
            push_policy(settings),
            measured.settled,
        )
        if settings.push_worker
        else None
    )
    for outcome in Outcome:  # every outcome's series from the start, at 0
        measured.push_outcomes.labels(outcome.value)

    def session(ws: WebSocket) -> Session:
        return Session(
            ws,
            hub=hub,
            feed=feed,
            sync=pull,
            access=access,
            hello_timeout=settings.ws_hello_timeout_seconds,
            heartbeat=settings.ws_heartbeat_seconds,
            queue_frames=settings.ws_queue_frames,
            replay_limit=settings.ws_replay_limit,
            metrics=measured,
        )

    def phoenix_socket(ws: WebSocket) -> PhoenixSocket:
        return PhoenixSocket(
            ws,
            hub=hub,
            feed=feed,
            access=access,
            queue_frames=settings.ws_queue_frames,
            replay_limit=settings.ws_replay_limit,
            hello_timeout=settings.ws_hello_timeout_seconds,
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        bus.start(_Listeners(hub, access, pusher))
        access.start()
        hub.start()
        if pusher is not None:
            pusher.start()
        audit_log.start(settings.audit_retention_days)  # once now, then hourly
        try:
            yield
        finally:  # each step bounded: a hung broker or database must not keep the process alive
            closing = [hub.close, audit_log.close, access.close] + ([pusher.close] if pusher else [])
            for step in (*closing, bus.close, db.close):
                try:
                    async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
                        await step()
                except Exception:
                    log.exception("shutdown step %s failed", step.__qualname__)

    app = FastAPI(
        title="SiteComms",
        version=__version__,
        summary="Self-hosted, offline-first, real-time messaging for field teams",
        lifespan=lifespan,
        docs_url=None,  # docs.install: Swagger UI from the vendored copy, under its own policy
        openapi_url="/openapi.json",
        redirect_slashes=False,  # its redirect is built from the Host header: a wrong path is a 404
        # FastAPI's OpenTelemetry hooks look providers up on every request (a tenth of a send's
        # HTTP cost); SiteComms does not use them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.push_delivery = pusher  # None when this process does not deliver pushes
    errors.install(app)
    api = app.router
    api.route_class = Route  # every route of the app is served by route.Route (its module doc says why)
    messages.install(api, messaging, authenticate)  # the hot route first: routes are matched in order
    health.install(api, readiness)
    auth.install(api, signin, authenticate)
    users.install(api, accounts, authenticate)
    audit.install(api, audit_log, authenticate)
    conversations.install(api, messaging, authenticate)
    sync.install(api, pull, authenticate)
    watermelon.install(api, Watermelon(db, messaging), authenticate)
    push.install(api, subscriptions, authenticate)
    gotrue.install(api, signin, accounts, authenticate)  # supabase-js's auth client (docs/migrating-from-supabase.md)
    app.add_api_websocket_route("/v1/realtime", endpoint(session))
    app.add_api_websocket_route("/realtime/v1/websocket", supabase_endpoint(phoenix_socket))
    dashboard.install(app, settings.web_dir)
    docs.install(app)
    token = settings.metrics_token
    metrics.install(app, measured, token.get_secret_value() if token is not None else None)
    measured.gauge("sitecomms_realtime_sockets", "Realtime sockets open now", hub.sockets)
    measured.gauge("sitecomms_db_connections_in_use", "Database connections checked out now", db.connections_in_use)
    measured.counter(
        "sitecomms_bus_reconnects", "Times the bus listener connected again after a failure", lambda: bus.reconnects
    )
    bus.on_lag = measured.notice_lag.observe
    if pusher is not None:
        measured.gauge(
            "sitecomms_push_queue_depth",
            f"Pushes recorded, not yet settled, in every org (counted every {DEPTH_EVERY:g} s; alike in each process)",
            lambda: pusher.queue_depth,
        )
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, larger={watermelon.PATH: watermelon.PUSH_MAX_BYTES})
    security_headers.install(app, hsts_seconds=settings.hsts_seconds)
    app.add_middleware(HttpMetrics, metrics=measured)  # every request, its whole time
    app.state.metrics = measured
    request_id.install(app, access_log=settings.log_format == "json")  # outermost: every answer has its id
    return app
