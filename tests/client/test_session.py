"""Sessions against real servers: the client renews its access token before it expires (driven by
an injectable clock), once for many concurrent requests, saves each rotated refresh token before
using it (a restarted client renews again with it), retries a refresh whose answer was lost with
the same token, gives the live socket each new token, and when the server ends the session it is
`SignedOut` with its outbox kept. A socket closed for a newer one (4429) stays closed until
`reconnect()`. `sign_out()` ends the session on the server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from sitecomms.client import Client, ConnectionState, ServerUnavailable, SignedOut
from sitecomms.client._store import StoreCore
from tests.client.harness import ADMIN, HTTP_TIMEOUT, MEDIC, PASSWORD, TIMEOUT, ApiUser, server
from tests.client.test_client import by_name, live, until

TTL = 60  # the servers' access token lifetime here (their minimum)


class Clock:
    """The client's clock: real time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Spy(httpx.AsyncBaseTransport):
    """The real transport, counting refreshes; `lose` refreshes get their answer dropped."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.refresh_tokens: list[str] = []
        self.lose = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/v1/auth/refresh":
            self.refresh_tokens.append(request.content.decode())
            if self.lose:
                self.lose -= 1
                await response.aread()
                raise httpx.ReadError("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def signed_in(
    base_url: str, store: Path, *, clock: Clock | None = None, spy: Spy | None = None, email: str = MEDIC
) -> AsyncIterator[Client]:
    client = await Client.open(base_url, store, transport=spy, clock=clock or Clock())
    try:
        if not client.has_session:
            await client.login(email, PASSWORD, device="test device")
        yield client
    finally:
        await client.close()


async def my_sessions(client: Client) -> list[dict[str, object]]:
    credentials = client._session.credentials
    assert credentials is not None
    user = ApiUser(client._api.base_url, credentials.access_token)
    sessions: list[dict[str, object]] = (await user.get("/v1/sessions"))["sessions"]
    return sessions


async def test_a_due_token_is_renewed_the_socket_gets_it_and_a_restart_renews_with_the_saved_token(
    tmp_path: Path,
) -> None:
    store, clock, spy = tmp_path / "medic.db", Clock(), Spy()
    async with server(tmp_path, SITECOMMS_TOKEN_TTL_SECONDS=str(TTL)) as srv:
        async with signed_in(srv.base_url, store, clock=clock, spy=spy) as client:
            await client.start()
            await live(client)
            before = client._session.credentials
            assert before is not None and before.refresh_token is not None
            assert TTL * 0.8 - 5 < before.refresh_at - time.time() <= TTL * 0.8 + 1
            await client.sync_now()
            assert spy.refresh_tokens == [], "not due yet: no refresh"

            clock.offset = TTL * 0.8 + 2  # due, past the Date header's whole seconds (the old token still works)
            client._socket_authenticated.clear()
            await client.sync_now()
            assert len(spy.refresh_tokens) == 1 and before.refresh_token in spy.refresh_tokens[0]
            after = client._session.credentials
            assert after is not None and after.refresh_token not in (None, before.refresh_token)
            async with asyncio.timeout(TIMEOUT):
                await client._socket_authenticated.wait()  # the socket was given the new token
            assert client.state is ConnectionState.LIVE
            [session] = await my_sessions(client)
            assert (session["device"], session["current"], session["id"]) == ("test device", True, after.session_id)

        core = StoreCore(store)  # what a restart finds: the rotated refresh token, saved
        assert core.get_meta("refresh_token") == after.refresh_token
        assert core.get_meta("token") == after.access_token
        core.close()
        clock.offset += TTL * 0.8 + 2  # the Date header has whole seconds: a margin past the due time
        again = Spy()  # a transport is closed with its client
        again.refresh_tokens = spy.refresh_tokens
        async with signed_in(srv.base_url, store, clock=clock, spy=again) as restarted:
            await restarted.sync_now()  # due again: renewed with the saved token (the old one would revoke)
            assert len(spy.refresh_tokens) == 2 and after.refresh_token in spy.refresh_tokens[1]
            assert len(await my_sessions(restarted)) == 1


async def test_concurrent_requests_share_one_refresh(tmp_path: Path) -> None:
    clock, spy = Clock(), Spy()
    async with (
        server(tmp_path, SITECOMMS_TOKEN_TTL_SECONDS=str(TTL)) as srv,
        signed_in(srv.base_url, tmp_path / "medic.db", clock=clock, spy=spy) as client,
    ):
        await client.sync_now()
        clock.offset = TTL  # expired, as if the device had been offline: refresh first
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*(client.sync_now() for _ in range(5)))
        assert len(spy.refresh_tokens) == 1, spy.refresh_tokens
        assert len(await my_sessions(client)) == 1, "the session is alive (a reused token would revoke it)"


async def test_a_lost_refresh_answer_is_retried_with_the_same_token(tmp_path: Path) -> None:
    clock, spy = Clock(), Spy()
    async with (
        server(tmp_path, SITECOMMS_TOKEN_TTL_SECONDS=str(TTL)) as srv,
        signed_in(srv.base_url, tmp_path / "medic.db", clock=clock, spy=spy) as client,
    ):
        before = client._session.credentials
        clock.offset = TTL + 1  # expired by the client's clock: no request without a refresh
        spy.lose = 1
        with pytest.raises(ServerUnavailable, match="lost"):
            await client.sync_now()
        assert client._session.credentials == before, "the refresh token is kept for the retry"
        await client.sync_now()  # the server answers the retry (within its grace) again
        assert len(spy.refresh_tokens) == 2 and spy.refresh_tokens[0] == spy.refresh_tokens[1]
        after = client._session.credentials
        assert after is not None and before is not None and after.refresh_token != before.refresh_token
        assert len(await my_sessions(client)) == 1


async def test_a_refused_refresh_signs_out_keeps_the_outbox_and_delivers_after_login(tmp_path: Path) -> None:
    async with server(tmp_path) as srv, signed_in(srv.base_url, tmp_path / "medic.db") as client:
        await client.start()
        await live(client)
        me = client.me
        assert me is not None
        conversation = by_name(await client.conversations(), "Admin")
        admin = await ApiUser.login(srv.base_url, ADMIN)
        async with admin.http() as http:  # a lost phone: the admin signs every device of the medic out
            response = await http.delete(f"/v1/users/{me.user_id}/sessions")
        assert response.status_code == 200, response.text

        await until(client.watch_connection(), lambda s: s is ConnectionState.SIGNED_OUT, "SIGNED_OUT")
        assert not client.has_session and client.me == me
        queued = [await client.send(conversation.id, f"kept {i}") for i in range(2)]
        with pytest.raises(SignedOut):
            await client.sync_now()
        assert await client.outbox_size() == 2

        await client.login(MEDIC, PASSWORD)
        await live(client)
        thread = await until(
            client.watch_thread(conversation.id),
            lambda t: [m.status for m in t if m.content.startswith("kept")] == ["sent", "sent"],
            "both delivered",
        )
        assert {m.idempotency_key for m in thread if m.content.startswith("kept")} == {
            m.idempotency_key for m in queued
        }


async def test_a_socket_closed_for_a_newer_one_stays_closed_until_reconnect(tmp_path: Path) -> None:
    async with (
        server(tmp_path, SITECOMMS_WS_SOCKETS_PER_USER="1") as srv,
        signed_in(srv.base_url, tmp_path / "phone.db") as phone,
    ):
        await phone.start()
        await live(phone)
        async with signed_in(srv.base_url, tmp_path / "laptop.db") as laptop:
            await laptop.start()
            await live(laptop)
            await until(phone.watch_connection(), lambda s: s is ConnectionState.TOO_MANY_SOCKETS, "displaced")
            assert laptop.state is ConnectionState.LIVE, "the phone did not come back to displace the laptop"
        # the laptop is closed: the phone takes the live connection back when asked
        phone.reconnect()
        await live(phone)


async def test_sign_out_ends_the_session_on_the_server_and_keeps_the_outbox(tmp_path: Path) -> None:
    async with server(tmp_path) as srv, signed_in(srv.base_url, tmp_path / "medic.db") as client:
        await client.sync_now()
        credentials = client._session.credentials
        assert credentials is not None
        conversation = by_name(await client.conversations(), "Admin")
        await client.send(conversation.id, "written before signing out")
        await client.sign_out()
        assert not client.has_session and client.state is ConnectionState.SIGNED_OUT
        assert await client.outbox_size() == 1
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=HTTP_TIMEOUT) as http:
            refused = await http.get("/v1/sync", headers={"Authorization": f"Bearer {credentials.access_token}"})
            renewal = await http.post("/v1/auth/refresh", json={"refresh_token": credentials.refresh_token})
        assert (refused.status_code, renewal.status_code) == (401, 401)
