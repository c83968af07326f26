"""Two real `sitecomms serve` processes on one PostgreSQL, sharing a bus (Redis or LISTEN/NOTIFY).

- A message sent over HTTP through either process reaches the sockets of the other, each socket
  seeing only what its user may see.
- One process is SIGKILLed while messages stream: its clients reconnect to the survivor with
  the last cursor they received and end up with every acknowledged message visible to them
  exactly once, in position order (duplicates fail the test: nothing deduplicates here). When
  the killed process was the one taking the sends, messages it committed without answering
  may exist; if they do, they are delivered too.

PostgreSQL and Redis are mandatory: the tests fail, never skip, when they are unreachable.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sitecomms.protocol.enums import Role
from sitecomms.protocol.frames import CloseCode
from sitecomms.server.app import build_accounts, build_signin
from sitecomms.server.services.accounts import NewUser
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store import migrate
from sitecomms.store.database import open_database
from tests.follower import Follower
from tests.servers import Served, aserving, base_env, fresh_database
from tests.support import PASSWORD, fast_settings

pytestmark = pytest.mark.postgres

WAIT = 15.0  # seconds for any one thing the tests wait for
SENDS = 200
LANES = 4  # concurrent senders
KILL_AFTER = 60  # acknowledged sends before the kill
REDIS_BUS = "redis://127.0.0.1:6379/0"
ABNORMAL = 1006  # the connection ended without a close frame (the server was killed)


@pytest.fixture(params=["redis", "postgres"])
def bus_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class User:
    id: str
    email: str
    role: Role
    token: str
    conversation_id: str | None = None  # a medic's direct conversation

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Cluster:
    a: Served
    b: Served
    admin: User
    medic1: User
    medic2: User
    broadcast_id: str
    http_a: httpx.AsyncClient
    http_b: httpx.AsyncClient

    def describe(self) -> str:
        return f"--- server A ---\n{self.a.describe()}\n--- server B ---\n{self.b.describe()}"


async def seed(url: str) -> tuple[User, User, User]:
    """One org (the database migrated first): an admin and two medics with tokens, straight
    through the services (no HTTP, no bus)."""
    await asyncio.wait_for(migrate.upgrade_async(url), 60)
    db = open_database(url, pool_size=2)
    try:
        settings = fast_settings(url)
        accounts = build_accounts(settings, db, NoPublisher())
        signin = build_signin(settings, db, NoPublisher())
        tag = uuid.uuid4().hex[:8]
        org = await accounts.create_org(f"Org {tag}")
        users = []
        for role, name in ((Role.ADMIN, "Admin"), (Role.MEDIC, "Medic One"), (Role.MEDIC, "Medic Two")):
            email = f"{uuid.uuid4().hex[:12]}@{role.value}.example"
            user = await accounts.create_user(None, org.id, NewUser(email, f"{name} {tag}", role, PASSWORD))
            users.append(User(user.id, email, role, (await signin.mint_token(email)).access_token))
    finally:
        await db.close()
    return users[0], users[1], users[2]


def auth(user: User) -> dict[str, str]:
    return user.auth()


@asynccontextmanager
async def cluster(bus_kind: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with fresh_database("postgresql", tmp_path) as url:
        admin, medic1, medic2 = await asyncio.wait_for(seed(url), 120)
        env = base_env(url, SITECOMMS_BUS_URL=REDIS_BUS if bus_kind == "redis" else url)
        async with AsyncExitStack() as stack:
            # both at once, as an orchestrator would start them
            a, b = await asyncio.gather(
                stack.enter_async_context(aserving(env, tmp_path / "a.log")),
                stack.enter_async_context(aserving(env, tmp_path / "b.log")),
            )
            http_a = await stack.enter_async_context(httpx.AsyncClient(base_url=a.base_url, timeout=WAIT))
            http_b = await stack.enter_async_context(httpx.AsyncClient(base_url=b.base_url, timeout=WAIT))
            response = await http_b.get("/v1/conversations", headers=auth(admin))
            assert response.status_code == 200, response.text
            by_medic = {c["medic_id"]: c["id"] for c in response.json()["conversations"]}
            medic1.conversation_id, medic2.conversation_id = by_medic[medic1.id], by_medic[medic2.id]
            yield Cluster(a, b, admin, medic1, medic2, by_medic[None], http_a, http_b)


async def send(http: httpx.AsyncClient, user: User, conversation_id: str, content: str) -> dict[str, Any]:
    body = {"conversation_id": conversation_id, "content": content, "idempotency_key": uuid.uuid4().hex}
    response = await http.post("/v1/messages", json=body, headers=auth(user))
    assert response.status_code == 201, f"send: {response.status_code} {response.text}"
    message: dict[str, Any] = response.json()
    return message


@asynccontextmanager
async def following(*followers: Follower[User]) -> AsyncIterator[None]:
    try:
        await asyncio.gather(*(f.start() for f in followers))
        yield
    finally:
        await asyncio.gather(*(f.stop() for f in followers), return_exceptions=True)


async def visible_message_ids(http: httpx.AsyncClient, user: User, cursor: str) -> set[str]:
    """Every message after `cursor` that `user` may see, from GET /v1/sync (the database)."""
    ids: set[str] = set()
    for _page in range(100):
        response = await http.get("/v1/sync", params={"cursor": cursor, "limit": 500}, headers=auth(user))
        assert response.status_code == 200, response.text
        page = response.json()
        ids |= {c["data"]["id"] for c in page["changes"] if c["type"] == "message.created"}
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return ids
    raise AssertionError("sync did not end within 100 pages")


# --- both directions, with visibility ----------------------------------------------------------


async def test_messages_sent_through_one_process_reach_sockets_on_the_other(bus_kind: str, tmp_path: Path) -> None:
    async with cluster(bus_kind, tmp_path) as c:
        assert c.medic1.conversation_id is not None and c.medic2.conversation_id is not None
        admin_a = Follower("admin@A", c.admin, [c.a.base_url])
        medic1_a = Follower("medic1@A", c.medic1, [c.a.base_url])
        medic2_a = Follower("medic2@A", c.medic2, [c.a.base_url])
        admin_b = Follower("admin@B", c.admin, [c.b.base_url])
        medic1_b = Follower("medic1@B", c.medic1, [c.b.base_url])
        medic2_b = Follower("medic2@B", c.medic2, [c.b.base_url])
        everyone = (admin_a, medic1_a, medic2_a, admin_b, medic1_b, medic2_b)
        async with following(*everyone):
            # B -> sockets on A (and B): the admin writes to medic 1, medic 1 answers
            to_medic1 = await send(c.http_b, c.admin, c.medic1.conversation_id, "from admin via B")
            reply = await send(c.http_b, c.medic1, c.medic1.conversation_id, "from medic 1 via B")
            # A -> sockets on B (and A): the same the other way round
            again = await send(c.http_a, c.admin, c.medic1.conversation_id, "from admin via A")
            answer = await send(c.http_a, c.medic1, c.medic1.conversation_id, "from medic 1 via A")
            private = [to_medic1["id"], reply["id"], again["id"], answer["id"]]
            for follower in (admin_a, medic1_a, admin_b, medic1_b):
                await follower.until(lambda f: set(private) <= set(f.message_ids), "medic 1's conversation")
                assert follower.message_ids == private, follower.label
            # a broadcast after them, through each process: everyone gets both
            marker_b = await send(c.http_b, c.admin, c.broadcast_id, "broadcast via B")
            marker_a = await send(c.http_a, c.admin, c.broadcast_id, "broadcast via A")
            markers = [marker_b["id"], marker_a["id"]]
            for follower in everyone:
                await follower.until(lambda f: set(markers) <= set(f.message_ids), "both broadcasts")
            # fan-out is in position order, so medic 2 would have had medic 1's messages by now
            for follower in (medic2_a, medic2_b):
                assert follower.message_ids == markers, f"{follower.label} saw {follower.message_ids}"
                conversations = {
                    f["data"]["conversation_id"] for f in follower.changes if "conversation_id" in f["data"]
                }
                assert c.medic1.conversation_id not in conversations, f"{follower.label} saw medic 1's conversation"
            # medic 2 writes through A: the admin on B sees it, medic 1 on either process does not
            own = await send(c.http_a, c.medic2, c.medic2.conversation_id, "from medic 2 via A")
            await admin_b.until(lambda f: own["id"] in f.message_ids, "medic 2's message")
            await medic2_b.until(lambda f: own["id"] in f.message_ids, "its own message from the other process")
            last = await send(c.http_b, c.admin, c.broadcast_id, "last broadcast via B")
            for follower in (medic1_a, medic1_b):
                await follower.until(lambda f: last["id"] in f.message_ids, "the last broadcast")
                assert own["id"] not in follower.message_ids, f"{follower.label} saw medic 2's message"
            for follower in everyone:
                follower.check_stream()
                assert len(follower.connected_to) == 1, f"{follower.label} reconnected: {follower.close_codes}"


# --- SIGKILL mid-stream -------------------------------------------------------------------------


@dataclass
class Sent:
    acknowledged: dict[int, dict[str, Any]] = field(default_factory=dict)  # message number -> message
    failed: dict[int, str] = field(default_factory=dict)  # message number -> why
    enough: asyncio.Event = field(default_factory=asyncio.Event)


def plan(c: Cluster, number: int) -> tuple[User, str]:
    """Who sends message `number`, and where: medic 1's conversation, the broadcast, medic 2's."""
    assert c.medic1.conversation_id is not None and c.medic2.conversation_id is not None
    return [
        (c.admin, c.medic1.conversation_id),
        (c.medic1, c.medic1.conversation_id),
        (c.admin, c.broadcast_id),
        (c.medic2, c.medic2.conversation_id),
    ][number % 4]


def visible_to(c: Cluster, user: User, message: dict[str, Any]) -> bool:
    if user.role is Role.ADMIN:
        return True
    return message["conversation_id"] in (user.conversation_id, c.broadcast_id)


async def stream(c: Cluster, http: httpx.AsyncClient, sent: Sent, *, stop_on_failure: bool) -> None:
    """SENDS messages over LANES concurrent senders, recording what was acknowledged."""

    async def lane(first: int) -> None:
        for number in range(first, SENDS, LANES):
            user, conversation_id = plan(c, number)
            body = {"conversation_id": conversation_id, "content": f"m{number}", "idempotency_key": uuid.uuid4().hex}
            try:
                response = await http.post("/v1/messages", json=body, headers=auth(user))
            except httpx.TransportError as exc:
                sent.failed[number] = repr(exc)
                if stop_on_failure:
                    return
                continue
            if response.status_code != 201:
                sent.failed[number] = f"{response.status_code} {response.text}"
                continue
            sent.acknowledged[number] = response.json()
            if len(sent.acknowledged) >= KILL_AFTER:
                sent.enough.set()

    async with asyncio.timeout(60):
        await asyncio.gather(*(lane(i) for i in range(LANES)))
    sent.enough.set()


async def kill_when(sent: Sent, victim: Served, how: str = "kill") -> None:
    async with asyncio.timeout(WAIT * 2):
        await sent.enough.wait()
    if how == "kill":
        victim.process.kill()  # SIGKILL: no shutdown, no close frames, no last notices
    else:
        victim.process.terminate()  # SIGTERM: a graceful stop (a deploy); sockets are told to go away
    await asyncio.wait_for(asyncio.to_thread(victim.process.wait), WAIT)


def check_moved_mid_stream(c: Cluster, follower: Follower[User], close_codes: tuple[int, ...] = (ABNORMAL,)) -> None:
    """The follower had messages from A before it went and from B after, and was closed once, as expected."""
    assert follower.connected_to == [c.a.base_url, c.b.base_url], (follower.label, follower.close_codes)
    assert len(follower.close_codes) == 1, f"{follower.label}: closed {follower.close_codes}"
    assert follower.close_codes[0] in close_codes, f"{follower.label}: closed with {follower.close_codes}"
    before, after = follower.per_connection[0], sum(follower.per_connection[1:])
    assert before > 0 and after > 0, f"{follower.label}: {before} messages before the kill, {after} after"


def followers_for(c: Cluster) -> list[Follower[User]]:
    """Sockets on A (they will have to move to B) and one on B from the start."""
    return [
        Follower("admin@A", c.admin, [c.a.base_url, c.b.base_url]),
        Follower("medic1@A", c.medic1, [c.a.base_url, c.b.base_url]),
        Follower("medic2@A", c.medic2, [c.a.base_url, c.b.base_url]),
        Follower("admin@B", c.admin, [c.b.base_url]),
    ]


async def check_delivery(c: Cluster, followers: list[Follower[User]], sent: Sent, start_cursor: str) -> None:
    """Every follower ends with exactly the messages in the database it may see: all acknowledged ones."""
    for follower in followers:
        in_database = await visible_message_ids(c.http_b, follower.user, start_cursor)
        acknowledged = {m["id"] for m in sent.acknowledged.values() if visible_to(c, follower.user, m)}
        missing_from_db = acknowledged - in_database
        assert not missing_from_db, f"acknowledged but not in the database: {missing_from_db}"
        wanted = frozenset(in_database)

        def has_all(f: Follower[User], wanted: frozenset[str] = wanted) -> bool:
            return wanted <= set(f.message_ids)

        await follower.until(has_all, "every message in the database")
        follower.check_stream()
        assert set(follower.message_ids) == in_database, (
            f"{follower.label}: messages it may not see: {set(follower.message_ids) - in_database}"
        )
        assert acknowledged <= set(follower.message_ids)


@pytest.mark.parametrize("how", ["kill", "terminate"])
async def test_the_process_holding_the_sockets_dies_mid_stream(bus_kind: str, how: str, tmp_path: Path) -> None:
    """Sends go through B; A, holding the sockets, is killed (or stopped) mid-stream: they resume on B.

    Nothing is deduplicated: each socket's change frames must have strictly increasing positions
    across the reconnect, and every acknowledged message it may see must be among them.
    """
    async with cluster(bus_kind, tmp_path) as c:
        start_cursor = (await c.http_b.get("/v1/sync", headers=auth(c.admin))).json()["next_cursor"]
        followers = followers_for(c)
        sent = Sent()
        started = time.monotonic()
        async with following(*followers):
            await asyncio.gather(stream(c, c.http_b, sent, stop_on_failure=False), kill_when(sent, c.a, how))
            assert c.a.process.returncode == (-9 if how == "kill" else -15), c.describe()  # uvicorn re-raises SIGTERM
            assert len(sent.acknowledged) == SENDS, f"B refused sends: {sent.failed}"
            await check_delivery(c, followers, sent, start_cursor)
            for follower in followers[:3]:
                # a kill sends no close frame (1006); a graceful stop says "going away" (1001, or
                # 1012 from uvicorn, which closes every socket before the app's shutdown runs)
                going_away = (CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART)
                check_moved_mid_stream(c, follower, (ABNORMAL,) if how == "kill" else going_away)
                got = len(follower.message_ids)
                assert got == len({m["id"] for m in sent.acknowledged.values() if visible_to(c, follower.user, m)})
            assert followers[3].connected_to == [c.b.base_url]
        assert time.monotonic() - started < 60


async def test_sigkill_of_the_process_taking_the_sends(bus_kind: str, tmp_path: Path) -> None:
    """Sends go through A, which also holds sockets, and A is killed mid-stream.

    Acknowledged sends must all be delivered; a send cut off by the kill may or may not have
    committed, and if it did, it is delivered too. The survivor's own socket gets them after
    the next write (a notice lost with its process costs latency, not data).
    """
    async with cluster(bus_kind, tmp_path) as c:
        start_cursor = (await c.http_b.get("/v1/sync", headers=auth(c.admin))).json()["next_cursor"]
        followers = followers_for(c)
        sent = Sent()
        async with following(*followers):
            await asyncio.gather(stream(c, c.http_a, sent, stop_on_failure=True), kill_when(sent, c.a))
            assert c.a.process.returncode == -9, c.describe()
            assert KILL_AFTER <= len(sent.acknowledged) < SENDS, "the kill did not land mid-stream"
            assert sent.failed, "no send was cut off by the kill"
            # one more write through the survivor: whatever notice died with A, B's readers catch up
            await send(c.http_b, c.admin, c.broadcast_id, "after the kill")
            await check_delivery(c, followers, sent, start_cursor)
            for follower in followers[:3]:
                check_moved_mid_stream(c, follower)
