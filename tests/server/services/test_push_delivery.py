"""Push delivery end to end in one process, against the RFC 8030 double (sitecomms.bench.push_service):
who is pushed (everyone who may see the message, every device, never the sender's), exactly once;
what a push carries (ids and a cursor; the text only when set to); how the worker answers a push
service's 410, 413, 429 with Retry-After and 5xx; and nothing for an ended session."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from sitecomms.bench.push_service import PushService
from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import PushKind, Role
from sitecomms.server.app import build_accounts, build_signin, create_app
from sitecomms.server.services import push_delivery
from sitecomms.server.services.outbound import Outbound, OutboundPolicy
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.server.services.push_delivery import PushDelivery, PushPolicy
from sitecomms.server.services.sessions import RevokeReason, revoke_session
from sitecomms.server.services.webpush import VapidKey, topic_for
from sitecomms.store import push
from sitecomms.store import sessions as store_sessions
from sitecomms.store.database import Database, open_database
from sitecomms.store.schema import push_cursors, push_deliveries, push_subscriptions
from sitecomms.store.types import utcnow
from tests.server.api.test_isolation import Model, Plan, Sent, _play, plans
from tests.servers import fresh_database
from tests.sql import execute
from tests.support import PASSWORD, Member, Orgs, World, fast_settings

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
TIMEOUT = 20.0


@dataclass
class Pushing:
    service: PushService
    client: httpx.AsyncClient
    orgs: Orgs
    db: Database
    pusher: PushDelivery

    async def subscribe(self, member: Member) -> str:
        """A new device of `member` (a session of its own) subscribed at the double; its subscription id there."""
        response = await self.client.post("/v1/auth/login", json={"email": member.email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        key = (await self.client.get("/v1/push/key", headers=headers)).json()["public_key"]
        body = self.service.subscribe(key)
        created = await self.client.post("/v1/push/subscriptions", json=body, headers=headers)
        assert created.status_code == 201, created.text
        return PushService.subscription_id(body["endpoint"])

    async def settled(self) -> None:
        """Until nothing is left to send now and no send is in flight (the app's own worker may
        hold a lease): every push answered or waiting to retry."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                await self.pusher.quiet()
                await self.pusher.round()
                await self.pusher.quiet()
                if not await self.db.read("test_push_pending", _due_now):
                    return


def _due_now(conn: Any) -> bool:
    behind, next_due = push.pending_work(conn)
    now = utcnow()
    in_flight = execute(conn, select(push_deliveries.c.id).where(push_deliveries.c.leased_until > now)).first()
    return behind or (next_due is not None and next_due <= now) or in_flight is not None


async def _pushing(url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Pushing]:
    async with PushService() as service:
        config = fast_settings(
            url,
            push_allowed_hosts="127.0.0.1",
            push_ca_file=service.ca_file,
            push_key_file=tmp_path / "test.vapid",
            **settings,
        )
        app = create_app(config)
        db = open_database(url, pool_size=2)
        orgs_signin = build_signin(config, db, NoPublisher())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test") as client:
                orgs = Orgs(build_accounts(config, db, NoPublisher()), orgs_signin, client)
                yield Pushing(service, client, orgs, db, app.state.push_delivery)
        await db.close()


@pytest.fixture(params=BACKENDS)
async def pushing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pushing]:
    async with fresh_database(request.param, tmp_path) as url:
        async for each in _pushing(url, tmp_path):
            yield each


@pytest.fixture
async def pushing_content(tmp_path: Path) -> AsyncIterator[Pushing]:
    async with fresh_database("sqlite", tmp_path) as url:
        async for each in _pushing(url, tmp_path, push_include_content=True):
            yield each


def _notices(service: PushService) -> list[tuple[str, dict[str, Any]]]:
    return [(r.subscription_id, json.loads(r.payload or b"{}")) for r in service.received]


async def test_a_broadcast_reaches_every_device_that_may_see_it_once_and_never_the_senders(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=2, medics=2)
    sender, other_admin = world.admins
    sender_devices = [await pushing.subscribe(sender), await pushing.subscribe(sender)]
    due = [await pushing.subscribe(other_admin)] + [await pushing.subscribe(m) for m in world.medics]
    due.append(await pushing.subscribe(world.medics[0]))  # a medic's second device
    sent = await pushing.orgs.send(sender, world.broadcast_id, "Evacuate the east car park")
    await pushing.service.wait_for(len(due), TIMEOUT)
    await pushing.settled()
    counts = Counter(r.subscription_id for r in pushing.service.received)
    assert counts == Counter(due)  # each once, none to the sender's own devices
    assert not set(sender_devices) & set(counts)
    assert pushing.service.rejections == []
    for _, notice in _notices(pushing.service):
        assert notice == {
            "type": PushKind.MESSAGE.value,
            "org_id": world.org_id,
            "conversation_id": world.broadcast_id,
            "message_id": sent["id"],
            "cursor": str(Cursor(sent["position"], world.org_id)),
        }  # private by default: no text, no sender
    for received in pushing.service.received:
        assert received.urgency == "high" and received.topic == topic_for(world.broadcast_id)
        assert 0 < received.ttl <= 24 * 3600


async def test_a_medics_message_reaches_the_admins_and_no_other_medic(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=2, medics=2)
    writer, neighbour = world.medics
    admins = [await pushing.subscribe(a) for a in world.admins]
    await pushing.subscribe(neighbour)
    await pushing.subscribe(writer)
    assert writer.conversation_id is not None
    await pushing.orgs.send(writer, writer.conversation_id, "Patient stable")
    await pushing.service.wait_for(len(admins), TIMEOUT)
    await pushing.settled()
    assert sorted(r.subscription_id for r in pushing.service.received) == sorted(admins)


async def test_another_orgs_devices_hear_nothing(pushing: Pushing) -> None:
    ours, theirs = await pushing.orgs.make(admins=1, medics=1), await pushing.orgs.make(admins=1, medics=1)
    mine = await pushing.subscribe(ours.medics[0])
    await pushing.subscribe(theirs.medics[0])
    await pushing.subscribe(theirs.admins[0])
    await pushing.orgs.send(ours.admins[0], ours.broadcast_id, "for our org")
    await pushing.service.wait_for(1, TIMEOUT)
    await pushing.settled()
    assert [r.subscription_id for r in pushing.service.received] == [mine]


async def test_text_travels_in_the_push_only_when_set_to(pushing_content: Pushing) -> None:
    world = await pushing_content.orgs.make(admins=1, medics=1)
    await pushing_content.subscribe(world.medics[0])
    await pushing_content.orgs.send(world.admins[0], world.broadcast_id, "Evacuate   the east\ncar park " + "x" * 300)
    await pushing_content.service.wait_for(1, TIMEOUT)
    ((_, notice),) = _notices(pushing_content.service)
    assert notice["sender"] == "Admin"  # admins are one team to a medic
    assert notice["text"].startswith("Evacuate the east car park x") and len(notice["text"]) == 200
    assert notice["text"].endswith("…")


async def test_a_gone_subscription_is_removed(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=1)
    gone = await pushing.subscribe(world.medics[0])
    pushing.service.expire(gone)
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "anyone there?")
    await pushing.service.wait_for(lambda s: any(a.status == 410 for a in s.attempts), TIMEOUT)
    await pushing.settled()
    assert await pushing.db.read("test_subs", push.subscriptions_of, world.medics[0].id) == []
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "again")
    await pushing.settled()
    assert len(pushing.service.attempts) == 1  # nothing more to a dead endpoint


async def test_429_is_retried_after_its_retry_after(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=1)
    device = await pushing.subscribe(world.medics[0])
    pushing.service.script(429, subscription_id=device, retry_after=2)
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "slow down")
    await pushing.service.wait_for(1, TIMEOUT)
    first, second = pushing.service.attempts
    assert (first.status, second.status) == (429, 201)
    assert second.at - first.at >= 2.0


async def test_5xx_is_retried_with_backoff(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=1)
    device = await pushing.subscribe(world.medics[0])
    pushing.service.script(503, subscription_id=device)
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "flaky")
    await pushing.service.wait_for(1, TIMEOUT)
    assert [a.status for a in pushing.service.attempts] == [503, 201]
    first, second = pushing.service.attempts
    assert second.at - first.at >= 1.0  # RETRY_PUSH: 2 s, times [0.5, 1)


async def test_413_is_sent_again_without_the_text(pushing_content: Pushing) -> None:
    world = await pushing_content.orgs.make(admins=1, medics=1)
    device = await pushing_content.subscribe(world.medics[0])
    pushing_content.service.script(413, subscription_id=device)
    await pushing_content.orgs.send(world.admins[0], world.broadcast_id, "a long story")
    await pushing_content.service.wait_for(1, TIMEOUT)
    assert [a.status for a in pushing_content.service.attempts] == [413, 201]
    ((_, notice),) = _notices(pushing_content.service)
    assert "text" not in notice and "sender" not in notice


async def test_an_ended_session_is_pushed_nothing(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=2)
    kept = await pushing.subscribe(world.medics[0])
    await pushing.subscribe(world.medics[1])
    admin = world.admins[0]
    response = await pushing.client.post(f"/v1/users/{world.medics[1].id}/deactivate", headers=admin.headers)
    assert response.status_code == 200
    await pushing.orgs.send(admin, world.broadcast_id, "who is left?")
    await pushing.service.wait_for(1, TIMEOUT)
    await pushing.settled()
    assert [r.subscription_id for r in pushing.service.received] == [kept]


async def test_messages_before_the_first_subscription_are_not_pushed(pushing: Pushing) -> None:
    world: World = await pushing.orgs.make(admins=1, medics=1)
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "old news")
    await pushing.subscribe(world.medics[0])
    await pushing.settled()
    assert pushing.service.attempts == []


# --- isolation, as a property (the plans of tests/server/api/test_isolation.py) ---------------


def _may_be_pushed(member: Member, sent: Sent, model: Model) -> bool:
    """The rules restated (design §3), not `visibility`: an admin sees every conversation of the
    org, a medic the broadcast and their own; nobody is pushed their own message."""
    if sent.sender_id == member.id or model.conversation_org[sent.conversation_id] != member.org_id:
        return False
    medic = model.conversation_medic[sent.conversation_id]
    return member.role is Role.ADMIN or medic is None or medic == member.id


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(plan=plans())
async def test_pushes_reach_exactly_the_devices_that_may_see_each_message(pushing: Pushing, plan: Plan) -> None:
    async with asyncio.timeout(120):
        worlds = [await pushing.orgs.make(admins=a, medics=m) for a, m in plan.shapes]
        model = Model(worlds)
        devices = {await pushing.subscribe(member): member for member in model.users.values()}
        await _play(pushing, model, plan)  # type: ignore[arg-type]  # it needs .client and .orgs
        expected = Counter(
            (device, sent.id)
            for device, member in devices.items()
            for sent in model.messages.values()
            if _may_be_pushed(member, sent, model)
        )
        total = sum(expected.values())
        await pushing.service.wait_for(
            lambda s: sum(r.subscription_id in devices for r in s.received) >= total, TIMEOUT
        )
        await pushing.settled()
        got = Counter(
            (subscription, notice["message_id"])
            for subscription, notice in _notices(pushing.service)
            if subscription in devices
        )
        assert got == expected
        for subscription, notice in _notices(pushing.service):
            if subscription in devices:
                sent = model.messages[notice["message_id"]]
                assert notice["conversation_id"] == sent.conversation_id
                assert notice["org_id"] == devices[subscription].org_id


# --- a hostile or broken push service, subscriptions that change under a pending push -------


async def _pending(pushing: Pushing) -> int:
    return await pushing.db.read("test_push_count", push.pending)


async def _due_at_once(pushing: Pushing) -> None:
    """Every delivery waiting for a retry is due now (as if its Retry-After had passed)."""

    def txn(conn: Any) -> None:
        execute(conn, update(push_deliveries).values(due_at=push.NEVER))

    await pushing.db.write("test_push_due_now", txn)


async def test_a_retry_after_beyond_any_date_gives_that_push_up_and_settles_the_others(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=2)
    hostile = await pushing.subscribe(world.medics[0])
    fine = await pushing.subscribe(world.medics[1])
    pushing.service.script(429, subscription_id=hostile, retry_after="9" * 400)  # a float: infinity
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "everyone")
    await pushing.service.wait_for(lambda s: len(s.attempts) >= 2, TIMEOUT)
    await pushing.settled()
    assert await _pending(pushing) == 0  # both settled: nothing left leased to be sent again
    assert sorted((a.subscription_id, a.status) for a in pushing.service.attempts) == sorted(
        [(hostile, 429), (fine, 201)]
    )


async def test_a_retry_after_of_zero_still_backs_off(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=1)
    device = await pushing.subscribe(world.medics[0])
    pushing.service.script(429, subscription_id=device, retry_after="0")
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "again and again")
    await pushing.service.wait_for(1, TIMEOUT)
    first, second = pushing.service.attempts
    assert (first.status, second.status) == (429, 201)
    assert second.at - first.at >= 1.0  # RETRY_PUSH's first delay at least, not at once (a hot loop)


async def test_a_subscription_whose_keys_no_longer_encrypt_is_removed_and_the_others_are_delivered(
    pushing: Pushing,
) -> None:
    world = await pushing.orgs.make(admins=1, medics=2)
    broken = await pushing.subscribe(world.medics[0])
    fine = await pushing.subscribe(world.medics[1])
    (row,) = await pushing.db.read("test_subs", push.subscriptions_of, world.medics[0].id)
    assert row.endpoint.endswith(broken)

    def corrupt(conn: Any) -> None:  # a row from before key checks, or edited by hand
        execute(conn, update(push_subscriptions).where(push_subscriptions.c.id == row.id).values(p256dh="AAAA"))

    await pushing.db.write("test_corrupt", corrupt)
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "everyone")
    await pushing.service.wait_for(1, TIMEOUT)
    await pushing.settled()
    assert [r.subscription_id for r in pushing.service.received] == [fine]
    assert await _pending(pushing) == 0
    assert await pushing.db.read("test_subs", push.subscriptions_of, world.medics[0].id) == []


async def test_an_endpoint_moved_to_another_user_carries_none_of_the_first_users_pushes(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=2)
    first, second = world.medics
    key = (await pushing.client.get("/v1/push/key", headers=first.headers)).json()["public_key"]
    body = pushing.service.subscribe(key)  # one browser profile, signed into by both medics in turn
    device = PushService.subscription_id(body["endpoint"])
    created = await pushing.client.post("/v1/push/subscriptions", json=body, headers=first.headers)
    assert created.status_code == 201, created.text
    pushing.service.script(503, subscription_id=device, retry_after=600)
    assert first.conversation_id is not None
    await pushing.orgs.send(world.admins[0], first.conversation_id, "for the first medic only")
    await pushing.service.wait_for(lambda s: len(s.attempts) >= 1, TIMEOUT)
    await pushing.settled()
    assert await _pending(pushing) == 1  # due again in 10 minutes
    moved = await pushing.client.post("/v1/push/subscriptions", json=body, headers=second.headers)
    assert moved.status_code == 200, moved.text
    await _due_at_once(pushing)
    await pushing.settled()
    assert [a.status for a in pushing.service.attempts] == [503]  # the second medic never gets it
    assert await _pending(pushing) == 0


async def test_a_demoted_admin_gets_no_pending_push_of_a_conversation_no_longer_theirs(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=2, medics=1)
    sender, demoted = world.admins
    medic = world.medics[0]
    device = await pushing.subscribe(demoted)
    pushing.service.script(503, subscription_id=device, retry_after=600)
    assert medic.conversation_id is not None
    await pushing.orgs.send(sender, medic.conversation_id, "between the medic and the admins")
    await pushing.service.wait_for(lambda s: len(s.attempts) >= 1, TIMEOUT)
    await pushing.settled()
    assert await _pending(pushing) == 1
    response = await pushing.client.put(f"/v1/users/{demoted.id}/role", json={"role": "medic"}, headers=sender.headers)
    assert response.status_code == 200, response.text
    await _due_at_once(pushing)
    await pushing.settled()
    assert [a.status for a in pushing.service.attempts] == [503]  # a medic may not see another medic's thread
    assert await _pending(pushing) == 0


async def test_413_for_a_push_without_text_is_not_sent_again(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=1)
    device = await pushing.subscribe(world.medics[0])
    pushing.service.script(413, subscription_id=device, times=2)
    await pushing.orgs.send(world.admins[0], world.broadcast_id, "short")
    await pushing.service.wait_for(lambda s: len(s.attempts) >= 1, TIMEOUT)
    await pushing.settled()
    assert [a.status for a in pushing.service.attempts] == [413]  # the same ids again would be as large
    assert await pushing.db.read("test_push_count", push.pending) == 0


async def _plan_by_hand(pushing: Pushing, *, rounds: int) -> list[tuple[int, bool]]:
    """`rounds` planning transactions, as the worker runs them; what each recorded."""
    now = utcnow()
    return [
        await pushing.db.write(
            "test_plan", push_delivery.plan_txn, now=now, ttl=timedelta(hours=1), active_since=now - timedelta(days=1)
        )
        for _ in range(rounds)
    ]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_backlog_is_planned_a_bounded_number_of_deliveries_at_a_time_each_once(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push_delivery, "_DELIVERIES_PER_PLAN", 3)
    async with fresh_database(backend, tmp_path) as url:
        async for pushing in _pushing(url, tmp_path, push_worker=False):  # this test plans by hand
            world = await pushing.orgs.make(admins=1, medics=2)
            for medic in world.medics:
                await pushing.subscribe(medic)
            sent = [await pushing.orgs.send(world.admins[0], world.broadcast_id, f"n{i}") for i in range(3)]
            planned = await _plan_by_hand(pushing, rounds=4)
            # 2 devices a message, 3 deliveries a transaction: the 2nd message is planned in two parts
            assert planned == [(3, True), (3, True), (0, False), (0, False)]
            assert await pushing.db.read("test_push_count", push.pending) == 2 * len(sent)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_broadcast_to_more_devices_than_one_transaction_plans_is_planned_in_parts_each_once(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push_delivery, "_DELIVERIES_PER_PLAN", 3)
    async with fresh_database(backend, tmp_path) as url:
        async for pushing in _pushing(url, tmp_path, push_worker=False):  # this test plans by hand
            world = await pushing.orgs.make(admins=1, medics=7)
            devices = [await pushing.subscribe(medic) for medic in world.medics]
            await pushing.orgs.send(world.admins[0], world.broadcast_id, "everyone")
            planned = await _plan_by_hand(pushing, rounds=4)
            assert planned == [(3, True), (3, True), (1, False), (0, False)]  # a second copy would break the unique key
            assert await pushing.db.read("test_push_count", push.pending) == len(devices)


@pytest.mark.postgres
async def test_an_org_another_process_is_planning_is_waited_for_not_spun_on(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        async for pushing in _pushing(url, tmp_path, push_worker=False):  # this test runs the rounds
            world = await pushing.orgs.make(admins=1, medics=1)
            await pushing.subscribe(world.medics[0])
            await pushing.orgs.send(world.admins[0], world.broadcast_id, "planned elsewhere")
            key_file = tmp_path / "test.vapid"
            pusher = PushDelivery(
                pushing.db,
                VapidKey.open(key_file),
                Outbound(OutboundPolicy(frozenset({"127.0.0.1"}), pushing.service.ca_file), max_connections=4),
                PushPolicy(poll_seconds=1.0),
            )
            engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
            try:
                async with asyncio.timeout(TIMEOUT), engine.connect() as other, other.begin():
                    await other.execute(select(push_cursors).with_for_update())  # another planner's lock
                    assert await pusher.round() == 1.0  # the next poll, not at once again (a busy loop)
                    assert pushing.service.attempts == []
                async with asyncio.timeout(TIMEOUT):
                    await pusher.round()  # the lock is gone: planned and sent
                    await pushing.service.wait_for(1, TIMEOUT)
            finally:
                await pusher.close()
                await engine.dispose()


async def test_a_medic_made_admin_is_pushed_their_old_conversation_once(pushing: Pushing) -> None:
    """The direct conversation's medic is now an admin too: both halves of the audience find them."""
    world = await pushing.orgs.make(admins=1, medics=1)
    medic, admin = world.medics[0], world.admins[0]
    device = await pushing.subscribe(medic)
    response = await pushing.client.put(f"/v1/users/{medic.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert medic.conversation_id is not None
    await pushing.orgs.send(admin, medic.conversation_id, "you are an admin now")
    await pushing.service.wait_for(1, TIMEOUT)
    await pushing.settled()
    assert [r.subscription_id for r in pushing.service.received] == [device]


class _HeldOutbound(Outbound):
    """Outbound calls that wait, once started, until the test lets them go."""

    def __init__(self, policy: OutboundPolicy) -> None:
        super().__init__(policy, max_connections=4)
        self.started, self.go = asyncio.Event(), asyncio.Event()

    async def post(self, url: str, headers: Any, body: bytes) -> Any:
        self.started.set()
        await self.go.wait()
        return await super().post(url, headers, body)


def _leased(conn: Any) -> int:
    return len(execute(conn, select(push_deliveries.c.id).where(push_deliveries.c.leased_until > utcnow())).all())


async def test_closing_finishes_the_pushes_in_flight_and_claims_no_more(tmp_path: Path) -> None:
    async with fresh_database("sqlite", tmp_path) as url:
        async for pushing in _pushing(url, tmp_path, push_worker=False):
            world = await pushing.orgs.make(admins=1, medics=1)
            admin, medic = world.admins[0], world.medics[0]
            device = await pushing.subscribe(medic)
            assert medic.conversation_id is not None
            policy = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), ca_file=pushing.service.ca_file)
            outbound = _HeldOutbound(policy)
            pusher = PushDelivery(pushing.db, VapidKey.open(tmp_path / "test.vapid"), outbound, PushPolicy())
            pusher.start()
            try:
                await pushing.orgs.send(admin, medic.conversation_id, "in flight at shutdown")
                pusher.poke()
                await asyncio.wait_for(outbound.started.wait(), TIMEOUT)
                closing = asyncio.ensure_future(pusher.close())
                await pushing.orgs.send(admin, medic.conversation_id, "after the close began")
                outbound.go.set()
                await asyncio.wait_for(closing, TIMEOUT)
            finally:
                await asyncio.wait_for(pusher.close(), TIMEOUT)
            assert [r.subscription_id for r in pushing.service.received] == [device], "the one in flight went out"
            assert await pushing.db.read("leased", _leased) == 0, "nothing is left under a lease"


@pytest.mark.postgres
async def test_a_subscription_made_while_its_session_is_being_revoked_is_refused(tmp_path: Path) -> None:
    """PostgreSQL, two transactions at once: the revocation (revoked, its subscriptions deleted) is
    not yet committed when the subscribe reads the session. The subscribe waits for it and is
    refused, never leaving a subscription bound to the ended session."""
    async with fresh_database("postgresql", tmp_path) as url:
        async for pushing in _pushing(url, tmp_path):
            medic = (await pushing.orgs.make(admins=1, medics=1)).medics[0]
            login = await pushing.client.post("/v1/auth/login", json={"email": medic.email, "password": PASSWORD})
            token, session_id = login.json()["access_token"], login.json()["session_id"]
            headers = {"Authorization": f"Bearer {token}"}
            key = (await pushing.client.get("/v1/push/key", headers=headers)).json()["public_key"]
            engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
            try:
                async with asyncio.timeout(TIMEOUT), engine.connect() as revoker, engine.connect() as watcher:
                    await revoker.begin()
                    session = await revoker.run_sync(store_sessions.get_session, session_id)
                    assert session is not None
                    await revoker.run_sync(revoke_session, session, reason=RevokeReason.REVOKED, now=utcnow())
                    subscription = pushing.service.subscribe(key)
                    subscribing = asyncio.ensure_future(
                        pushing.client.post("/v1/push/subscriptions", json=subscription, headers=headers)
                    )
                    waiting = text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                    while not (await watcher.execute(waiting)).scalar():  # until the subscribe waits on the lock
                        assert not subscribing.done(), (await subscribing).text
                        await asyncio.sleep(0.01)
                    await revoker.commit()
                    refused = await subscribing
            finally:
                await engine.dispose()
            assert refused.status_code == 401, refused.text
            rows = await pushing.db.read("subs", lambda conn: execute(conn, select(push_subscriptions.c.id)).all())
            assert rows == []


async def test_the_queue_depth_counts_the_pushes_not_yet_settled(pushing: Pushing) -> None:
    world = await pushing.orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    device = await pushing.subscribe(medic)
    pushing.service.script(503, subscription_id=device, retry_after=600)
    assert medic.conversation_id is not None
    await pushing.orgs.send(world.admins[0], medic.conversation_id, "waits ten minutes to be retried")
    await pushing.service.wait_for(lambda s: len(s.attempts) >= 1, TIMEOUT)
    await pushing.settled()
    assert await asyncio.wait_for(pushing.pusher.count_queue(), TIMEOUT) == 1
    assert pushing.pusher.queue_depth == 1
    await _due_at_once(pushing)
    await pushing.settled()
    assert [a.status for a in pushing.service.attempts] == [503, 201]
    assert await asyncio.wait_for(pushing.pusher.count_queue(), TIMEOUT) == 0
