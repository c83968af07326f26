"""The process's Prometheus metrics: one registry per app, every metric object, the HTTP middleware.

`Metrics` is built by `create_app` (nothing global: two apps in one process have two
registries) and handed to what it counts: the HTTP middleware (`HttpMetrics`, requests and
latency by route *template*, method and status), sends (`Messaging`), the realtime session
(deliveries, closes), the push worker (outcomes), the sign-in throttle (`CountingThrottle`),
the SQLite writer (a callback: the store imports nothing of the server) and, read at scrape
time, the hub's sockets, the bus's reconnects, the push queue's depth and the PostgreSQL pool;
the bus tells each notice's lag (`Bus.on_lag`). Labels carry only
server vocabulary (route templates, known methods, status codes, close codes, enum values):
never an id, a name, a message or anything else a client chose, so their number is bounded.
Each process exposes its own registry (`api/metrics.py`); Prometheus scrapes each process and
sums. What a send passes (requests, sends, deliveries, commits) is kept in plain numbers
(`Count`, `Distribution`) that a collector turns into Prometheus families at scrape time;
the rare events use prometheus_client's own counters. This module imports nothing of the web
framework (services use it).
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from sitecomms.server.services.errors import Throttled
from sitecomms.server.services.signin import LoginThrottle

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED = "unmatched"  # the route label of a request no route matched (never its raw path)
_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Count:
    """A counter on the hot paths: a plain number, added to by one thread (the event loop's or the
    SQLite writer's) and read by the scrape. prometheus_client's own take a lock per increment:
    about 1.5 µs, against 0.05 µs here (docs/performance.md, "Metrics")."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Distribution:
    """A histogram on the hot paths, like `Count`: bucket counts (not yet cumulative), count and sum.
    A scrape racing an update may see one observation in the count and not yet in its bucket."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last: over every bound (+Inf)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        labels = [*(str(float(bound)) for bound in self.bounds), "+Inf"]
        return list(zip(labels, itertools.accumulate(self.buckets), strict=True))


class _Collected(Collector):
    """Exposes the hot paths' plain counts and distributions, and values read when Prometheus
    scrapes (sockets, pool, reconnects: nothing to update meanwhile)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.gauges: list[tuple[str, str, Callable[[], float]]] = []
        self.counters: list[tuple[str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        labels = ["route", "method", "status"]
        requests = CounterMetricFamily("sitecomms_http_requests", "HTTP requests answered", labels=labels)
        latency = HistogramMetricFamily(
            "sitecomms_http_request_duration_seconds",
            "HTTP request latency, from the request's arrival to its last byte sent",
            labels=labels,
        )
        for (route, method, status), series in list(m.http.items()):
            requests.add_metric([route, method, str(status)], series.count)
            latency.add_metric([route, method, str(status)], series.cumulative(), series.total)
        yield requests
        yield latency
        for name, documentation, count in (
            ("sitecomms_messages_sent", "Messages stored (not counting retries)", m.messages_sent),
            ("sitecomms_realtime_deliveries", "Change frames sent on realtime sockets (replay and live)", m.deliveries),
        ):
            yield CounterMetricFamily(name, documentation, value=count.value)
        for name, documentation, distribution in (
            ("sitecomms_sqlite_writer_batch_size", "Writes committed together by the SQLite writer", m.writer_batch),
            (
                "sitecomms_sqlite_writer_commit_seconds",
                "Time of one SQLite writer transaction, BEGIN to COMMIT (its fsync included)",
                m.writer_commit,
            ),
            (
                "sitecomms_bus_notice_lag_seconds",
                "Time from a change's notice being published (by any process) to its arrival here, by the two clocks",
                m.notice_lag,
            ),
        ):
            family = HistogramMetricFamily(name, documentation)
            family.add_metric([], distribution.cumulative(), distribution.total)
            yield family
        for name, documentation, read in self.gauges:
            yield GaugeMetricFamily(name, documentation, value=read())
        for name, documentation, read in self.counters:
            yield CounterMetricFamily(name, documentation, value=read())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http: dict[tuple[str, str, int], Distribution] = {}  # (route, method, status) -> latencies
        self.messages_sent = Count()
        self.deliveries = Count()
        self.writer_batch = Distribution(_BATCH_BUCKETS)
        self.writer_commit = Distribution(_COMMIT_BUCKETS)
        self.notice_lag = Distribution(_LAG_BUCKETS)
        self.send_write_failures = Counter(
            "sitecomms_send_write_failures", "Sends the database refused (answered 503)", registry=r
        )
        self.realtime_closes = Counter(
            "sitecomms_realtime_closes",
            "Realtime sockets closed by the server, by close code (and resync reason for 4409)",
            ["code", "reason"],
            registry=r,
        )
        self.login_failures = Counter(
            "sitecomms_login_failures",
            "Failed sign-ins and refused refresh tokens (what the sign-in throttle counts)",
            registry=r,
        )
        self.login_throttled = Counter("sitecomms_login_throttled", "Sign-ins and refreshes refused 429", registry=r)
        self.push_outcomes = Counter(
            "sitecomms_push_outcomes", "Pushes settled, by outcome (push_delivery.Outcome)", ["outcome"], registry=r
        )
        self._collected = _Collected(self)
        r.register(self._collected)
        self._closes: dict[tuple[int, str], Any] = {}

    # --- read at scrape time ---------------------------------------------------------------

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._collected.gauges.append((name, documentation, read))

    def counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A counter another component keeps (`name` without `_total`, as prometheus_client adds it)."""
        self._collected.counters.append((name, documentation, read))

    # --- instrumentation points ------------------------------------------------------------

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered (on the event loop's thread)."""
        key = (route, method if method in _METHODS else "other", status)
        series = self.http.get(key)
        if series is None:
            series = self.http[key] = Distribution(_LATENCY_BUCKETS)
        series.observe(seconds)

    def closed(self, code: int, resync_reason: str = "") -> None:
        """A socket the server closed; `resync_reason` is a `ResyncReason` value, or empty."""
        key = (code, resync_reason)
        child = self._closes.get(key)
        if child is None:
            child = self._closes[key] = self.realtime_closes.labels(str(code), resync_reason)
        child.inc()

    def committed(self, batch: int, seconds: float) -> None:
        """The SQLite writer's callback (called on its thread): one transaction of `batch` writes."""
        self.writer_batch.observe(batch)
        self.writer_commit.observe(seconds)

    def settled(self, outcomes: Iterable[str]) -> None:
        for outcome in outcomes:
            self.push_outcomes.labels(outcome).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetrics:
    """ASGI middleware: each HTTP request counted and timed by its route's template (`/v1/users/{user_id}`)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # nothing was sent: the server failed the request

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = getattr(scope.get("route"), "path", None)  # set by the router once a route matched
            self.metrics.request(
                route if isinstance(route, str) else UNMATCHED, scope["method"], status, time.perf_counter() - started
            )


class CountingThrottle:
    """The sign-in throttle, counting failures and refusals for `Metrics` (it decides nothing itself)."""

    def __init__(self, inner: LoginThrottle, metrics: Metrics) -> None:
        self._inner = inner
        self._throttled = metrics.login_throttled
        self._failures = metrics.login_failures

    async def check(self, email: str, address: str) -> None:
        try:
            await self._inner.check(email, address)
        except Throttled:
            self._throttled.inc()
            raise

    async def failed(self, email: str, address: str) -> None:
        self._failures.inc()
        await self._inner.failed(email, address)

    async def succeeded(self, email: str, address: str) -> None:
        await self._inner.succeeded(email, address)
