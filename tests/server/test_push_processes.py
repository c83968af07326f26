"""Push delivery across real `sitecomms serve` processes: a server SIGKILLed right after a send's
commit loses no push (the next process delivers it), and two servers on one PostgreSQL never
both deliver a push (deliveries are claimed with FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from sitecomms.bench.push_service import PushService
from sitecomms.protocol.enums import Role
from sitecomms.server.app import build_accounts
from sitecomms.server.services.accounts import NewUser
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store import migrate, push
from sitecomms.store.database import open_database
from tests.servers import BACKENDS, aserving, base_env, fresh_database
from tests.support import PASSWORD, fast_settings

WAIT = 30.0


async def _seed(url: str, medics: int) -> tuple[str, list[str]]:
    """An org with one admin and `medics` medics; (the admin's email, the medics' emails)."""
    await asyncio.wait_for(migrate.upgrade_async(url), 60)
    db = open_database(url, pool_size=2)
    try:
        accounts = build_accounts(fast_settings(url), db, NoPublisher())
        org = await accounts.create_org(f"Push {uuid.uuid4().hex[:8]}")
        admin = f"admin-{uuid.uuid4().hex[:8]}@push.example"
        await accounts.create_user(None, org.id, NewUser(admin, "Alex Admin", Role.ADMIN, PASSWORD))
        emails = [f"medic-{i}-{uuid.uuid4().hex[:8]}@push.example" for i in range(medics)]
        for i, email in enumerate(emails):
            await accounts.create_user(None, org.id, NewUser(email, f"Medic {i}", Role.MEDIC, PASSWORD))
    finally:
        await db.close()
    return admin, emails


async def _sign_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _subscribe(client: httpx.AsyncClient, service: PushService, headers: dict[str, str]) -> str:
    key = (await client.get("/v1/push/key", headers=headers)).json()["public_key"]
    body = service.subscribe(key)
    response = await client.post("/v1/push/subscriptions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return PushService.subscription_id(body["endpoint"])


async def _broadcast(client: httpx.AsyncClient, headers: dict[str, str], content: str) -> str:
    conversations = (await client.get("/v1/conversations", headers=headers)).json()["conversations"]
    (broadcast,) = [c["id"] for c in conversations if c["type"] == "broadcast"]
    body = {"conversation_id": broadcast, "content": content, "idempotency_key": uuid.uuid4().hex}
    response = await client.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _env(url: str, service: PushService, tmp_path: Path, *, worker: bool) -> dict[str, str]:
    return base_env(
        url,
        SITECOMMS_PUSH_ALLOWED_HOSTS="127.0.0.1",
        SITECOMMS_PUSH_CA_FILE=str(service.ca_file),
        SITECOMMS_PUSH_KEY_FILE=str(tmp_path / "shared.vapid"),
        SITECOMMS_PUSH_WORKER="true" if worker else "false",
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_push_committed_before_a_sigkill_is_delivered_after_the_restart(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url, PushService() as service:
        admin_email, (medic_email,) = await _seed(url, 1)
        # The first server commits the send and dies before pushing anything: it has no worker,
        # which is the state of any server killed between the commit and its first push.
        async with aserving(_env(url, service, tmp_path, worker=False), tmp_path / "a.log") as first:
            async with httpx.AsyncClient(base_url=first.base_url, timeout=WAIT) as client:
                device = await _subscribe(client, service, await _sign_in(client, medic_email))
                message_id = await _broadcast(client, await _sign_in(client, admin_email), "Evacuate now")
            first.process.kill()
            assert first.process.wait(timeout=WAIT) == -9
        assert service.attempts == []
        async with aserving(_env(url, service, tmp_path, worker=True), tmp_path / "b.log"):
            await service.wait_for(1, WAIT)
        ((received),) = service.received
        assert received.subscription_id == device
        assert json.loads(received.payload or b"{}")["message_id"] == message_id


@pytest.mark.postgres
async def test_two_servers_on_postgresql_never_both_deliver_a_push(tmp_path: Path) -> None:
    medics, devices_each, messages = 20, 2, 4
    async with fresh_database("postgresql", tmp_path) as url, PushService() as service:
        admin_email, emails = await _seed(url, medics)
        env = _env(url, service, tmp_path, worker=True)
        async with AsyncExitStack() as stack:
            a, b = await asyncio.gather(
                stack.enter_async_context(aserving(env, tmp_path / "a.log")),
                stack.enter_async_context(aserving(env, tmp_path / "b.log")),
            )
            http_a = await stack.enter_async_context(httpx.AsyncClient(base_url=a.base_url, timeout=WAIT))
            http_b = await stack.enter_async_context(httpx.AsyncClient(base_url=b.base_url, timeout=WAIT))
            devices = [
                await _subscribe(client, service, await _sign_in(client, email))
                for email in emails
                for client in (http_a, http_b)[:devices_each]
            ]
            admin = await _sign_in(http_a, admin_email)
            sent = [await _broadcast((http_a, http_b)[i % 2], admin, f"Round {i}") for i in range(messages)]
            await service.wait_for(len(devices) * messages, WAIT)
            db = open_database(url, pool_size=1)
            try:
                async with asyncio.timeout(WAIT):  # until both workers have settled every delivery
                    # No event crosses from the servers' workers to here: the database is the record.
                    while await db.read("test_pending", push.pending):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            finally:
                await db.close()
        pushes = Counter((r.subscription_id, json.loads(r.payload or b"{}")["message_id"]) for r in service.received)
        assert pushes == Counter({(device, message): 1 for device in devices for message in sent})
        assert service.rejections == []
