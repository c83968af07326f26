"""The real WatermelonDB 0.28 client (LokiJS adapter, Node 20) syncing against `sitecomms serve`.

One server per backend for the module; each test makes an organisation of its own, signs its
members in over HTTP and runs one scenario of `watermelon_sync.cjs` (the unmodified
`synchronize()`), then checks what the device printed and what the server holds. Every
`console.error` of the client is captured: a `[Sync]` diagnostic (an echo sent as `created`, an
update of a record the device lacks, a timestamp going back) fails the test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sitecomms.protocol.enums import Role
from sitecomms.server.app import build_accounts
from sitecomms.server.services.accounts import Accounts, NewUser
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store import migrate
from sitecomms.store.database import open_database
from tests.servers import BACKENDS, Served, aserving, base_env, fresh_database
from tests.support import PASSWORD, fast_settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("watermelon_sync.cjs")
NODE_TIMEOUT_SECONDS = 60


@dataclass
class Server:
    served: Served
    accounts: Accounts
    client: httpx.AsyncClient


@pytest.fixture(scope="module", params=BACKENDS)
async def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    if shutil.which("node") is None:  # the run must fail, never skip
        pytest.fail("Node.js 20 is required for the WatermelonDB tests (Debian: apt-get install nodejs)")
    if not (ROOT / "node_modules" / "@nozbe" / "watermelondb").exists():
        pytest.fail("the pinned npm packages are missing: run `npm ci` at the repository's root")
    directory = tmp_path_factory.mktemp(f"watermelon-{request.param}")
    async with fresh_database(request.param, directory) as url:
        await migrate.upgrade_async(url)
        db = open_database(url, pool_size=2)
        try:
            accounts = build_accounts(fast_settings(url), db, NoPublisher())
            async with (
                aserving(base_env(url), directory / "serve.log") as served,
                httpx.AsyncClient(base_url=served.base_url, timeout=10) as client,
            ):
                yield Server(served, accounts, client)
        finally:
            await db.close()


@dataclass
class Person:
    id: str
    token: str
    conversation_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def person(server: Server, org_id: str, role: Role) -> Person:
    email = f"{uuid.uuid4().hex[:12]}@{role.value}.example"
    name = f"{role.value.title()} {email[:6]}"
    user = await server.accounts.create_user(None, org_id, NewUser(email, name, role, PASSWORD))
    response = await server.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return Person(user.id, response.json()["access_token"])


@dataclass
class Org:
    id: str
    admin: Person
    medics: list[Person]
    broadcast_id: str


async def make_org(server: Server, medics: int = 2) -> Org:
    org = await server.accounts.create_org(f"Org {uuid.uuid4().hex[:6]}")
    admin = await person(server, org.id, Role.ADMIN)
    people = [await person(server, org.id, Role.MEDIC) for _ in range(medics)]
    listing = (await server.client.get("/v1/conversations", headers=admin.headers)).json()["conversations"]
    by_medic = {c["medic_id"]: c["id"] for c in listing}
    for medic in people:
        medic.conversation_id = by_medic[medic.id]
    return Org(org.id, admin, people, by_medic[None])


async def run(
    server: Server, tmp_path: Path, scenario: str, tokens: dict[str, str], ids: dict[str, Any], *, allowed: int = 0
) -> Any:
    """The scenario's output; it fails on a `[Sync]` diagnostic, unless the test expects `allowed` of them."""
    spec = tmp_path / f"{scenario}.json"
    spec.write_text(json.dumps({"base": server.served.base_url, "scenario": scenario, "tokens": tokens, "ids": ids}))
    done = await asyncio.to_thread(
        subprocess.run,
        ["node", str(SCRIPT), str(spec)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"node exited with {done.returncode}: {done.stdout}\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout)
    assert "failed" not in out, out["failed"]
    sync_errors = [line for line in out["errors"] if "[Sync]" in line]
    assert len(sync_errors) == allowed, sync_errors
    return out


async def thread(server: Server, viewer: Person, conversation_id: str) -> list[dict[str, Any]]:
    response = await server.client.get(
        f"/v1/conversations/{conversation_id}/messages", params={"limit": 200}, headers=viewer.headers
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_offline_messages_reach_the_server_once_and_a_deleted_one_stays_deleted(
    server: Server, tmp_path: Path
) -> None:
    org = await make_org(server, medics=1)
    medic = org.medics[0]
    assert medic.conversation_id
    ids = {"me": medic.id, "direct": medic.conversation_id}
    out = await run(server, tmp_path, "offline", {"me": medic.token, "admin": org.admin.token}, ids)

    assert {c["id"] for c in out["first"]["conversations"]} == {medic.conversation_id, org.broadcast_id}
    assert out["first"]["messages"] == [] and out["first"]["unsynced"] is False
    (office,) = out["second"]["messages"]
    assert (office["content"], office["sender_name"], office["_status"]) == ("from the office", "Admin", "synced")
    assert isinstance(office["created_at"], int) and office["created_at"] > 1.7e12
    assert out["crash"] == "simulated crash after the push"
    assert out["after_crash"]["unsynced"] is True  # nothing was marked synced
    assert out["replay_status"] == 200
    assert [p["status"] for p in out["recovery_pushes"]] == [200]
    assert out["recovered"]["unsynced"] is False

    stored = await thread(server, org.admin, medic.conversation_id)
    contents = [m["content"] for m in stored]
    assert contents == ["from the office", "offline one", "offline two", "deleted on the device"]  # once each
    by_key = {m["idempotency_key"]: m for m in stored}
    assert set(out["offline_ids"]) <= set(by_key)
    final = {m["id"]: m for m in out["final"]["messages"]}
    assert out["doomed_id"] not in final  # not resurrected by the echo of its own push
    assert set(out["offline_ids"]) <= set(final)
    for record_id in out["offline_ids"]:
        assert final[record_id]["server_id"] == by_key[record_id]["id"]
        assert final[record_id]["_status"] == "synced"
    assert out["final"]["unsynced"] is False


async def test_a_conflicting_push_is_refused_and_the_retry_recovers(server: Server, tmp_path: Path) -> None:
    org = await make_org(server, medics=1)
    medic = org.medics[0]
    assert medic.conversation_id
    first = await server.client.post(
        "/v1/messages",
        json={"conversation_id": medic.conversation_id, "content": "before the sync", "idempotency_key": "early-1"},
        headers=org.admin.headers,
    )
    assert first.status_code == 201
    ids = {"me": medic.id, "direct": medic.conversation_id}
    out = await run(server, tmp_path, "conflict", {"me": medic.token, "admin": org.admin.token}, ids)

    assert out["refused"].startswith("push 409") and '"conflict"' in out["refused"]
    assert out["after_refusal"]["unsynced"] is True
    assert out["retry"] is None
    assert out["final"]["unsynced"] is False
    contents = [m["content"] for m in await thread(server, org.admin, medic.conversation_id)]
    assert contents == ["before the sync", "between the pull and the push", "sent with the read"]
    local = {m["content"] for m in out["final"]["messages"]}
    assert local == set(contents)
    listing = (await server.client.get("/v1/conversations", headers=medic.headers)).json()["conversations"]
    (direct,) = [c for c in listing if c["id"] == medic.conversation_id]
    assert direct["unread_count"] == 0  # the device's read, applied once the conflict was merged


async def test_a_device_sees_and_writes_only_what_the_visibility_rules_allow(server: Server, tmp_path: Path) -> None:
    org = await make_org(server, medics=2)
    other = await make_org(server, medics=1)
    medic, stranger = org.medics
    assert medic.conversation_id and stranger.conversation_id and other.medics[0].conversation_id
    await server.client.post(
        "/v1/messages",
        json={"conversation_id": other.medics[0].conversation_id, "content": "far away", "idempotency_key": "far"},
        headers=other.admin.headers,
    )
    ids = {
        "me": medic.id,
        "direct": medic.conversation_id,
        "stranger_direct": stranger.conversation_id,
        "broadcast": org.broadcast_id,
        "other_org_direct": other.medics[0].conversation_id,
    }
    out = await run(server, tmp_path, "visibility", {"me": medic.token, "admin": org.admin.token}, ids)

    for seen in (out["first"], out["second"]):
        assert {c["id"] for c in seen["conversations"]} == {medic.conversation_id, org.broadcast_id}
        assert {c["org_id"] for c in seen["conversations"]} == {org.id}
    server_rows = [m for m in out["second"]["messages"] if m["_status"] == "synced"]
    assert [m["content"] for m in server_rows] == ["to every medic"]
    text = json.dumps(out["second"])
    for secret in ("for the other medic only", "far away", other.id, stranger.id):
        assert secret not in text
    (push,) = out["pushes"]
    assert len(push["body"]["experimentalRejectedIds"]["messages"]) == 3
    assert out["second"]["unsynced"] is True  # refused records stay on the device, unsynced
    assert [m["content"] for m in await thread(server, org.admin, stranger.conversation_id)] == [
        "for the other medic only"
    ]
    assert [m["content"] for m in await thread(server, org.admin, org.broadcast_id)] == ["to every medic"]
    assert await thread(server, other.admin, other.medics[0].conversation_id) == [
        *(await thread(server, other.admin, other.medics[0].conversation_id))[:1]
    ]
    admin_conversations = {c["id"]: c["participant_name"] for c in out["admin"]["conversations"]}
    assert set(admin_conversations) == {medic.conversation_id, stranger.conversation_id, org.broadcast_id}
    assert admin_conversations[org.broadcast_id] == "Broadcast"


@pytest.mark.parametrize("created_as_updated", [False, True], ids=["plain", "sendCreatedAsUpdated"])
async def test_a_demoted_admins_device_drops_what_they_may_no_longer_see(
    server: Server, tmp_path: Path, created_as_updated: bool
) -> None:
    org = await make_org(server, medics=2)
    email = f"{uuid.uuid4().hex[:12]}@admin.example"
    user = await server.accounts.create_user(None, org.id, NewUser(email, "Leaving Admin", Role.ADMIN, PASSWORD))
    signed_in = await server.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    for medic in org.medics:
        assert medic.conversation_id
        sent = await server.client.post(
            "/v1/messages",
            json={"conversation_id": medic.conversation_id, "content": f"to {medic.id}", "idempotency_key": "k1"},
            headers=medic.headers,
        )
        assert sent.status_code == 201
    ids = {"me": user.id, "email": email, "password": PASSWORD, "created_as_updated": created_as_updated}
    tokens = {"me": signed_in.json()["access_token"], "admin": org.admin.token}
    out = await run(server, tmp_path, "demotion", tokens, ids, allowed=0 if created_as_updated else 1)

    everything = {str(m.conversation_id) for m in org.medics} | {org.broadcast_id}
    assert {c["id"] for c in out["first"]["conversations"]} == everything
    assert len(out["first"]["messages"]) == 2
    assert out["demoted"] == 200
    listing = (await server.client.get("/v1/conversations", headers=org.admin.headers)).json()["conversations"]
    own = next(c["id"] for c in listing if c["medic_id"] == user.id)  # every medic has a direct conversation
    assert {c["id"] for c in out["second"]["conversations"]} == {own, org.broadcast_id}
    assert out["second"]["messages"] == []  # the medics' messages are gone from the device
    if not created_as_updated:
        # Known: the new direct conversation arrives in `updated` (the server keeps no record of
        # what a device holds), which WatermelonDB applies as a create with this one diagnostic;
        # an app passing `sendCreatedAsUpdated: true` (and telling the server) gets none.
        (diagnostic,) = [line for line in out["errors"] if "[Sync]" in line]
        assert f"conversations#{own}" in diagnostic and "doesn't exist locally" in diagnostic
