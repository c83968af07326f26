"""The metrics of a real `sitecomms serve` (`server/metrics.py`, `api/metrics.py`), scraped over HTTP.

One server with `SITECOMMS_METRICS_TOKEN`; an org whose name, members' names, emails and
message text are distinctive. Every metric name is exposed; a send moves the send, HTTP,
delivery and writer metrics by what happened; sign-in failures and a throttle, a resync close
and the open socket show; and no scraped line contains any string a client chose (names,
emails, message text, a raw path) nor any id (orgs, users, conversations, messages): labels
are server vocabulary only. The token is required (none or a wrong one: 401), and without a
token set there is no /metrics (404).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sitecomms.protocol.enums import Role
from sitecomms.protocol.frames import CloseCode
from sitecomms.server.app import build_accounts, create_app
from sitecomms.server.metrics import HttpMetrics, Message, Metrics, Receive, Scope, Send
from sitecomms.server.services.accounts import NewUser
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store import migrate
from sitecomms.store.database import open_database
from tests.realtime_client import Http, RealtimeClient
from tests.servers import aserving, base_env, fresh_database
from tests.support import PASSWORD, fast_settings

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
TOKEN = "metrics-token-" + uuid.uuid4().hex
WAIT = 30.0
TAG = "".join(chr(ord("g") + int(c, 16)) for c in uuid.uuid4().hex[:8])  # letters g-v: in no number or id
ORG_NAME = f"Quokka Orchard {TAG}"
ADMIN_NAME = f"Zebulon Farquhar-Quill {TAG}"
MEDIC_NAME = f"Ottoline Braithwaite {TAG}"
TEXT = f"xylophone marmalade {TAG} at the north gate"
NAMES = (
    "sitecomms_http_requests_total",
    "sitecomms_http_request_duration_seconds",
    "sitecomms_messages_sent_total",
    "sitecomms_send_write_failures_total",
    "sitecomms_realtime_deliveries_total",
    "sitecomms_realtime_closes_total",
    "sitecomms_realtime_sockets",
    "sitecomms_bus_reconnects_total",
    "sitecomms_sqlite_writer_batch_size",
    "sitecomms_sqlite_writer_commit_seconds",
    "sitecomms_db_connections_in_use",
    "sitecomms_login_failures_total",
    "sitecomms_login_throttled_total",
    "sitecomms_push_outcomes_total",
    "sitecomms_push_queue_depth",
    "sitecomms_bus_notice_lag_seconds",
)


@dataclass
class Seeded:
    org_id: str
    admin: tuple[str, str]  # id, email
    medic: tuple[str, str]


async def seed(url: str) -> Seeded:
    await asyncio.wait_for(migrate.upgrade_async(url), 60)
    db = open_database(url, pool_size=2)
    try:
        accounts = build_accounts(fast_settings(url), db, NoPublisher())
        org = await accounts.create_org(ORG_NAME)
        made = []
        for name, role in ((ADMIN_NAME, Role.ADMIN), (MEDIC_NAME, Role.MEDIC)):
            email = f"{name.split()[0].lower()}-{TAG}@metrics.example"
            user = await accounts.create_user(None, org.id, NewUser(email, name, role, PASSWORD))
            made.append((user.id, email))
    finally:
        await db.close()
    return Seeded(org.id, made[0], made[1])


class Scraper:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.text = ""

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await self.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        self.text = response.text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
        }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Seeded]]:
    async with fresh_database("sqlite", tmp_path) as url:
        seeded = await asyncio.wait_for(seed(url), 60)
        env = base_env(url, SITECOMMS_METRICS_TOKEN=TOKEN, SITECOMMS_LOGIN_FAILURES_ALLOWED="1")
        async with aserving(env, tmp_path / "serve.log") as server:
            yield server.base_url, seeded


async def test_the_metrics_move_with_what_the_server_does_and_carry_no_client_string(
    served: tuple[str, Seeded],
) -> None:
    base_url, seeded = served
    http = Http(base_url)
    try:
        async with asyncio.timeout(WAIT):
            scraper = Scraper(http.client)
            admin = (await http.login(seeded.admin[1], PASSWORD))["access_token"]
            medic = (await http.login(seeded.medic[1], PASSWORD))["access_token"]
            direct = next(
                c["id"] for c in (await http.get(admin, "/v1/conversations"))["conversations"] if c["medic_id"]
            )
            await http.get(admin, f"/v1/conversations/{direct}/messages")
            stranger = f"nobody-{TAG}@metrics.example"  # unknown: 401, soon throttled (one failure allowed)
            statuses = [
                (await http.client.post("/v1/auth/login", json={"email": stranger, "password": "wrong"})).status_code
                for _ in range(4)
            ]
            assert statuses[0] == 401 and statuses[-1] == 429, statuses
            unmatched = await http.client.get(f"/no/such/{TAG}-path")
            assert unmatched.status_code == 404
            bad_cursor = await RealtimeClient.connect(base_url, medic, cursor=f"v1.1.{TAG}")
            assert await bad_cursor.wait_closed() == CloseCode.RESYNC_REQUIRED
            listener = await RealtimeClient.connect(base_url, medic, label="medic")
            await listener.until_live()

            before = await scraper.scrape()
            sent = await http.send(admin, direct, TEXT)
            changes = await listener.changes(2)  # the message and its conversation's new preview
            after = await scraper.scrape()

            assert all(name in scraper.text for name in NAMES), [n for n in NAMES if n not in scraper.text]
            sends = "sitecomms_messages_sent_total"
            assert value(after, sends) == value(before, sends) + 1
            http_count = ("sitecomms_http_requests_total", {"route": "/v1/messages", "method": "POST", "status": "201"})
            assert value(after, http_count[0], **http_count[1]) == value(before, http_count[0], **http_count[1]) + 1
            latency = "sitecomms_http_request_duration_seconds_count"
            assert value(after, latency, **http_count[1]) == value(before, latency, **http_count[1]) + 1
            deliveries = "sitecomms_realtime_deliveries_total"
            assert value(after, deliveries) >= value(before, deliveries) + len(changes)
            lag = "sitecomms_bus_notice_lag_seconds_count"  # the send's notice, back through the bus
            assert value(after, lag) >= value(before, lag) + 1
            batches = "sitecomms_sqlite_writer_batch_size_count"
            assert value(after, batches) > value(before, batches)
            assert value(after, "sitecomms_sqlite_writer_commit_seconds_count") == value(after, batches)
            assert value(after, "sitecomms_realtime_sockets") == 1
            assert value(after, "sitecomms_login_failures_total") >= 1
            assert value(after, "sitecomms_login_throttled_total") >= 1
            resync = {"code": str(int(CloseCode.RESYNC_REQUIRED)), "reason": "invalid_cursor"}
            assert value(after, "sitecomms_realtime_closes_total", **resync) == 1
            thread = {"route": "/v1/conversations/{conversation_id}/messages", "method": "GET", "status": "200"}
            assert value(after, "sitecomms_http_requests_total", **thread) == 1
            assert value(after, "sitecomms_http_requests_total", route="unmatched", method="GET", status="404")
            assert value(after, "sitecomms_http_requests_total", route="/metrics", method="GET", status="200") >= 1

            chosen = [ORG_NAME, ADMIN_NAME, MEDIC_NAME, TEXT, TAG, stranger, *seeded.admin, *seeded.medic]
            chosen += [seeded.org_id, direct, sent["id"], "Quokka", "Zebulon", "xylophone"]
            leaked = [s for s in chosen if s.lower() in scraper.text.lower()]
            assert not leaked, leaked
            await listener.close()
    finally:
        await http.aclose()


async def test_metrics_need_the_token(served: tuple[str, Seeded]) -> None:
    base_url, _ = served
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT, trust_env=False) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": TOKEN},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert "sitecomms_" not in response.text


async def test_without_a_token_there_is_no_metrics_endpoint(tmp_path: Path) -> None:
    app = create_app(fast_settings(f"sqlite:///{tmp_path / 'plain.db'}"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test") as client:
            response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert "sitecomms_" not in response.text


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValueError, match="SITECOMMS_METRICS_TOKEN must be at least 16 characters"):
        fast_settings("sqlite:///unused.db", metrics_token="short")


def test_the_grafana_dashboard_charts_only_metrics_the_server_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for expr in exprs for name in re.findall(r"sitecomms_\w+", expr)}
    assert used <= set(NAMES), used - set(NAMES)
    assert len(used) >= 12, used  # nearly every metric has a panel


async def test_a_request_that_fails_is_a_500_and_odd_methods_and_paths_are_no_labels() -> None:
    metrics = Metrics()

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    middleware = HttpMetrics(failing, metrics=metrics)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    scope = {"type": "http", "method": f"BREW-{TAG}", "path": f"/pot/{TAG}"}
    with pytest.raises(RuntimeError, match="boom"):
        await middleware(scope, receive, send)
    text = metrics.exposition().decode()
    assert 'sitecomms_http_requests_total{method="other",route="unmatched",status="500"} 1.0' in text, text
    assert TAG not in text
