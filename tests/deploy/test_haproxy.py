"""deploy/haproxy.cfg, run by Debian's HAProxy in front of real `sitecomms serve` processes.

- The committed file is valid as shipped (hardened, plain HTTP) and with TLS on, warnings fatal;
  without haproxy installed the tests fail, they never skip.
- Failover: two servers on one PostgreSQL and Redis behind the balancer; senders post through it
  (a failed send is sent again with the same idempotency key) and receivers follow the realtime
  stream through it (a dropped socket resumes from its cursor) while one server is SIGKILLed
  and later restarted on its port. Every message is acknowledged, and every receiver got every
  message it may see exactly once, in position order. The balancer took the dead server out of
  rotation and put the restarted one back.
- TLS ends at the balancer (HTTP is redirected, the WebSocket works over wss), and the server
  records the address the balancer saw, not an `X-Forwarded-For` the client made up.

PostgreSQL, Redis and HAProxy are mandatory: the tests fail, never skip, without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sitecomms.bench import local_tls
from sitecomms.protocol.enums import ChangeType, Role
from sitecomms.protocol.requests import LoginRequest, body
from tests.deploy import haproxy
from tests.deploy.haproxy import Balancer, balancing, check
from tests.deploy.traffic import WAIT, Sends, send_until_acked
from tests.follower import Follower
from tests.realtime_client import RealtimeClient
from tests.server.realtime.test_multiprocess import User, seed
from tests.servers import HOST, Served, base_env, free_port, fresh_database, start
from tests.support import PASSWORD

REDIS_BUS = "redis://127.0.0.1:6379/0"
LANES = 4  # concurrent senders, each on its own connection to the balancer
LANE_INTERVAL = 0.1  # seconds a lane waits between sends: 40 msg/s in all
PHASE = 40  # acknowledged sends before the kill, after it, and after the restart
DELIVERY_WAIT = 30.0
ABNORMAL = 1006  # a socket that ended without a close frame: its server was killed
SERVER_START = 90.0  # seconds for a server process to be ready (it waits 30 s, 3 port attempts)


class Backends:
    """The `sitecomms serve` processes by the balancer's names for them; all stopped at the end."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.current: dict[str, Served] = {}
        self._starts = itertools.count()

    async def start(self, name: str, port: int | None = None) -> Served:
        log = self.directory / f"{name}-{next(self._starts)}.log"
        served = await asyncio.wait_for(asyncio.to_thread(start, self.env, log, port=port), SERVER_START)
        self.current[name] = served
        return served

    async def kill(self, name: str) -> None:
        served = self.current[name]
        served.process.kill()  # SIGKILL: no shutdown, no close frames, no last notices
        assert await asyncio.wait_for(asyncio.to_thread(served.process.wait), WAIT) == -9

    async def stop_all(self) -> None:
        await asyncio.gather(*(asyncio.wait_for(asyncio.to_thread(s.stop), 30) for s in self.current.values()))

    def describe(self) -> str:
        return "\n".join(f"--- {name} ---\n{served.describe()}" for name, served in self.current.items())


def plan(admin: User, medic1: User, medic2: User, broadcast_id: str) -> list[tuple[User, str]]:
    """Who sends message n (n modulo 4), and where: a mix of what each receiver may see."""
    assert medic1.conversation_id is not None and medic2.conversation_id is not None
    return [
        (admin, medic1.conversation_id),
        (medic1, medic1.conversation_id),
        (admin, broadcast_id),
        (medic2, medic2.conversation_id),
    ]


def visible_to(user: User, message: dict[str, Any], broadcast_id: str) -> bool:
    return user.role is Role.ADMIN or message["conversation_id"] in (user.conversation_id, broadcast_id)


async def lane(
    lb: Balancer, senders: list[tuple[User, str]], numbers: Iterator[int], sends: Sends, stop: asyncio.Event
) -> None:
    """Send the next message until `stop`; the one in progress is finished (acknowledged) first."""
    async with httpx.AsyncClient(base_url=lb.base_url, timeout=WAIT, trust_env=False) as http:
        while not stop.is_set():
            number = next(numbers)
            user, conversation_id = senders[number % len(senders)]
            await send_until_acked(http, user, conversation_id, number, sends)
            with contextlib.suppress(TimeoutError):  # the lane's pace, cut short by `stop`
                await asyncio.wait_for(stop.wait(), LANE_INTERVAL)


async def all_message_ids(http: httpx.AsyncClient, user: User, cursor: str) -> set[str]:
    """Every message after `cursor` in the database that `user` may see (GET /v1/sync)."""
    ids: set[str] = set()
    for _page in range(100):
        response = await http.get("/v1/sync", params={"cursor": cursor, "limit": 500}, headers=user.auth())
        assert response.status_code == 200, response.text
        page = response.json()
        ids |= {c["data"]["id"] for c in page["changes"] if c["type"] == ChangeType.MESSAGE_CREATED}
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return ids
    raise AssertionError("sync did not end within 100 pages")


# --- the configuration as shipped ---------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key: (haproxy's PEM bundle, the CA for clients to trust)."""
    made = local_tls.make_certificates(directory, names=(HOST,), ca_name="SiteComms test balancer CA")
    bundle = directory / "balancer.pem"
    bundle.touch(mode=0o600)
    bundle.write_bytes(made.cert_file.read_bytes() + made.key_file.read_bytes())
    return bundle, made.ca_file


def test_the_committed_configuration_is_valid_as_shipped_and_with_tls(tmp_path: Path) -> None:
    shipped = check({})
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    bundle, _ = self_signed(tmp_path)
    with_tls = check({"SITECOMMS_LB_TLS_CERT": str(bundle)})
    assert with_tls.returncode == 0, with_tls.stdout + with_tls.stderr
    missing = check({"SITECOMMS_LB_TLS_CERT": str(tmp_path / "absent.pem")})
    assert missing.returncode != 0, "a TLS certificate that is not there must stop haproxy"


def test_without_haproxy_the_test_fails_rather_than_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(pytest.fail.Exception, match="scripts/services"):
        haproxy.binary()


# --- failover -----------------------------------------------------------------------------------


@asynccontextmanager
async def receiving(*receivers: Follower[User]) -> AsyncIterator[None]:
    try:
        for receiver in receivers:  # one at a time: leastconn then alternates between the servers
            await receiver.start()
        yield
    finally:
        await asyncio.gather(*(r.stop() for r in receivers), return_exceptions=True)


@pytest.mark.postgres
@pytest.mark.timeout(240)
async def test_every_acknowledged_message_reaches_every_receiver_once_while_a_backend_dies_and_returns(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(fresh_database("postgresql", tmp_path))
        admin, medic1, medic2 = await asyncio.wait_for(seed(url), 60)
        backends = Backends(base_env(url, SITECOMMS_BUS_URL=REDIS_BUS), tmp_path)
        stack.push_async_callback(backends.stop_all)
        a, b = await asyncio.gather(backends.start("app1"), backends.start("app2"))
        lb = await stack.enter_async_context(balancing([f"{HOST}:{a.port}", f"{HOST}:{b.port}"], tmp_path / "lb.log"))
        await lb.until({"app1": "UP", "app2": "UP"})
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=lb.base_url, timeout=WAIT, trust_env=False))

        response = await http.get("/v1/conversations", headers=admin.auth())
        assert response.status_code == 200, response.text
        by_medic = {c["medic_id"]: c["id"] for c in response.json()["conversations"]}
        medic1.conversation_id, medic2.conversation_id, broadcast_id = (
            by_medic[medic1.id],
            by_medic[medic2.id],
            by_medic[None],
        )
        response = await http.get("/v1/sync", headers=admin.auth())
        start_cursor = response.json()["next_cursor"]  # the head, before any message

        receivers = [
            Follower("admin-1", admin, [lb.base_url], start_cursor),
            Follower("medic1", medic1, [lb.base_url], start_cursor),
            Follower("admin-2", admin, [lb.base_url], start_cursor),
            Follower("medic2", medic2, [lb.base_url], start_cursor),
        ]
        late = Follower("admin-late", admin, [lb.base_url], start_cursor)  # joins once app1 is back
        await stack.enter_async_context(receiving(*receivers))
        stack.push_async_callback(late.stop)
        sends, stop = Sends(), asyncio.Event()
        senders, numbers = plan(admin, medic1, medic2, broadcast_id), itertools.count()
        figures: dict[str, float] = {}

        async def scenario() -> None:
            try:
                await sends.until(PHASE)
                await backends.kill("app1")
                killed_at, t = len(sends.acked), time.monotonic()
                await lb.until({"app1": "DOWN"})
                figures["down after (s)"] = round(time.monotonic() - t, 2)
                await sends.until(killed_at + PHASE, within=DELIVERY_WAIT)
                t = time.monotonic()
                await backends.start("app1", port=a.port)  # where the balancer expects it
                figures["restart to ready (s)"] = round(time.monotonic() - t, 2)
                t = time.monotonic()
                rows = await lb.until({"app1": "UP"})
                figures["ready to UP (s)"] = round(time.monotonic() - t, 2)
                figures["app1 sessions at UP"] = int(rows["app1"]["stot"])
                await late.start()  # app1 has no socket now: leastconn sends this one there
                await sends.until(len(sends.acked) + PHASE, within=DELIVERY_WAIT)
            finally:
                stop.set()

        try:
            async with asyncio.timeout(120), asyncio.TaskGroup() as group:
                for _ in range(LANES):
                    group.create_task(lane(lb, senders, numbers, sends, stop))
                group.create_task(scenario())
        except* AssertionError as failures:
            raise AssertionError(f"{failures.exceptions}\n{backends.describe()}\n{lb.describe()}") from None

        # Every message drawn was acknowledged, and the database holds exactly those.
        acked = sorted(sends.acked.values(), key=lambda m: int(m["position"]))
        assert sorted(sends.acked) == list(range(len(acked)))
        assert await all_message_ids(http, admin, start_cursor) == {m["id"] for m in acked}
        for receiver in [*receivers, late]:
            wanted = [m["id"] for m in acked if visible_to(receiver.user, m, broadcast_id)]
            await receiver.until_messages(wanted, DELIVERY_WAIT)
            assert receiver.message_ids == wanted, f"{receiver.label}: not exactly once in position order"
            receiver.check_stream()

        # The sockets on the killed server were cut (no close frame) and resumed once; no other moved.
        moved = [r.label for r in receivers if r.reconnects]
        assert moved, "no receiver was on the killed server"
        closes = {r.label: r.close_codes for r in [*receivers, late]}
        assert closes == {label: [ABNORMAL] if label in moved else [] for label in closes}
        rows = await lb.servers()
        assert int(rows["app1"]["stot"]) > figures["app1 sessions at UP"], "the restarted server got no traffic"
        assert int(rows["app1"]["chkdown"]) >= 1
        figures.update(
            seconds=round(time.monotonic() - started, 1),
            messages=len(acked),
            attempts=sends.attempts,
            **{f"acked {status}": count for status, count in sorted(sends.statuses.items())},
            **{f"failed {kind}": count for kind, count in sorted(sends.failures.items())},
            received=sum(len(r.message_ids) for r in [*receivers, late]),
            reconnects=sum(r.reconnects for r in receivers),
            moved=len(moved),
        )
        print(f"\nfailover figures: {figures}")


# --- TLS and the client's address ---------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_tls_ends_at_the_balancer_and_the_server_records_the_address_it_saw(tmp_path: Path) -> None:
    bundle, cert = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(fresh_database("sqlite", tmp_path))
        admin, _medic1, _medic2 = await asyncio.wait_for(seed(url), 60)
        # The server trusts forwarded headers from all of 127.0.0.0/8, the client's address
        # included: only a balancer that replaces the client's X-Forwarded-For (rather than
        # appending to it) keeps the made-up address out of the record.
        backends = Backends(base_env(url, SITECOMMS_FORWARDED_ALLOW_IPS="127.0.0.0/8"), tmp_path)
        stack.push_async_callback(backends.stop_all)
        served = await backends.start("app1")
        nowhere = f"{HOST}:{free_port()}"  # app2 is not running: its checks fail and it stays out
        lb = await stack.enter_async_context(
            balancing([f"{HOST}:{served.port}", nowhere], tmp_path / "lb.log", tls_cert=bundle)
        )
        await lb.until({"app1": "UP", "app2": "DOWN"})
        assert lb.tls_url is not None

        async with httpx.AsyncClient(base_url=lb.base_url, timeout=WAIT, trust_env=False) as plain:
            response = await plain.get("/readyz")
        assert response.status_code == 301
        location = response.headers["location"]
        assert location.startswith("https://") and location.endswith("/readyz"), location

        # From 127.0.0.2, claiming to be 203.0.113.7: the balancer replaces the claim with the
        # address it saw, and the server records that (not its peer, the balancer's 127.0.0.1).
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2", verify=trust)
        async with httpx.AsyncClient(base_url=lb.tls_url, transport=transport, timeout=WAIT, trust_env=False) as https:
            assert (await https.get("/readyz")).status_code == 200
            response = await https.post(
                "/v1/auth/login",
                json=body(LoginRequest(admin.email, PASSWORD)),
                headers={"X-Forwarded-For": "203.0.113.7"},
            )
            assert response.status_code == 200, response.text
            headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
            sessions = (await https.get("/v1/sessions", headers=headers)).json()["sessions"]
            (current,) = [s for s in sessions if s["current"]]
            assert current["last_address"] == "127.0.0.2"

            client = await RealtimeClient.connect(
                lb.tls_url.replace("https://", "wss://"), admin.token, label="wss", ssl=trust
            )
            try:
                await client.until_live(within=WAIT)
                conversations = (await https.get("/v1/conversations", headers=headers)).json()["conversations"]
                (broadcast,) = [c["id"] for c in conversations if c["type"] == "broadcast"]
                send = {"conversation_id": broadcast, "content": "over TLS", "idempotency_key": uuid.uuid4().hex}
                response = await https.post("/v1/messages", json=send, headers=headers)
                assert response.status_code == 201, response.text
                frames = await client.frames_until(lambda f: f.get("type") == ChangeType.MESSAGE_CREATED, WAIT)
                assert frames[-1]["data"]["id"] == response.json()["id"]
            finally:
                await client.close()
