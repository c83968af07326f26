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
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from sitecomms.bench.push_service import PushService
from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import PushKind, Role
from sitecomms.server.app import build_accounts, build_signin, create_app
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.server.services.push_delivery import PushDelivery
from sitecomms.server.services.webpush import topic_for
from sitecomms.store import push
from sitecomms.store.database import Database, open_database
from sitecomms.store.types import utcnow
from tests.server.api.test_isolation import Model, Plan, Sent, _play, plans
from tests.servers import fresh_database
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
        key = (await self.client.get("/v1/push/key")).json()["public_key"]
        body = self.service.subscribe(key)
        created = await self.client.post("/v1/push/subscriptions", json=body, headers=headers)
        assert created.status_code == 201, created.text
        return PushService.subscription_id(body["endpoint"])

    async def settled(self) -> None:
        """Until the worker has nothing left to send now (every push answered or waiting to retry)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                await self.pusher.round()
                if not await self.db.read("test_push_pending", _due_now):
                    return


def _due_now(conn: Any) -> bool:
    next_due = push.next_due(conn)
    return push.any_org_behind(conn) or (next_due is not None and next_due <= utcnow())


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
