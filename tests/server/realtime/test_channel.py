"""The realtime channel end to end: real `sitecomms serve` processes, real WebSockets on 127.0.0.1.

One server per module (SQLite) serves most tests; the first test also runs on the real
PostgreSQL. Tests that need other settings get their own server: `lively` (fast heartbeats,
short idle timeout) for liveness and token expiry, `tight` (a 20-frame queue, a replay limit
of 5) for slow consumers and clients too far behind.

Organisations and users are made straight through the services on the server's database (as
the CLI would); everything the tests observe goes through HTTP and the socket.

Live frames are not a log of every intermediate state: when the org's reader reads several
changes at once, a row changed twice shows once, at its newer position (as in pull sync).
Messages never change, so every message arrives exactly once; for the other rows the tests
require that every frame shows a real state of the row, in position order, and that the
newest state arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import Role
from sitecomms.server.app import build_accounts, build_signin
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store.database import Database, open_database
from tests.phoenix_client import Phx, phx
from tests.realtime_client import Frame, Http, RealtimeClient, StalledClient, is_change
from tests.servers import BACKENDS, Served, aserving, base_env, fresh_database
from tests.support import JWT_SECRET, Member, Orgs, World, fast_settings

LIVE_WITHIN = 10.0  # seconds for a frame that is due now (generous: shared CI machines)


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Site:
    """A running server, the HTTP helper, and services on its database for making orgs."""

    served: Served
    database_url: str
    db: Database
    orgs: Orgs
    http: Http

    @property
    def base_url(self) -> str:
        return self.served.base_url

    async def connect(self, member: Member | None, cursor: str | None = None, **options: Any) -> RealtimeClient:
        token = options.pop("token", member.token if member is not None else None)
        label = options.pop("label", member.display_name if member is not None else "anonymous")
        return await RealtimeClient.connect(self.base_url, token, cursor, label=label, **options)

    async def world(self, *, admins: int, medics: int) -> World:
        """A fresh organisation with members, made through the services (bounded)."""
        async with asyncio.timeout(60):
            return await self.orgs.make(admins=admins, medics=medics)

    async def live(self, member: Member, cursor: str | None = None, **options: Any) -> RealtimeClient:
        """Connected and past the replay (which must be empty: no cursor means the head)."""
        client = await self.connect(member, cursor, **options)
        replay = await client.until_live(LIVE_WITHIN)
        assert cursor is not None or replay == [], replay
        return client


@asynccontextmanager
async def running_site(database_url: str, log_path: Path, **settings: str) -> AsyncIterator[Site]:
    """A server with these settings; at the end, its log must show a clean run and a clean stop."""
    env = base_env(database_url, **{f"SITECOMMS_{name.upper()}": value for name, value in settings.items()})
    async with aserving(env, log_path) as served:
        db = open_database(database_url, pool_size=2)
        http = Http(served.base_url)
        try:
            accounts = build_accounts(fast_settings(database_url), db, NoPublisher())
            signin = build_signin(fast_settings(database_url), db, NoPublisher())
            yield Site(served, database_url, db, Orgs(accounts, signin, http.client), http)
        finally:
            await http.aclose()
            await asyncio.wait_for(db.close(), 30)
    log = served.log()
    for trouble in ("Traceback", "ERROR", "Exception in ASGI application"):
        assert trouble not in log, f"the server logged {trouble!r}:\n{log[-5000:]}"
    assert "Application shutdown complete" in log, served.describe()


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("realtime")
    async with running_site(
        f"sqlite:///{directory / 'sitecomms.db'}", directory / "serve.log", ws_hello_timeout_seconds="1"
    ) as running:
        yield running


@asynccontextmanager
async def site_on(backend: str, tmp_path_factory: pytest.TempPathFactory, sqlite_site: Site) -> AsyncIterator[Site]:
    """The module's SQLite site, or a new server on a fresh PostgreSQL database (default settings)."""
    if backend == "sqlite":
        yield sqlite_site
        return
    directory = tmp_path_factory.mktemp("site-pg")
    async with fresh_database(backend, directory) as url, running_site(url, directory / "serve.log") as running:
        yield running


@pytest.fixture(scope="module", params=BACKENDS)
async def any_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, site: Site
) -> AsyncIterator[Site]:
    async with site_on(request.param, tmp_path_factory, site) as chosen:
        yield chosen


LIVELY = {"ws_heartbeat_seconds": 0.5, "ws_idle_timeout_seconds": 2.0}


@pytest.fixture(scope="module")
async def lively(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("realtime-lively")
    settings = {name: str(value) for name, value in LIVELY.items()}
    async with running_site(f"sqlite:///{directory / 'sitecomms.db'}", directory / "serve.log", **settings) as running:
        yield running


TIGHT_QUEUE = 20
TIGHT_REPLAY = 5


@pytest.fixture(scope="module")
async def tight(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("realtime-tight")
    async with running_site(
        f"sqlite:///{directory / 'sitecomms.db'}",
        directory / "serve.log",
        ws_queue_frames=str(TIGHT_QUEUE),
        ws_replay_limit=str(TIGHT_REPLAY),
    ) as running:
        yield running


# --- helpers ---------------------------------------------------------------------------------


def kinds(frames: Iterable[Frame]) -> list[tuple[str, int]]:
    return [(f["type"], f.get("position", -1)) for f in frames]


async def expect_changes(
    expected: dict[RealtimeClient, int], quiet: Iterable[RealtimeClient] = ()
) -> dict[RealtimeClient, list[Frame]]:
    """Each socket in `expected` gets exactly that many change frames, and `quiet` ones none.

    The org's reader offers a change to every socket in one pass, so once a socket has it, the
    others have it queued too: a ping's pong, queued behind, proves nothing else was offered.
    """
    got = dict(
        zip(expected, await asyncio.gather(*(c.changes(n, LIVE_WITHIN) for c, n in expected.items())), strict=True)
    )
    for client in [*expected, *quiet]:
        extra = [f for f in await client.pong(LIVE_WITHIN) if f["type"] != "pong"]
        assert extra == [], f"{client.label} got more than expected: {kinds(extra)}"
    return got


def short_token(member: Member, seconds: float, *, secret: str = JWT_SECRET) -> tuple[str, int]:
    """An access token of `member`'s session that expires `seconds` from now (the server's minimum
    TTL is 60 s)."""
    now = time.time()
    expires = math.ceil(now + seconds)
    session = jwt.decode(member.token, options={"verify_signature": False})["sid"]
    kid = jwt.get_unverified_header(member.token)["kid"]
    claims = {
        "sub": member.id,
        "org_id": member.org_id,
        "role": member.role.value,
        "sid": session,
        "iat": int(now),
        "exp": expires,
    }
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid}), expires


async def close_all(clients: Iterable[RealtimeClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def send_many(
    http: Http, sender: Member, conversation_id: str, count: int, *, tag: str, concurrency: int = 4, size: int = 0
) -> dict[str, Any]:
    """`count` messages from `sender`, `concurrency` at a time; returns them by id."""
    sent: dict[str, Any] = {}
    padding = "x" * size

    async def worker(first: int) -> None:
        for n in range(first, count, concurrency):
            message = await http.send(sender.token, conversation_id, f"{tag} {n}{padding}")
            sent[message["id"]] = message

    async with asyncio.timeout(30 + count * 0.1):
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    assert len(sent) == count
    return sent


# --- delivery: messages, read receipts, renames ---------------------------------------------


async def test_messages_read_receipts_and_renames_reach_every_socket_that_may_see_them(any_site: Site) -> None:
    site = any_site
    world = await site.world(admins=2, medics=2)
    admin, colleague = world.admins
    medic, other_medic = world.medics
    assert medic.conversation_id is not None
    http = site.http

    desk = await site.live(admin, label="admin")
    phone = await site.live(admin, label="admin (other device)")
    team = await site.live(colleague, label="second admin")
    field = await site.live(medic, label="medic")
    bystander = await site.live(other_medic, label="other medic")
    sockets = [desk, phone, team, field, bystander]
    admins = [desk, phone, team]
    try:
        assert desk.welcome is not None and field.welcome is not None
        assert (desk.welcome["user_id"], desk.welcome["org_id"], desk.welcome["role"]) == (
            admin.id,
            world.org_id,
            "admin",
        )
        assert (field.welcome["user_id"], field.welcome["role"]) == (medic.id, "medic")
        assert desk.live is not None and desk.live["cursor"] == desk.welcome["cursor"]

        # 1. The medic writes: every admin socket and the medic's own socket, not the other medic.
        key = f"k-{uuid.uuid4().hex}"
        sent = await http.send(medic.token, medic.conversation_id, "Need water at gate 4", key)
        got = await expect_changes({c: 2 for c in [*admins, field]}, quiet=[bystander])
        for client, frames in got.items():
            message, conversation = frames
            assert kinds(frames) == [
                ("message.created", sent["position"]),
                ("conversation.updated", sent["position"] + 1),
            ]
            data = message["data"]
            assert message["cursor"] == str(Cursor(sent["position"], world.org_id))
            assert (data["id"], data["content"], data["idempotency_key"], data["sender_id"]) == (
                sent["id"],
                "Need water at gate 4",
                key,
                medic.id,
            )
            assert data["sender_name"] == medic.display_name and data["sender_role"] == "medic"
            assert data["status"] == "sent"
            view = conversation["data"]
            assert view["id"] == medic.conversation_id
            assert view["last_message_preview"] == "Need water at gate 4"
            assert view["name"] == ("Admin" if client is field else medic.display_name)
            assert view["unread_count"] is None and view["last_read_position"] is None

        # 2. An admin reads it: the medic sees the receipt, the admin's other device too.
        receipt = await http.mark_read(admin.token, medic.conversation_id)
        assert receipt["last_read_position"] == sent["position"]
        got = await expect_changes({c: 1 for c in [*admins, field]}, quiet=[bystander])
        for frames in got.values():
            assert kinds(frames) == [("read_status.updated", receipt["position"])]
            assert frames[0]["data"] == receipt

        # 3. The other way: an admin writes to the medic; the medic sees "Admin".
        reply = await http.send(admin.token, medic.conversation_id, "On its way")
        got = await expect_changes({c: 2 for c in [*admins, field]}, quiet=[bystander])
        for client, frames in got.items():
            assert kinds(frames) == [
                ("message.created", reply["position"]),
                ("conversation.updated", reply["position"] + 1),
            ]
            data = frames[0]["data"]
            assert data["id"] == reply["id"] and data["idempotency_key"] == reply["idempotency_key"]
            assert data["sender_name"] == ("Admin" if client is field else admin.display_name)
            assert data["sender_role"] == "admin"
            assert frames[1]["data"]["last_message_preview"] == "On its way"
        medic_receipt = await http.mark_read(medic.token, medic.conversation_id)
        got = await expect_changes({c: 1 for c in [*admins, field]}, quiet=[bystander])
        for frames in got.values():
            assert frames[0]["data"] == medic_receipt and medic_receipt["user_id"] == medic.id

        # 4. Renames: a medic's new name reaches the admins (and the medic), never another medic;
        # an admin's new name reaches admins only (a medic sees admins as "Admin").
        renamed = await http.rename(admin.token, medic.id, f"Renamed {medic.display_name}")
        got = await expect_changes({c: 2 for c in [*admins, field]}, quiet=[bystander])
        for client, frames in got.items():
            assert kinds(frames) == [
                ("user.updated", renamed["position"]),
                ("conversation.updated", renamed["position"] + 1),
            ]
            assert frames[0]["data"]["display_name"] == renamed["display_name"]
            assert frames[1]["data"]["name"] == ("Admin" if client is field else renamed["display_name"])
        self_renamed = await http.rename(colleague.token, colleague.id, f"Renamed {colleague.display_name}")
        got = await expect_changes({c: 1 for c in admins}, quiet=[field, bystander])
        for frames in got.values():
            assert kinds(frames) == [("user.updated", self_renamed["position"])]
            assert frames[0]["data"]["display_name"] == self_renamed["display_name"]

        # 5. A broadcast reaches everyone; a medic reading it is seen by admins and themself only.
        broadcast = await http.send(colleague.token, world.broadcast_id, "Shift change at 18:00")
        got = await expect_changes({c: 2 for c in sockets})
        for client, frames in got.items():
            assert kinds(frames) == [
                ("message.created", broadcast["position"]),
                ("conversation.updated", broadcast["position"] + 1),
            ]
            medic_side = client in (field, bystander)
            assert frames[0]["data"]["sender_name"] == ("Admin" if medic_side else self_renamed["display_name"])
            assert frames[1]["data"]["name"] == "Broadcast"
        seen = await http.mark_read(other_medic.token, world.broadcast_id)
        got = await expect_changes({c: 1 for c in [*admins, bystander]}, quiet=[field])
        for frames in got.values():
            assert frames[0]["data"] == seen

        # 6. A new medic: admins learn of them and of their direct conversation; medics do not.
        body = {
            "email": f"{uuid.uuid4().hex[:10]}@medic.example",
            "display_name": f"Newcomer {uuid.uuid4().hex[:6]}",
            "role": "medic",
            "password": "a-long-password",
        }
        response = await http.client.post("/v1/users", json=body, headers=admin.headers)
        assert response.status_code == 201, response.text
        newcomer = response.json()
        got = await expect_changes({c: 2 for c in admins}, quiet=[field, bystander])
        for frames in got.values():
            assert kinds(frames) == [
                ("user.updated", newcomer["position"]),
                ("conversation.updated", newcomer["position"] + 1),
            ]
            assert frames[0]["data"] == newcomer
            direct = frames[1]["data"]
            assert (direct["type"], direct["medic_id"], direct["name"]) == (
                "direct",
                newcomer["id"],
                body["display_name"],
            )
            assert direct["last_message_preview"] is None

        # Nothing of this org's medic conversation ever reached the other medic.
        secrets = {medic.id, str(medic.conversation_id), medic.display_name, "Need water", body["display_name"]}
        for frame in bystander.log:
            text = str(frame)
            assert not [s for s in secrets if s in text], frame
    finally:
        await close_all(sockets)


# --- resume from a cursor --------------------------------------------------------------------


def message_ids(frames: Iterable[Frame]) -> list[str]:
    return [f["data"]["id"] for f in frames if f["type"] == "message.created"]


def assert_increasing(frames: list[Frame], after: int = 0) -> None:
    positions = [after, *(f["position"] for f in frames)]
    assert all(a < b for a, b in itertools.pairwise(positions)), f"positions not increasing: {positions}"


async def test_a_reconnecting_client_gets_what_it_missed_exactly_once_then_live(site: Site) -> None:
    world = await site.world(admins=1, medics=2)
    admin, medic, colleague = world.admins[0], *world.medics
    assert medic.conversation_id is not None
    client = await site.live(admin, label="admin")
    try:
        first = await site.http.send(medic.token, medic.conversation_id, "before the gap")
        frames = await client.changes(2, LIVE_WITHIN)
        assert message_ids(frames) == [first["id"]]
        cursor = frames[-1]["cursor"]
    finally:
        await client.close()

    missed = await send_many(site.http, medic, medic.conversation_id, 500, tag="missed")
    in_order = sorted(missed, key=lambda m: missed[m]["position"])
    head = missed[in_order[-1]]["position"] + 1  # each send also moved the conversation

    client = await site.connect(admin, cursor, label="admin, back")
    try:
        replay = await client.until_live(30)
        assert client.welcome is not None and client.welcome["cursor"] == cursor
        assert_increasing(replay, after=frames[-1]["position"])
        assert message_ids(replay) == in_order  # all 500, once each, in order
        for frame in replay:
            if frame["type"] == "message.created":
                assert frame["data"] == {**missed[frame["data"]["id"]], "status": "sent"}
        conversations = [f for f in replay if f["type"] == "conversation.updated"]
        assert [c["position"] for c in conversations] == [head]  # compacted: its current state, once
        view = conversations[0]["data"]
        assert view["last_message_preview"] == missed[in_order[-1]]["content"]
        assert (view["unread_count"], view["last_read_position"]) == (501, 0)  # the replay fills these in
        assert Counter(f["type"] for f in replay) == {"message.created": 500, "conversation.updated": 1}
        assert client.live is not None and client.live["cursor"] == str(Cursor(head, world.org_id))

        # Then live, from where the replay ended: nothing twice, nothing skipped.
        after = await send_many(site.http, medic, medic.conversation_id, 3, tag="after", concurrency=1)
        newest = max(m["position"] for m in after.values()) + 1  # its conversation's update
        live = await client.frames_until(lambda f: f.get("position") == newest, LIVE_WITHIN)
        assert all(is_change(f) for f in live), kinds(live)
        assert_increasing(live, after=head)
        assert message_ids(live) == sorted(after, key=lambda m: after[m]["position"])
        assert [f for f in await client.pong(LIVE_WITHIN) if f["type"] != "pong"] == []
        cursor = live[-1]["cursor"]
    finally:
        await client.close()

    # Again, with two medics writing all the while the client comes back and replays.
    missed = await send_many(site.http, medic, medic.conversation_id, 300, tag="missed again")
    writers = [
        asyncio.create_task(send_many(site.http, member, str(member.conversation_id), 100, tag="meanwhile"))
        for member in (medic, colleague)
    ]
    client = await site.connect(admin, cursor, label="admin, back during a burst")
    try:
        replay = await client.until_live(30)
        meanwhile: dict[str, Any] = {}
        for batch in await asyncio.wait_for(asyncio.gather(*writers), 60):
            meanwhile.update(batch)
        everything = {**missed, **meanwhile}
        in_order = sorted(everything, key=lambda m: everything[m]["position"])
        last = everything[in_order[-1]]["position"] + 1
        live = await client.frames_until(lambda f: f.get("position") == last, 30)
        assert all(is_change(f) for f in live), kinds(f for f in live if not is_change(f))
        assert_increasing(replay + live, after=Cursor.parse(cursor, world.org_id).position)
        assert message_ids(replay)[:300] == sorted(missed, key=lambda m: missed[m]["position"])
        assert message_ids(replay + live) == in_order, "every message once, in order, across the hand-off"
        assert client.live is not None
        boundary = Cursor.parse(client.live["cursor"], world.org_id).position
        assert all(f["position"] <= boundary for f in replay) and all(f["position"] > boundary for f in live)
        assert [f for f in await client.pong(LIVE_WITHIN) if f["type"] != "pong"] == []
    finally:
        for writer in writers:
            writer.cancel()
        await client.close()


async def test_a_medics_replay_holds_only_what_the_medic_may_see(site: Site) -> None:
    world = await site.world(admins=1, medics=2)
    admin, medic, other = world.admins[0], *world.medics
    cursor = await site.http.head_cursor(medic.token)
    # While the medic is away: another medic's conversation, a broadcast, names, read marks.
    await site.http.send(other.token, str(other.conversation_id), "private to the other medic")
    await site.http.send(admin.token, str(other.conversation_id), "private reply")
    broadcast = await site.http.send(admin.token, world.broadcast_id, "for everyone")
    await site.http.rename(admin.token, other.id, f"Renamed {other.display_name}")
    await site.http.rename(admin.token, admin.id, f"Renamed {admin.display_name}")
    await site.http.mark_read(other.token, world.broadcast_id)
    await site.http.mark_read(admin.token, world.broadcast_id)
    head = Cursor.parse(await site.http.head_cursor(admin.token), world.org_id).position

    client = await site.connect(medic, cursor, label="medic, back")
    try:
        replay = await client.until_live(LIVE_WITHIN)
        # In a broadcast a medic sees no one's read status but their own: not the admin's, not the other medic's.
        assert kinds(replay) == [
            ("message.created", broadcast["position"]),
            ("conversation.updated", broadcast["position"] + 1),
        ], replay
        message, conversation = (f["data"] for f in replay)
        assert (message["sender_name"], message["status"]) == ("Admin", "sent")
        assert (conversation["name"], conversation["unread_count"], conversation["last_read_position"]) == (
            "Broadcast",
            1,
            0,
        )
        assert client.live is not None and client.live["cursor"] == str(Cursor(head, world.org_id))
        text = orjson.dumps(replay).decode()
        for secret in (other.id, str(other.conversation_id), other.display_name, "private", admin.display_name):
            assert secret not in text
    finally:
        await client.close()


async def test_reconnecting_again_and_again_while_messages_keep_coming_loses_and_repeats_nothing(site: Site) -> None:
    """The hand-off between replay and live, stressed: a sender never pauses while a client drops
    its socket at random points (mid-replay, right after `live`, mid-live) and resumes each time
    from the last cursor it processed. Every message must reach it exactly once, in order."""
    world = await site.world(admins=1, medics=2)
    admin = world.admins[0]
    rng = random.Random(20260521)
    cursor = await site.http.head_cursor(admin.token)
    position = Cursor.parse(cursor, world.org_id).position
    received: list[str] = []
    sent: dict[str, Any] = {}

    async def keep_sending() -> None:
        batches = [
            send_many(site.http, medic, str(medic.conversation_id), 200, tag=f"stream {medic.id}", concurrency=2)
            for medic in world.medics
        ]
        for batch in await asyncio.gather(*batches):
            sent.update(batch)

    sender = asyncio.create_task(keep_sending())
    cycles = 0
    try:
        while cycles < 60:
            cycles += 1
            client = await site.connect(admin, cursor, label=f"admin, cycle {cycles}")
            try:
                welcome = await client.next_frame(LIVE_WITHIN)
                assert welcome["type"] == "welcome", welcome
                assert welcome["cursor"] == cursor, f"hello {cursor}, welcome {welcome}, then {kinds(client.log[1:12])}"
                budget = rng.choice([1, 5, 20, 60, 150, 400])
                for _ in range(budget):
                    try:
                        frame = await client.next_frame(0.5 if sender.done() else LIVE_WITHIN)
                    except TimeoutError:
                        break  # caught up with a sender that has finished
                    if frame["type"] == "live":
                        cursor = frame["cursor"]
                        continue
                    assert is_change(frame), frame
                    assert frame["position"] > position, f"cycle {cycles}: {frame['position']} after {position}"
                    position, cursor = frame["position"], frame["cursor"]
                    if frame["type"] == "message.created":
                        received.append(frame["data"]["id"])
            finally:
                await client.close()
            if sender.done() and len(received) >= len(sent):
                break
        await asyncio.wait_for(sender, 60)
    finally:
        if not sender.done():
            sender.cancel()
    assert cycles >= 3, "the socket should have been dropped and resumed several times"
    assert len(received) == len(set(received)), f"{len(received) - len(set(received))} messages arrived twice"
    assert set(received) == set(sent), f"missing {len(set(sent) - set(received))}"
    assert received == sorted(sent, key=lambda m: sent[m]["position"])


# --- isolation: every socket gets what it may see, and nothing else --------------------------


@dataclass(frozen=True)
class MedicSends:
    org: int
    medic: int


@dataclass(frozen=True)
class AdminSends:
    org: int
    admin: int
    medic: int | None  # None: the broadcast


@dataclass(frozen=True)
class MarksRead:
    org: int
    member: int  # index into World.members (admins first)
    medic: int | None  # None: the broadcast; a medic reader always reads their own direct otherwise


@dataclass(frozen=True)
class Renames:
    org: int
    actor: int  # index into World.members; a medic always renames themself
    target: int


Action = MedicSends | AdminSends | MarksRead | Renames


@dataclass(frozen=True)
class Plan:
    shapes: tuple[tuple[int, int], ...]  # (admins, medics) per org
    actions: tuple[tuple[Action, ...], ...]  # per org, in order (orgs run concurrently)
    second_device: tuple[int, ...]  # per org: the member (index into World.members) with two sockets


def _org_actions(org: int, admins: int, medics: int) -> st.SearchStrategy[Action]:
    members = admins + medics
    medic = st.integers(0, medics - 1)
    return st.one_of(
        st.builds(MedicSends, st.just(org), medic),
        st.builds(AdminSends, st.just(org), st.integers(0, admins - 1), st.none() | medic),
        st.builds(MarksRead, st.just(org), st.integers(0, members - 1), st.none() | medic),
        st.builds(Renames, st.just(org), st.integers(0, members - 1), st.integers(0, members - 1)),
    )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    shapes = draw(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 3)), min_size=2, max_size=3))
    actions = tuple(
        tuple(draw(st.lists(_org_actions(org, admins, medics), min_size=2, max_size=8)))
        for org, (admins, medics) in enumerate(shapes)
    )
    devices = tuple(draw(st.integers(0, admins + medics - 1)) for admins, medics in shapes)
    return Plan(tuple(shapes), actions, devices)


@dataclass(frozen=True)
class Event:
    """A change the test made, at its stream position, and what its frame must say."""

    org_id: str
    position: int
    type: str
    key: str  # message id, conversation id, "conversation/user" for a read status, user id
    conversation_id: str | None = None
    user_id: str | None = None  # the reader of a read status; the renamed user
    content: str | None = None  # a message's content; a conversation's preview
    sender_id: str | None = None
    number: int | None = None  # a read status's last_read_position
    name: str | None = None  # a user's new name


def frame_key(frame: Frame) -> str:
    data = frame["data"]
    if frame["type"] == "read_status.updated":
        return f"{data['conversation_id']}/{data['user_id']}"
    return str(data["id"])


class Model:
    """What happened, and who may see it: design §3 restated, independently of the server's policy."""

    def __init__(self, worlds: list[World]) -> None:
        self.worlds = worlds
        self.users: dict[str, Member] = {m.id: m for w in worlds for m in w.members}
        self.conversation_org: dict[str, str] = {}
        self.conversation_medic: dict[str, str | None] = {}
        for world in worlds:
            self.conversation_org[world.broadcast_id] = world.org_id
            self.conversation_medic[world.broadcast_id] = None
            for medic in world.medics:
                self.conversation_org[str(medic.conversation_id)] = world.org_id
                self.conversation_medic[str(medic.conversation_id)] = medic.id
        self.names: dict[str, list[tuple[int, str]]] = {u.id: [(0, u.display_name)] for u in self.users.values()}
        self.previews: dict[str, str | None] = dict.fromkeys(self.conversation_org)
        self.read_positions: dict[str, int] = {}
        self.events: list[Event] = []

    # the rules

    def sees_conversation(self, viewer: Member, conversation_id: str) -> bool:
        if self.conversation_org[conversation_id] != viewer.org_id:
            return False
        medic = self.conversation_medic[conversation_id]
        return viewer.role is Role.ADMIN or medic is None or medic == viewer.id

    def sees(self, viewer: Member, event: Event) -> bool:
        if event.org_id != viewer.org_id:
            return False
        if event.type == "user.updated":
            return viewer.role is Role.ADMIN or event.user_id == viewer.id
        assert event.conversation_id is not None
        if not self.sees_conversation(viewer, event.conversation_id):
            return False
        if event.type == "read_status.updated":
            is_direct = self.conversation_medic[event.conversation_id] is not None
            return viewer.role is Role.ADMIN or is_direct or event.user_id == viewer.id
        return True

    # names as of a position

    def name_at(self, user_id: str, position: int) -> str:
        return [name for since, name in self.names[user_id] if since <= position][-1]

    def names_from(self, user_id: str, position: int) -> set[str]:
        return {self.name_at(user_id, position)} | {name for since, name in self.names[user_id] if since >= position}

    def every_name(self, user_id: str) -> set[str]:
        return {name for _, name in self.names[user_id]}


async def _act(site: Site, model: Model, world: World, action: Action, serial: int) -> None:
    http, org = site.http, world.org_id
    if isinstance(action, MedicSends | AdminSends):
        if isinstance(action, MedicSends):
            sender = world.medics[action.medic]
            conversation_id = str(sender.conversation_id)
        else:
            sender = world.admins[action.admin]
            target = world.medics[action.medic].conversation_id if action.medic is not None else world.broadcast_id
            conversation_id = str(target)
        content = f"msg-{serial}-{uuid.uuid4().hex[:8]}"
        sent = await http.send(sender.token, conversation_id, content)
        model.previews[conversation_id] = content
        model.events += [
            Event(
                org,
                sent["position"],
                "message.created",
                sent["id"],
                conversation_id,
                content=content,
                sender_id=sender.id,
            ),
            Event(org, sent["position"] + 1, "conversation.updated", conversation_id, conversation_id, content=content),
        ]
    elif isinstance(action, MarksRead):
        reader = world.members[action.member]
        if reader.role is Role.MEDIC and action.medic is not None:
            conversation_id = str(reader.conversation_id)
        elif action.medic is None:
            conversation_id = world.broadcast_id
        else:
            conversation_id = str(world.medics[action.medic].conversation_id)
        status = await http.mark_read(reader.token, conversation_id)
        key = f"{conversation_id}/{reader.id}"
        if status["position"] > model.read_positions.get(key, 0):  # it moved: a new change
            model.read_positions[key] = status["position"]
            model.events.append(
                Event(
                    org,
                    status["position"],
                    "read_status.updated",
                    key,
                    conversation_id,
                    user_id=reader.id,
                    number=status["last_read_position"],
                )
            )
    else:
        actor = world.members[action.actor]
        renamed = actor if actor.role is Role.MEDIC else world.members[action.target]
        name = f"{renamed.role.value} renamed {serial}-{uuid.uuid4().hex[:8]}"
        user = await http.rename(actor.token, renamed.id, name)
        assert user["display_name"] == name
        model.names[renamed.id].append((user["position"], name))
        model.events.append(Event(org, user["position"], "user.updated", renamed.id, user_id=renamed.id, name=name))
        if renamed.role is Role.MEDIC:  # admins see the direct conversation under the medic's name
            direct = str(renamed.conversation_id)
            model.events.append(
                Event(
                    org,
                    user["position"] + 1,
                    "conversation.updated",
                    direct,
                    direct,
                    content=model.previews[direct],
                )
            )


def _check_socket(
    model: Model, viewer: Member, frames: list[Frame], label: str, types: frozenset[str] | None = None
) -> None:
    """`types`: only changes of these types are carried by this socket (the Supabase endpoint has no users)."""
    expected = [e for e in model.events if model.sees(viewer, e) and (types is None or e.type in types)]
    by_position = {(e.type, e.key, e.position): e for e in expected}
    assert_increasing(frames)
    for frame in frames:
        assert is_change(frame), f"{label}: {frame}"
        event = by_position.get((frame["type"], frame_key(frame), frame["position"]))
        assert event is not None, f"{label} ({viewer.role.value}) got a change it may not see: {frame}"
        assert frame["cursor"] == str(Cursor(frame["position"], viewer.org_id))
        data = frame["data"]
        assert data["position"] == frame["position"]
        if frame["type"] == "message.created":
            assert (data["conversation_id"], data["content"], data["sender_id"]) == (
                event.conversation_id,
                event.content,
                event.sender_id,
            )
            assert event.sender_id is not None
            sender = model.users[event.sender_id]
            if viewer.role is Role.MEDIC and sender.role is Role.ADMIN:
                assert data["sender_name"] == "Admin", f"{label}: {data}"
            else:
                assert data["sender_name"] in model.names_from(sender.id, event.position), f"{label}: {data}"
            assert data["status"] == "sent" and data["idempotency_key"]
        elif frame["type"] == "conversation.updated":
            assert data["org_id"] == viewer.org_id
            assert data["last_message_preview"] == event.content
            assert data["unread_count"] is None and data["last_read_position"] is None
            medic = model.conversation_medic[event.key]
            if medic is None:
                assert data["name"] == "Broadcast"
            elif viewer.role is Role.MEDIC:
                assert data["name"] == "Admin"
            else:
                assert data["name"] == model.name_at(medic, event.position), f"{label}: {data}"
        elif frame["type"] == "read_status.updated":
            assert data["last_read_position"] == event.number
        else:
            assert (data["org_id"], data["display_name"]) == (viewer.org_id, event.name)

    # Every message exactly once; of every other row, at least its newest state.
    got_messages = [frame_key(f) for f in frames if f["type"] == "message.created"]
    assert sorted(got_messages) == sorted(e.key for e in expected if e.type == "message.created"), label
    newest: dict[tuple[str, str], int] = {}
    for e in expected:
        newest[(e.type, e.key)] = max(newest.get((e.type, e.key), 0), e.position)
    got = {(f["type"], frame_key(f), f["position"]) for f in frames}
    missing = [(kind, key, at) for (kind, key), at in newest.items() if (kind, key, at) not in got]
    assert not missing, f"{label} never got the newest state of {missing}"

    # And nothing, anywhere in a frame, that names what the viewer may not learn.
    secrets: set[str] = set()
    for world in model.worlds:
        if world.org_id != viewer.org_id:
            secrets |= {world.org_id, world.broadcast_id, world.name}
            for member in world.members:
                secrets |= {member.id, member.email, str(member.conversation_id)} | model.every_name(member.id)
        elif viewer.role is Role.MEDIC:
            for member in world.members:  # admins' ids are fine (sender_id); not their names
                if member.id != viewer.id:
                    secrets |= {member.email} | model.every_name(member.id)
                    if member.role is Role.MEDIC:
                        secrets |= {member.id, str(member.conversation_id)}
    secrets.discard("None")
    for frame in frames:
        text = orjson.dumps(frame).decode()
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"{label} ({viewer.role.value}) was sent {leaked}: {text}"


_TABLES = {"messages": "message.created", "conversations": "conversation.updated"}
_TABLES["conversation_read_status"] = "read_status.updated"
SUPABASE_TYPES = frozenset(_TABLES.values())
EVERY_TABLE = [{"event": "*", "schema": "public", "table": table} for table in _TABLES]


def as_change_frame(payload: Any, org_id: str) -> Frame:
    """A Supabase `postgres_changes` payload as the SiteComms change frame it stands for."""
    data = payload["data"]
    record = dict(data["record"])
    assert [column["name"] for column in data["columns"]] == list(record), data
    if data["table"] == "conversations":
        record["name"] = record.pop("participant_name")
        record["unread_count"] = record["last_read_position"] = None
    position = record["position"]
    return {
        "type": _TABLES[data["table"]],
        "position": position,
        "cursor": str(Cursor(position, org_id)),
        "data": record,
    }


async def _supabase_frames(client: Phx, org_id: str, end: int) -> list[Frame]:
    """The channel's changes up to the conversation change at `end` (the sentinel's preview)."""
    frames: list[Frame] = []
    while True:
        payload = (await client.until("postgres_changes"))[4]
        frames.append(as_change_frame(payload, org_id))
        if frames[-1]["type"] == "conversation.updated" and frames[-1]["position"] == end:
            return frames


async def _run_isolation_example(site: Site, plan: Plan) -> None:
    worlds = list(await asyncio.gather(*(site.world(admins=a, medics=m) for a, m in plan.shapes)))
    model = Model(worlds)
    viewers: list[tuple[Member, RealtimeClient]] = []
    supabase: list[tuple[Member, Phx]] = []  # the same members on the Supabase endpoint: the widest bindings
    sockets = contextlib.AsyncExitStack()

    async def join(member: Member, label: str) -> None:
        viewers.append((member, await site.live(member, label=label)))

    try:
        joins = [join(m, f"org {o} {m.role.value} {m.display_name}") for o, w in enumerate(worlds) for m in w.members]
        joins += [
            join(w.members[i], f"org {o} {w.members[i].display_name} (second device)")
            for o, (w, i) in enumerate(zip(worlds, plan.second_device, strict=True))
        ]

        async def join_supabase(member: Member, vsn: str) -> None:
            client = await sockets.enter_async_context(phx(site.base_url, vsn))
            _, frames = await client.join("realtime:isolation", EVERY_TABLE, member.token)
            assert frames[-1][4]["status"] == "ok", frames
            supabase.append((member, client))

        joins += [
            join_supabase(m, ("1.0.0", "2.0.0")[n % 2]) for n, m in enumerate(m for w in worlds for m in w.members)
        ]
        async with asyncio.timeout(60):
            await asyncio.gather(*joins)

        async def play(org: int) -> int:
            world = worlds[org]
            for serial, action in enumerate(plan.actions[org]):
                await _act(site, model, world, action, serial)
            # A last broadcast everyone in the org sees: once it is in, everything before it is.
            sentinel = await site.http.send(world.admins[0].token, world.broadcast_id, f"sentinel-{world.org_id}")
            model.previews[world.broadcast_id] = sentinel["content"]
            model.events += [
                Event(
                    world.org_id,
                    sentinel["position"],
                    "message.created",
                    sentinel["id"],
                    world.broadcast_id,
                    content=sentinel["content"],
                    sender_id=world.admins[0].id,
                ),
                Event(
                    world.org_id,
                    sentinel["position"] + 1,
                    "conversation.updated",
                    world.broadcast_id,
                    world.broadcast_id,
                    content=sentinel["content"],
                ),
            ]
            return int(sentinel["position"]) + 1

        async with asyncio.timeout(60):
            ends = dict(
                zip(
                    (w.org_id for w in worlds),
                    await asyncio.gather(*(play(o) for o in range(len(worlds)))),
                    strict=True,
                )
            )

        async def collect(member: Member, client: RealtimeClient) -> list[Frame]:
            end = ends[member.org_id]
            frames = await client.frames_until(
                lambda f: f["type"] == "conversation.updated" and f["position"] == end, LIVE_WITHIN
            )
            extra = [f for f in await client.pong(LIVE_WITHIN) if f["type"] != "pong"]
            return frames + extra

        received = await asyncio.gather(*(collect(member, client) for member, client in viewers))
        by_member: dict[str, list[list[Frame]]] = {}
        for (member, client), frames in zip(viewers, received, strict=True):
            _check_socket(model, member, frames, client.label)
            by_member.setdefault(member.id, []).append(frames)
        for member_id, devices in by_member.items():
            if len(devices) > 1:  # both fed by the same reader pass: the very same frames
                assert devices[0] == devices[1], f"the two sockets of {model.users[member_id].display_name} differ"
        async with asyncio.timeout(LIVE_WITHIN * 2):
            seen = await asyncio.gather(*(_supabase_frames(c, m.org_id, ends[m.org_id]) for m, c in supabase))
        for (member, _), frames in zip(supabase, seen, strict=True):
            _check_socket(model, member, frames, f"supabase {member.display_name}", SUPABASE_TYPES)
    finally:
        await close_all(client for _, client in viewers)
        await sockets.aclose()


# No shrink phase (each example starts a dozen sockets); a failure prints the whole Plan.
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(plan=plans())
async def test_every_socket_gets_exactly_what_its_user_may_see(site: Site, plan: Plan) -> None:
    async with asyncio.timeout(120):
        await _run_isolation_example(site, plan)


# --- bad input ---------------------------------------------------------------------------------


async def assert_still_serving(site: Site, world: World, watcher: RealtimeClient) -> None:
    """A socket opened before the trouble still gets live messages, and a new one can join."""
    medic = world.medics[0]
    fresh = await site.live(world.admins[0], label="fresh admin")
    try:
        sent = await site.http.send(medic.token, str(medic.conversation_id), f"still here {uuid.uuid4().hex[:6]}")
        for client in (watcher, fresh):
            frames = await client.changes(2, LIVE_WITHIN)
            assert message_ids(frames) == [sent["id"]], f"{client.label}: {kinds(frames)}"
    finally:
        await fresh.close()


async def test_bad_frames_are_answered_with_errors_and_the_socket_goes_on(site: Site) -> None:
    world = await site.world(admins=1, medics=1)
    client = await site.live(world.medics[0], label="medic")
    try:
        refused: list[tuple[str | bytes, str]] = [
            ("this is not json", "malformed_frame"),
            (b"\x00\xff\xfe binary garbage", "malformed_frame"),
            ("[1, 2, 3]", "malformed_frame"),
            ('"hello"', "malformed_frame"),
            ("42", "malformed_frame"),
            ("null", "malformed_frame"),
            ("{}", "malformed_frame"),
            ('{"type": 7}', "malformed_frame"),
            ('{"type": "subscribe", "conversation": "everything"}', "unknown_type"),
            ('{"type": "' + "x" * 500 + '"}', "unknown_type"),
            (orjson.dumps({"type": "hello", "token": world.medics[0].token, "cursor": None}), "already_authenticated"),
        ]
        for data, code in refused:
            await client.send(data)
            frame = await client.next_frame(LIVE_WITHIN)
            assert frame["type"] == "error" and frame["code"] == code, (data, frame)
            assert isinstance(frame["message"], str) and len(frame["message"]) < 200
        assert await client.pong(LIVE_WITHIN) == []
        # A frame of exactly 64 KiB is allowed.
        padding = 64 * 1024 - len(orjson.dumps({"type": "ping", "pad": ""}))
        await client.send(orjson.dumps({"type": "ping", "pad": "p" * padding}).decode())
        assert (await client.next_frame(LIVE_WITHIN))["type"] == "pong"
        await assert_still_serving(site, world, client)
    finally:
        await client.close()


async def test_a_frame_over_64_kib_closes_the_socket_with_1009(site: Site) -> None:
    world = await site.world(admins=1, medics=1)
    watcher = await site.live(world.admins[0], label="watcher")
    big = await site.live(world.medics[0], label="medic")
    before = await site.connect(world.medics[0], hello=False, label="oversized hello")
    try:
        padding = 64 * 1024 + 1 - len(orjson.dumps({"type": "ping", "pad": ""}))
        await big.send(orjson.dumps({"type": "ping", "pad": "p" * padding}).decode())
        assert await big.wait_closed(LIVE_WITHIN) == 1009
        await before.send(orjson.dumps({"type": "hello", "token": "t" * (64 * 1024 + 1), "cursor": None}))
        assert await before.wait_closed(LIVE_WITHIN) == 1009
        assert before.log == []
        await assert_still_serving(site, world, watcher)
    finally:
        await close_all([watcher, big, before])


async def test_sockets_without_a_valid_hello_are_closed(site: Site) -> None:
    world = await site.world(admins=1, medics=1)
    medic = world.medics[0]
    watcher = await site.live(world.admins[0], label="watcher")
    expired, _ = short_token(medic, -5)
    forged, _ = short_token(medic, 3600, secret="another-secret-another-secret-0123456789")
    cases: list[tuple[str, str | bytes | None, int]] = [
        ("ping first", '{"type": "ping"}', 4400),
        ("auth first", orjson.dumps({"type": "auth", "token": medic.token}).decode(), 4400),
        ("garbage first", "GET / HTTP/1.1", 4400),
        ("binary garbage first", b"\x89PNG\r\n", 4400),
        ("JSON array first", '["hello"]', 4400),
        ("no token", '{"type": "hello", "cursor": null}', 4401),
        ("token not a string", '{"type": "hello", "token": 12345}', 4401),
        ("garbage token", '{"type": "hello", "token": "not-a-jwt"}', 4401),
        ("expired token", orjson.dumps({"type": "hello", "token": expired}).decode(), 4401),
        ("token signed by someone else", orjson.dumps({"type": "hello", "token": forged}).decode(), 4401),
        ("silence (hello timeout 1 s)", None, 4401),
    ]
    started = time.monotonic()  # before any of them connects: the silent one's hello timer starts later
    clients = [await site.connect(None, hello=False, label=label) for label, _, _ in cases]
    try:
        for client, (_, first, _) in zip(clients, cases, strict=True):
            if first is not None:
                await client.send(first)
        codes = await asyncio.gather(*(c.wait_closed(LIVE_WITHIN) for c in clients))
        silent_for = time.monotonic() - started
        assert {c.label: code for c, code in zip(clients, codes, strict=True)} == {
            label: code for label, _, code in cases
        }
        for client in clients:
            assert client.log == [], f"{client.label} was sent {client.log}"  # nothing before the close
        assert silent_for >= 0.95, f"closed for silence after {silent_for:.2f} s; the hello timeout is 1 s"
        await assert_still_serving(site, world, watcher)
    finally:
        await close_all([watcher, *clients])


async def test_cursors_the_server_cannot_resume_from_get_a_resync(site: Site) -> None:
    world, elsewhere = await site.world(admins=1, medics=1), await site.world(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    watcher = await site.live(admin, label="watcher")
    head = Cursor.parse(await site.http.head_cursor(admin.token), world.org_id).position
    foreign = await site.http.head_cursor(elsewhere.admins[0].token)
    cases: list[tuple[str, Any, str]] = [
        ("another org's cursor", foreign, "invalid_cursor"),
        ("garbage cursor", "v1.garbage", "invalid_cursor"),
        ("unknown version", f"v9.{head}.{str(Cursor(head, world.org_id)).rsplit('.', 1)[1]}", "invalid_cursor"),
        ("cursor not a string", head, "invalid_cursor"),
        ("cursor ahead of the stream", str(Cursor(head + 1000, world.org_id)), "cursor_ahead"),
    ]
    clients = [await site.connect(medic, cursor, label=label) for label, cursor, _ in cases]
    try:
        for client, (_, _, reason) in zip(clients, cases, strict=True):
            assert await client.wait_closed(LIVE_WITHIN) == 4409, client.label
            assert [f["type"] for f in client.log] == ["resync"], f"{client.label}: {client.log}"
            assert client.log[0]["reason"] == reason and client.close_reason == reason, client.label
        await assert_still_serving(site, world, watcher)
    finally:
        await close_all([watcher, *clients])


# --- liveness and token expiry (heartbeat 0.5 s, idle timeout 2 s) ------------------------------


async def stays_open(client: RealtimeClient, seconds: float) -> None:
    """The socket is still open after `seconds` (waiting for a close that must not come)."""
    with pytest.raises(TimeoutError):
        await client.wait_closed(seconds)
    assert not client.closed


async def test_the_server_pings_and_drops_only_silent_sockets(lively: Site) -> None:
    idle = LIVELY["ws_idle_timeout_seconds"]
    world = await lively.world(admins=1, medics=2)
    started = time.monotonic()  # before the server last heard from any of them
    answering = await lively.live(world.admins[0], label="answers pings")
    pinging = await lively.live(world.medics[0], auto_pong=False, label="only pings the server")
    silent = await lively.live(world.medics[1], auto_pong=False, label="silent")
    try:
        assert answering.welcome is not None and answering.welcome["heartbeat_seconds"] == 0.5

        async def keep_pinging() -> None:
            while not pinging.closed and time.monotonic() - started < 2.5 * idle:
                await pinging.send({"type": "ping"})
                frames = await pinging.frames_until(lambda f: f["type"] == "pong", LIVE_WITHIN)
                assert {f["type"] for f in frames} <= {"ping", "pong"}, frames
                with contextlib.suppress(TimeoutError):  # paced by the server's own pings
                    await pinging.next_frame(0.5)

        async def silence() -> tuple[int | None, float]:
            code = await silent.wait_closed(idle + 3)
            return code, time.monotonic() - started

        (code, silent_for), *_ = await asyncio.gather(silence(), keep_pinging(), stays_open(answering, 2.5 * idle))
        assert code == 4408, silent.close_reason
        assert silent_for >= idle - 0.05, f"dropped after {silent_for:.2f} s, before the idle timeout"
        assert silent.pings >= 2, "the server pings a socket that says nothing"
        assert not pinging.closed, (pinging.close_code, pinging.close_reason, kinds(pinging.log))
        assert answering.pings >= 4 and not answering.closed
        assert await answering.pong(LIVE_WITHIN) == []
        await assert_still_serving(lively, world, answering)
    finally:
        await close_all([answering, pinging, silent])


async def test_an_expired_token_closes_the_socket_unless_refreshed(lively: Site) -> None:
    world = await lively.world(admins=1, medics=2)
    admin, medic, other = world.admins[0], *world.medics
    token, expires = short_token(medic, 3)
    lapsing = await lively.live(medic, token=token, label="lets its token lapse")
    refreshing = await lively.live(medic, token=token, label="refreshes")
    wrong = await lively.live(medic, token=token, label="refreshes with someone else's token")
    watcher = await lively.live(admin, label="watcher")
    try:
        assert lapsing.welcome is not None and lapsing.welcome["expires_at"] == expires

        later, later_expiry = short_token(medic, 120)
        await refreshing.send({"type": "auth", "token": later})
        answer = await refreshing.next_frame(LIVE_WITHIN)
        assert answer == {"type": "authenticated", "expires_at": later_expiry}

        stale, _ = short_token(medic, -10)
        refusals = [short_token(other, 120)[0], short_token(admin, 120)[0], "not-a-token", stale, 42]
        for refusal in refusals:
            await wrong.send({"type": "auth", "token": refusal})
            frame = await wrong.next_frame(LIVE_WITHIN)
            assert (frame["type"], frame["code"]) == ("error", "unauthenticated"), (refusal, frame)

        codes = await asyncio.gather(lapsing.wait_closed(expires - time.time() + 3), wrong.wait_closed(LIVE_WITHIN))
        closed_at = time.time()
        assert list(codes) == [4401, 4401], (lapsing.close_reason, wrong.close_reason)
        assert closed_at >= expires - 0.05, "closed before the token expired"
        await stays_open(refreshing, 1.0)  # well past the first token's expiry
        assert await refreshing.pong(LIVE_WITHIN) == []
        sent = await lively.http.send(admin.token, str(medic.conversation_id), "refreshed in time")
        for client in (refreshing, watcher):
            assert message_ids(await client.changes(2, LIVE_WITHIN)) == [sent["id"]]
        await assert_still_serving(lively, world, watcher)
    finally:
        await close_all([lapsing, refreshing, wrong, watcher])


# --- clients that fall behind (queue of 20 frames, replay limit of 5) ---------------------------


async def test_a_client_too_far_behind_is_told_to_resync(tight: Site) -> None:
    world = await tight.world(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    start = await tight.http.head_cursor(admin.token)
    first = await tight.http.send(medic.token, str(medic.conversation_id), "one")  # two positions
    await tight.http.send(medic.token, str(medic.conversation_id), "two")
    head = Cursor.parse(await tight.http.head_cursor(admin.token), world.org_id).position
    at_limit = str(Cursor(head - TIGHT_REPLAY, world.org_id))
    assert Cursor.parse(start, world.org_id).position == first["position"] - 1 == head - 4

    within = await tight.connect(admin, at_limit, label="exactly at the replay limit")
    try:
        replay = await within.until_live(LIVE_WITHIN)
        assert [f["position"] for f in replay] == [head - 3, head - 1, head]  # compacted conversation
    finally:
        await within.close()

    await tight.http.send(medic.token, str(medic.conversation_id), "three")  # now `at_limit` is 7 behind
    behind = await tight.connect(admin, at_limit, label="too far behind")
    try:
        assert await behind.wait_closed(LIVE_WITHIN) == 4409
        assert behind.log == [{"type": "resync", "reason": "too_far_behind"}]
        assert behind.close_reason == "too_far_behind"
    finally:
        await behind.close()
    # The way back the close code describes: catch up over HTTP, then reconnect from there.
    caught_up = await tight.http.get(admin.token, "/v1/sync", cursor=at_limit)
    assert caught_up["has_more"] is False
    again = await tight.connect(admin, caught_up["next_cursor"], label="caught up")
    try:
        assert await again.until_live(LIVE_WITHIN) == []
    finally:
        await again.close()


def _socket_buffer_cap() -> int:
    """The most the kernel may buffer for one TCP sender (Linux autotunes up to tcp_wmem's maximum)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


async def test_a_socket_that_stops_reading_is_cut_off_without_holding_up_the_others(tight: Site) -> None:
    world = await tight.world(admins=2, medics=1)
    medic = world.medics[0]
    healthy = await tight.live(world.admins[0], label="healthy")
    stalled = await StalledClient.connect(tight.base_url, world.admins[1].token)
    try:
        # Enough to fill every buffer between the server and the stalled socket (the kernel's,
        # then uvicorn's), after which its queue of 20 frames fills within a few messages.
        size = 3900
        count = min(3000, (_socket_buffer_cap() + 2 * 1024 * 1024) // (size + 800) + 1)
        sent = await send_many(tight.http, medic, str(medic.conversation_id), count, tag="flood", size=size - 20)
        in_order = sorted(sent, key=lambda m: sent[m]["position"])
        last = sent[in_order[-1]]["position"]

        # The healthy socket gets every message, once, in order, while the other one is stuck.
        frames = await healthy.frames_until(lambda f: f.get("position") == last, 30)
        assert message_ids(frames) == in_order
        assert_increasing(frames)
        assert [f["type"] for f in stalled.frames] == ["welcome", "live"]  # it has read nothing since

        # The stalled socket, once it reads again: a prefix of the stream, then the end.
        try:
            await stalled.drain(30)
        except TimeoutError:
            pytest.fail(f"the server never ended the stalled connection ({len(stalled.frames)} frames read)")
        assert stalled.eof
        kinds_seen = [f["type"] for f in stalled.frames]
        assert kinds_seen[:2] == ["welcome", "live"], kinds_seen[:5]
        changes = [f for f in stalled.frames if is_change(f)]
        assert_increasing(changes)
        got = message_ids(changes)
        assert got == in_order[: len(got)], "what it got is the start of the stream, in order"
        assert len(got) < count, "it was cut off, not sent everything"
        if stalled.close_code is not None:  # told why, if it started reading again in time
            assert stalled.close_code == 4409 and stalled.frames[-1] == {"type": "resync", "reason": "slow_consumer"}
        await assert_still_serving(tight, world, healthy)
    finally:
        stalled.close()
        await healthy.close()
