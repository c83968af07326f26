"""`/readyz` of a running `sitecomms serve` whose database starts refusing writes, then accepts them again.

The refusal is real (tests/server/services/test_health.py says how, for SQLite and PostgreSQL):
reads still answer, so only a write probe can tell. A send refused meanwhile is a 503 and
makes `/readyz` answer 503 at once (no wait for the next probe); once writes work again
`/readyz` is 200 within about a second (one probe a second) and the retried send is stored.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from sitecomms.protocol.enums import Role
from sitecomms.server.app import build_accounts
from sitecomms.server.services.accounts import NewUser
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store import migrate
from sitecomms.store.database import open_database
from tests.servers import BACKENDS, aserving, base_env, refusable_database
from tests.support import PASSWORD, fast_settings, write_refusal

WAIT = 30.0
POLL = 0.05  # seconds between two checks while waiting for the next probe (there is no event to await)


async def _admin_email(url: str) -> str:
    await asyncio.wait_for(migrate.upgrade_async(url), 60)
    db = open_database(url, pool_size=2)
    try:
        accounts = build_accounts(fast_settings(url), db, NoPublisher())
        org = await accounts.create_org(f"Ready {uuid.uuid4().hex[:6]}")
        email = f"{uuid.uuid4().hex[:10]}@ready.example"
        await accounts.create_user(None, org.id, NewUser(email, "Ready Admin", Role.ADMIN, PASSWORD))
    finally:
        await db.close()
    return email


async def _ready_again(http: httpx.AsyncClient) -> httpx.Response:
    while (response := await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110 (no event crosses processes)
        await asyncio.sleep(POLL)
    return response


@pytest.mark.parametrize("backend", BACKENDS)
async def test_readyz_says_not_ready_while_the_database_refuses_writes(backend: str, tmp_path: Path) -> None:
    async with refusable_database(backend, tmp_path) as url:
        email = await asyncio.wait_for(_admin_email(url), 60)
        refuse, allow = write_refusal(url)
        async with (
            aserving(base_env(url), tmp_path / "serve.log") as served,
            httpx.AsyncClient(base_url=served.base_url, timeout=WAIT, trust_env=False) as http,
            asyncio.timeout(WAIT * 2),
        ):
            login = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            listing = await http.get("/v1/conversations", headers=headers)
            broadcast = next(c["id"] for c in listing.json()["conversations"] if c["medic_id"] is None)
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready", "database": backend})

            await refuse()
            try:
                # a WatermelonDB push is a send too: refused, it marks the process not ready at once
                record = {"id": "wmrefused0000001", "conversation_id": broadcast, "content": "pushed in the refusal"}
                pushed = await http.post(
                    "/v1/watermelon/sync",
                    params={"last_pulled_at": "1"},
                    json={"messages": {"created": [record], "updated": [], "deleted": []}},
                    headers=headers,
                )
                assert pushed.status_code == 503, pushed.text
                assert (await http.get("/readyz")).status_code == 503
                message = {"conversation_id": broadcast, "content": "during the refusal", "idempotency_key": "k1"}
                refused = await http.post("/v1/messages", json=message, headers=headers)
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "1"
                not_ready = await http.get("/readyz")  # at once: the refused send marked it
                assert not_ready.status_code == 503, not_ready.text
                reason = not_ready.json()["error"]["message"]
                assert reason.startswith("database not ready: "), reason
                assert "refused" in reason or "fail" in reason, reason
                conversations = await http.get("/v1/conversations", headers=headers)
                assert conversations.status_code == 200, conversations.text  # reads still work
            finally:
                await allow()

            assert (await _ready_again(http)).json() == {"status": "ready", "database": backend}
            # PostgreSQL: a pooled connection ended by allow() fails once; a client retries (Retry-After)
            while (stored := await http.post("/v1/messages", json=message, headers=headers)).status_code == 503:  # noqa: ASYNC110
                await asyncio.sleep(POLL)
            assert stored.status_code == 201, stored.text
