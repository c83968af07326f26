"""`/realtime/v1/websocket` and `/auth/v1/*` over the wire, against a real `sitecomms serve`.

A raw Phoenix client (both serializers) checks what supabase-js relies on and what it never
sends: bad frames, bad bindings, oversized frames, tokens that expire or are refused, leave,
resume. The unmodified supabase-js runs in tests/compat/.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from sitecomms.protocol.cursors import Cursor
from tests.phoenix_client import Phx, phx
from tests.realtime_client import StalledClient
from tests.server.realtime.test_channel import Site, _socket_buffer_cap, running_site, send_many, short_token, site_on
from tests.servers import BACKENDS
from tests.support import PASSWORD, Member

WAIT = 10.0
VERSIONS = ["1.0.0", "2.0.0"]


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("supabase")
    # the hub's own heartbeat and idle timeout are short: Phoenix channels must not be subject to them
    async with running_site(
        f"sqlite:///{directory / 'sitecomms.db'}",
        directory / "serve.log",
        ws_heartbeat_seconds="0.3",
        ws_idle_timeout_seconds="1",
    ) as running:
        yield running


@pytest.fixture(scope="module", params=BACKENDS)
async def any_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, site: Site
) -> AsyncIterator[Site]:
    async with site_on(request.param, tmp_path_factory, site) as chosen:
        yield chosen


def inserts(org_id: str, **extra: str) -> list[dict[str, Any]]:
    return [{"event": "INSERT", "schema": "public", "table": "messages", "filter": f"org_id=eq.{org_id}", **extra}]


async def test_heartbeat_join_events_and_leave_in_both_serializers(any_site: Site) -> None:
    site = any_site
    world = await site.world(admins=1, medics=1)
    (admin,), (medic,) = world.admins, world.medics
    for vsn in VERSIONS:
        async with phx(site.base_url, vsn) as client:
            ref = await client.push("phoenix", "heartbeat", {})
            assert await client.recv() == (None, ref, "phoenix", "phx_reply", {"status": "ok", "response": {}})
            bindings = [
                *inserts(world.org_id),
                {"event": "*", "schema": "public", "table": "conversations", "filter": f"medic_id=eq.{medic.id}"},
            ]
            join_ref, frames = await client.join("realtime:room", bindings, medic.token)
            reply = frames[-1][4]
            assert reply["status"] == "ok"
            echoed = reply["response"]["postgres_changes"]
            assert [{k: v for k, v in b.items() if k != "id"} for b in echoed] == bindings
            assert all(isinstance(b["id"], int) for b in echoed)
            system = await client.until("system")
            assert system[4]["status"] == "ok" and system[4]["message"] == "Subscribed to PostgreSQL"
            # a write right after SUBSCRIBED must arrive
            sent = await site.http.send(admin.token, world.broadcast_id, f"hello {vsn}")
            change = await client.until("postgres_changes")
            assert change[4]["ids"] == [echoed[0]["id"]]
            data = change[4]["data"]
            assert data["record"]["id"] == sent["id"] and data["record"]["sender_name"] == "Admin"
            assert {c["name"] for c in data["columns"]} == set(data["record"])
            # the send also moved the broadcast's preview: a conversations change the medic_id filter excludes
            await asyncio.sleep(1.5)  # longer than the hub's idle timeout: the channel must live on
            leave = await client.push("realtime:room", "phx_leave", {}, join_ref=join_ref)
            ok = {"status": "ok", "response": {}}
            assert await client.recv() == (join_ref, leave, "realtime:room", "phx_reply", ok)  # nothing else came
            assert await client.recv() == (join_ref, join_ref, "realtime:room", "phx_close", {})


async def test_bad_bindings_and_refused_tokens_are_refused_once_with_a_close(site: Site) -> None:
    world = await site.world(admins=1, medics=1)
    medic = world.medics[0]
    async with phx(site.base_url) as client:
        bad = [{"event": "DELETE", "schema": "public", "table": "messages"}]
        join_ref, frames = await client.join("realtime:bad", bad, medic.token)
        assert frames[0][3] == "system" and frames[0][4]["extension"] == "postgres_changes"
        assert frames[0][4]["status"] == "error" and "event on messages" in frames[0][4]["message"]
        assert frames[-1][4]["status"] == "error" and "event on messages" in frames[-1][4]["response"]["reason"]
        assert (await client.recv())[:4] == (join_ref, join_ref, "realtime:bad", "phx_close")
        # a first join with no token at all (a client still restoring its session) is not told to
        # stop: a bare error reply; the second such join of the topic is
        join_ref, frames = await client.join("realtime:anon", inserts(world.org_id), None)
        assert frames[-1][4]["status"] == "error" and "access token is required" in frames[-1][4]["response"]["reason"]
        beat = await client.push("phoenix", "heartbeat", {})
        assert (await client.recv())[1:4] == (beat, "phoenix", "phx_reply")  # no phx_close came first
        for token in (None, "anon", medic.token[:-4] + "AAAA"):
            join_ref, frames = await client.join("realtime:anon", inserts(world.org_id), token)
            assert frames[-1][4]["status"] == "error"
            assert "access token is required" in frames[-1][4]["response"]["reason"]
            assert (await client.recv())[3] == "phx_close"
        unknown = await client.push("realtime:nowhere", "broadcast", {})
        assert await client.recv() == (
            None,
            unknown,
            "realtime:nowhere",
            "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}},
        )
        # and a rejoin with the token, after a join without one, joins
        await client.join("realtime:restoring", inserts(world.org_id), None)
        join_ref, frames = await client.join("realtime:restoring", inserts(world.org_id), medic.token)
        assert frames[-1][4]["status"] == "ok"


async def test_malformed_and_oversized_frames(site: Site) -> None:
    async with phx(site.base_url) as client:
        await client.ws.send('{"not": "an array"}')
        frame = await client.recv()
        assert frame[2:4] == ("phoenix", "phx_reply") and "malformed frame" in frame[4]["response"]["reason"]
        await client.ws.send(b"\x03binary broadcast push")  # ignored (P4)
        ref = await client.push("phoenix", "heartbeat", {})
        assert (await client.recv())[1] == ref  # the socket lives on
        await client.ws.send("[" + " " * (70 * 1024) + "]")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with phx(site.base_url, "3.0.0") as client:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_other_medics_and_other_orgs_never_arrive_whatever_the_filter(site: Site) -> None:
    world = await site.world(admins=1, medics=2)
    elsewhere = await site.world(admins=1, medics=0)
    medic, other = world.medics
    async with phx(site.base_url, "1.0.0") as client:
        bindings = [
            {"event": "INSERT", "schema": "public", "table": "messages"},
            *inserts(elsewhere.org_id),
            {**inserts(world.org_id)[0], "filter": f"conversation_id=eq.{other.conversation_id}"},
        ]
        _, frames = await client.join("realtime:wide", bindings, medic.token)
        ids = [b["id"] for b in frames[-1][4]["response"]["postgres_changes"]]
        await site.http.send(other.token, other.conversation_id, "other medic")
        await site.http.send(elsewhere.admins[0].token, elsewhere.broadcast_id, "other org")
        await site.http.send(medic.token, medic.conversation_id, "mine")
        change = await client.until("postgres_changes")
        assert change[4]["data"]["record"]["content"] == "mine" and change[4]["ids"] == [ids[0]]


async def test_a_refused_token_or_an_expired_one_closes_the_channel(site: Site) -> None:
    world = await site.world(admins=1, medics=1)
    medic = world.medics[0]
    async with phx(site.base_url) as client:
        join_ref, _ = await client.join("realtime:a", inserts(world.org_id), medic.token)
        await client.push("realtime:a", "access_token", {"access_token": "garbage"}, join_ref=join_ref)
        system = await client.until("system")
        while system[4]["status"] == "ok":
            system = await client.until("system")
        assert system[4]["extension"] == "system" and "Unauthorized" in system[4]["message"]
        assert (await client.until("phx_close"))[:2] == (join_ref, join_ref)
        token, _ = short_token(medic, 1.5)
        join_ref, frames = await client.join("realtime:b", inserts(world.org_id), token)
        assert frames[-1][4]["status"] == "ok"
        system = await client.until("system")
        while system[4]["status"] == "ok":
            system = await client.until("system")
        assert system[4]["message"] == "token expired"
        assert (await client.until("phx_close"))[:2] == (join_ref, join_ref)
        # a refreshed token keeps a channel past the first token's expiry
        token, _ = short_token(medic, 1.5)
        join_ref, _ = await client.join("realtime:c", inserts(world.org_id), token)
        await client.push("realtime:c", "access_token", {"access_token": medic.token}, join_ref=join_ref)
        await asyncio.sleep(2.5)
        await site.http.send(medic.token, medic.conversation_id, "still here")
        assert (await client.until("postgres_changes", "realtime:c"))[4]["data"]["record"]["content"] == "still here"


async def test_an_access_token_of_another_user_or_org_ends_the_channel_instead_of_switching_it(site: Site) -> None:
    world = await site.world(admins=1, medics=2)
    elsewhere = await site.world(admins=1, medics=0)
    medic, other = world.medics
    async with phx(site.base_url) as client:
        for n, token in enumerate((other.token, world.admins[0].token, elsewhere.admins[0].token)):
            topic = f"realtime:switch-{n}"
            join_ref, _ = await client.join(topic, inserts(world.org_id), medic.token)
            await client.push(topic, "access_token", {"access_token": token}, join_ref=join_ref)
            system = await client.until("system", topic)
            while system[4]["status"] == "ok":
                system = await client.until("system", topic)
            assert system[4]["message"] == "Unauthorized: the token is for another user"
            assert (await client.until("phx_close", topic))[:2] == (join_ref, join_ref)
        # nothing of the other medic's reaches this socket afterwards: its channels are gone
        await site.http.send(other.token, other.conversation_id, "not for you")
        ref = await client.push("phoenix", "heartbeat", {})
        assert (await client.recv())[1:4] == (ref, "phoenix", "phx_reply")


async def test_resume_replays_what_was_missed_and_a_bad_cursor_says_resync(any_site: Site) -> None:
    site = any_site
    world = await site.world(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    async with phx(site.base_url) as client:
        await client.join("realtime:r", inserts(world.org_id), medic.token, resume_cursor=None)
        await site.http.send(admin.token, world.broadcast_id, "seen")
        seen = (await client.until("postgres_changes"))[4]["data"]["record"]
        cursor = seen["cursor"]
        assert Cursor.parse(cursor, world.org_id).position == seen["position"]
    for n in range(3):
        await site.http.send(admin.token, world.broadcast_id, f"missed {n}")
    async with phx(site.base_url, "1.0.0") as client:
        await client.join("realtime:r", inserts(world.org_id), medic.token, resume_cursor=cursor)
        got = [(await client.until("postgres_changes"))[4]["data"]["record"]["content"] for _ in range(3)]
        assert got == ["missed 0", "missed 1", "missed 2"]
        await site.http.send(admin.token, world.broadcast_id, "live")
        assert (await client.until("postgres_changes"))[4]["data"]["record"]["content"] == "live"
        elsewhere = await site.world(admins=1, medics=0)
        foreign = str(Cursor(1, elsewhere.org_id))
        await client.join("realtime:s", inserts(world.org_id), medic.token, resume_cursor=foreign)
        system = await client.until("system", "realtime:s")
        while system[4]["status"] == "ok":
            system = await client.until("system", "realtime:s")
        assert system[4]["code"] == "resync" and "another organisation" in system[4]["message"]


async def test_channels_per_socket_are_bounded(site: Site) -> None:
    world = await site.world(admins=1, medics=1)
    medic = world.medics[0]
    async with phx(site.base_url) as client:
        for n in range(10):
            _, frames = await client.join(f"realtime:{n}", [], medic.token)
            assert frames[-1][4]["status"] == "ok"
        _, frames = await client.join("realtime:one-too-many", [], medic.token)
        assert "too_many_channels" in frames[-1][4]["response"]["reason"]


async def test_the_channels_of_one_socket_count_as_one_socket_against_the_users_cap(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two sockets per user here: a tab's socket with three channels and another tab's are two;
    a third socket closes every channel of the oldest (with phx_close: the app recreates them)."""
    directory = tmp_path_factory.mktemp("supabase-cap")
    async with running_site(
        f"sqlite:///{directory / 'sitecomms.db'}", directory / "serve.log", ws_sockets_per_user="2"
    ) as capped:
        world = await capped.world(admins=1, medics=1)
        medic = world.medics[0]
        async with phx(capped.base_url) as first, phx(capped.base_url) as second, phx(capped.base_url) as third:
            for n in range(3):
                _, frames = await first.join(f"realtime:tab1-{n}", inserts(world.org_id), medic.token)
                assert frames[-1][4]["status"] == "ok"
            _, frames = await second.join("realtime:tab2", inserts(world.org_id), medic.token)
            assert frames[-1][4]["status"] == "ok"
            await capped.http.send(world.admins[0].token, world.broadcast_id, "to both tabs")
            for client, topics in ((first, 3), (second, 1)):
                got = set()
                while len(got) < topics:  # each channel of the tab has it: none was closed
                    change = await client.until("postgres_changes")
                    if change[4]["data"]["record"]["content"] == "to both tabs":
                        got.add(change[2])
            _, frames = await third.join("realtime:tab3", inserts(world.org_id), medic.token)
            assert frames[-1][4]["status"] == "ok"
            closed = set()
            while len(closed) < 3:
                frame = await first.until("phx_close")
                closed.add(frame[2])
            assert closed == {f"realtime:tab1-{n}" for n in range(3)}
            beat = await second.push("phoenix", "heartbeat", {})
            while (frame := await second.recv())[1] != beat:
                assert frame[3] != "phx_close", "the second tab's channel was closed"


# --- GoTrue ----------------------------------------------------------------------------------


async def test_gotrue_sign_in_refresh_user_and_logout(site: Site) -> None:
    world = await site.world(admins=1, medics=1)
    medic: Member = world.medics[0]
    http = site.http.client
    wrong = await http.post("/auth/v1/token?grant_type=password", json={"email": medic.email, "password": "nope"})
    assert wrong.status_code == 400
    assert wrong.json() == {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"}
    answer = await http.post(
        "/auth/v1/token?grant_type=password",
        json={"email": medic.email, "password": PASSWORD, "gotrue_meta_security": {}},
        headers={"apikey": "anything"},
    )
    assert answer.status_code == 200, answer.text
    session = answer.json()
    assert session["token_type"] == "bearer" and 0 < session["expires_in"] <= 15 * 60
    assert session["user"]["id"] == medic.id and session["user"]["aud"] == "authenticated"
    assert session["user"]["app_metadata"]["org_id"] == world.org_id
    bearer = {"Authorization": f"Bearer {session['access_token']}"}
    user = await http.get("/auth/v1/user", headers=bearer)
    assert user.status_code == 200 and user.json()["email"] == medic.email
    refresh = {"refresh_token": session["refresh_token"]}
    refreshed = await http.post("/auth/v1/token?grant_type=refresh_token", json=refresh)
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"] != session["refresh_token"]
    unknown = await http.post("/auth/v1/token?grant_type=refresh_token", json={"refresh_token": "x.y"})
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "refresh_token_not_found"
    grant = await http.post("/auth/v1/token?grant_type=magic", json={})
    assert grant.status_code == 400 and grant.json()["error_code"] == "unsupported_grant_type"
    malformed = await http.post(
        "/auth/v1/token?grant_type=password", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and set(malformed.json()) == {"code", "error_code", "msg"}
    assert (await http.post("/auth/v1/logout?scope=global", headers=bearer)).status_code == 204
    gone = await http.get("/auth/v1/user", headers=bearer)
    assert gone.status_code == 403 and gone.json()["error_code"] == "bad_jwt"
    assert set(gone.json()) == {"code", "error_code", "msg"}


async def test_gotrue_logout_scopes_global_local_and_bad(site: Site) -> None:
    """GoTrue's scopes: `global` (supabase-js's default) ends every session of the user, `local`
    only this one; an unknown scope is refused and ends nothing."""
    world = await site.world(admins=0, medics=2)
    medic, other = world.medics
    http = site.http.client

    async def sign_in(member: Member) -> dict[str, str]:
        body = {"email": member.email, "password": PASSWORD}
        answer = await http.post("/auth/v1/token?grant_type=password", json=body)
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    async def alive(headers: dict[str, str]) -> bool:
        return (await http.get("/auth/v1/user", headers=headers)).status_code == 200

    phone, web, elsewhere = await sign_in(medic), await sign_in(medic), await sign_in(other)
    bad = await http.post("/auth/v1/logout?scope=everything", headers=web)
    assert bad.status_code == 400 and bad.json()["error_code"] == "validation_failed"
    assert await alive(phone) and await alive(web)
    assert (await http.post("/auth/v1/logout?scope=local", headers=web)).status_code == 204
    assert await alive(phone) and not await alive(web)
    web = await sign_in(medic)
    assert (await http.post("/auth/v1/logout", headers=web)).status_code == 204  # the default: global
    assert not await alive(phone) and not await alive(web)
    assert await alive(elsewhere), "another user's session is untouched"


async def test_gotrue_logout_scope_others_signs_the_other_devices_out_and_keeps_this_one(site: Site) -> None:
    """supabase-js keeps its session after `signOut({scope: "others"})`: the server must too, and
    must end the user's other sessions (the one asked for: e.g. a lost phone)."""
    world = await site.world(admins=0, medics=1)
    medic = world.medics[0]
    http = site.http.client
    sign_in = {"email": medic.email, "password": PASSWORD}
    here, there = [
        (await http.post("/auth/v1/token?grant_type=password", json=sign_in)).json()["access_token"] for _ in range(2)
    ]
    assert (
        await http.post("/auth/v1/logout?scope=others", headers={"Authorization": f"Bearer {here}"})
    ).status_code == 204
    kept = await http.get("/auth/v1/user", headers={"Authorization": f"Bearer {here}"})
    assert kept.status_code == 200, kept.text
    gone = await http.get("/auth/v1/user", headers={"Authorization": f"Bearer {there}"})
    assert gone.status_code == 403 and gone.json()["error_code"] == "bad_jwt"


async def test_gotrue_refresh_token_reuse_signs_the_session_out_and_closes_its_channels(site: Site) -> None:
    """A refresh token used again past the retry grace (two rotations behind) is theft, as on
    /v1/auth/refresh: the session ends, the current tokens stop working, its channel closes."""
    world = await site.world(admins=0, medics=1)
    medic = world.medics[0]
    http = site.http.client

    async def refresh(token: str) -> Any:
        return await http.post("/auth/v1/token?grant_type=refresh_token", json={"refresh_token": token})

    first = await http.post("/auth/v1/token?grant_type=password", json={"email": medic.email, "password": PASSWORD})
    stale = first.json()["refresh_token"]
    second = (await refresh(stale)).json()
    current = (await refresh(second["refresh_token"])).json()
    async with phx(site.base_url) as client:
        join_ref, frames = await client.join("realtime:reuse", inserts(world.org_id), current["access_token"])
        assert frames[-1][4]["status"] == "ok"
        reused = await refresh(stale)
        assert reused.status_code == 400 and reused.json()["error_code"] == "refresh_token_already_used"
        system = await client.until("system")
        while system[4]["status"] == "ok":
            system = await client.until("system")
        assert "signed out" in system[4]["message"]
        assert (await client.until("phx_close"))[:2] == (join_ref, join_ref)
    assert (await refresh(current["refresh_token"])).status_code == 400
    bearer = {"Authorization": f"Bearer {current['access_token']}"}
    assert (await http.get("/auth/v1/user", headers=bearer)).status_code == 403


# --- a client that stops reading -------------------------------------------------------------


async def stalled_phoenix(site: Site, token: str, org_id: str) -> StalledClient:
    """A raw socket with a small receive window that joins a channel, reads up to the join's
    system message, and then reads nothing until `drain()`."""
    loop = asyncio.get_running_loop()
    uri = parse_uri(site.base_url.replace("http", "ws") + "/realtime/v1/websocket?apikey=anon&vsn=1.0.0")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    protocol = ClientProtocol(uri, max_size=None)
    try:
        async with asyncio.timeout(WAIT):
            await loop.sock_connect(sock, (uri.host, uri.port))
            protocol.send_request(protocol.connect())
            await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
            while protocol.state is State.CONNECTING:
                protocol.receive_data(await loop.sock_recv(sock, 65536))
            client = StalledClient(sock, protocol)
            join = {"config": {"postgres_changes": inserts(org_id)}, "access_token": token}
            frame = {"topic": "realtime:stalled", "event": "phx_join", "payload": join, "ref": "1", "join_ref": "1"}
            protocol.send_text(orjson.dumps(frame))
            await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
            while not any(f.get("event") == "system" for f in client.frames):
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise ConnectionError("closed before the join was answered")
                protocol.receive_data(data)
                client._collect()
    except BaseException:
        sock.close()
        raise
    return client


@pytest.fixture(scope="module")
async def tight(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("supabase-tight")
    async with running_site(
        f"sqlite:///{directory / 'sitecomms.db'}",
        directory / "serve.log",
        ws_queue_frames="20",
        ws_hello_timeout_seconds="1",
    ) as running:
        yield running


async def test_a_channel_that_stops_reading_is_cut_off_without_holding_up_the_others(tight: Site) -> None:
    world = await tight.world(admins=2, medics=1)
    medic = world.medics[0]
    stalled = await stalled_phoenix(tight, world.admins[1].token, world.org_id)
    try:
        async with phx(tight.base_url) as healthy:
            await healthy.join("realtime:healthy", inserts(world.org_id), world.admins[0].token)
            await healthy.until("system")
            size = 3900
            count = min(3000, (_socket_buffer_cap() + 2 * 1024 * 1024) // (size + 800) + 1)
            sent = await send_many(tight.http, medic, str(medic.conversation_id), count, tag="flood", size=size - 20)
            last = max(message["position"] for message in sent.values())
            while (await healthy.until("postgres_changes"))[4]["data"]["record"]["position"] != last:
                pass
        began = time.monotonic()
        try:
            await stalled.drain(60)
        except TimeoutError:
            pytest.fail(f"the server never ended the stalled socket ({len(stalled.frames)} frames read)")
        assert stalled.eof
        changes = [f for f in stalled.frames if f.get("event") == "postgres_changes"]
        assert len(changes) < count, "it was cut off, not sent everything"
        assert stalled.close_code in (None, 1013)  # told to reconnect, if it read again in time
        assert time.monotonic() - began < 20, "cut off when it stalled, not when it went idle"
    finally:
        stalled.close()


async def test_heartbeats_alone_do_not_hold_a_socket_without_a_channel(tight: Site) -> None:
    """As /v1/realtime's hello timeout: a socket that has no channel (never joined, refused, or
    left) is closed after the hello timeout (1 s here), heartbeats or not; one with a channel lives."""
    world = await tight.world(admins=0, medics=1)
    medic = world.medics[0]

    async def heartbeats_until_closed(client: Phx, at_least: float) -> float:
        began = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(WAIT):
                while True:
                    ref = await client.push("phoenix", "heartbeat", {})
                    assert (await client.until("phx_reply"))[1] == ref
                    await asyncio.sleep(0.2)  # a heartbeat every 0.2 s: far more often than the timeout
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        took = time.monotonic() - began
        assert at_least <= took < 5, took
        return took

    async with phx(tight.base_url) as anonymous:
        await heartbeats_until_closed(anonymous, 0.5)
    async with phx(tight.base_url) as refused:
        _, frames = await refused.join("realtime:anon", inserts(world.org_id), "anon-key")
        assert frames[-1][4]["status"] == "error"
        await heartbeats_until_closed(refused, 0.5)
    async with phx(tight.base_url) as member:
        join_ref, _ = await member.join("realtime:mine", inserts(world.org_id), medic.token)
        await member.until("system")
        for _ in range(10):  # 2 s with a channel: past the timeout
            ref = await member.push("phoenix", "heartbeat", {})
            assert (await member.until("phx_reply"))[1] == ref
            await asyncio.sleep(0.2)
        await member.push("realtime:mine", "phx_leave", {}, join_ref=join_ref)
        await member.until("phx_close")
        await heartbeats_until_closed(member, 0.5)


async def test_gotrue_sign_in_is_throttled_and_audited_as_every_sign_in(tight: Site) -> None:
    # on its own server: the throttle counts this test's failures against 127.0.0.1 too
    world = await tight.world(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    http = tight.http.client
    ok = await http.post("/auth/v1/token?grant_type=password", json={"email": medic.email, "password": PASSWORD})
    assert ok.status_code == 200, ok.text
    answers = []
    for _ in range(8):
        wrong = await http.post("/auth/v1/token?grant_type=password", json={"email": medic.email, "password": "x"})
        answers.append(wrong.status_code)
        if wrong.status_code == 429:
            assert wrong.json()["error_code"] == "over_request_rate_limit" and int(wrong.headers["Retry-After"]) >= 1
            break
    assert answers[0] == 400 and answers[-1] == 429, answers
    audit = await tight.http.get(admin.token, "/v1/audit", user_id=medic.id)
    kinds = [event["kind"] for event in audit["events"]]
    assert "sign_in" in kinds and kinds.count("sign_in_failed") == answers.count(400), kinds
