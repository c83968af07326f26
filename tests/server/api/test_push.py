"""Push subscriptions over HTTP: the public key; subscribe (idempotent per endpoint, bound to the
caller's session), list mine, delete one; bad endpoints and keys refused; a session that ends
(sign-out, revocation, deactivation, a password change elsewhere) takes its subscriptions."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sitecomms.protocol.limits import PUSH_DEVICES_PER_USER
from sitecomms.store import push, sessions
from sitecomms.store.types import utcnow
from tests.conftest import Stack
from tests.support import PASSWORD, Member


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subscription(endpoint: str | None = None) -> dict[str, Any]:
    """What `PushSubscription.toJSON()` gives a browser: an endpoint and fresh receiver keys."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": endpoint or f"https://push.example.net/wpush/{uuid.uuid4().hex}",
        "expirationTime": None,
        "keys": {"p256dh": _b64(point), "auth": _b64(secrets.token_bytes(16))},
    }


async def _subscribe(stack: Stack, member: Member, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await stack.client.post("/v1/push/subscriptions", json=body, headers=member.headers)
    assert response.status_code == status, response.text
    return dict(response.json())


async def _mine(stack: Stack, member: Member) -> list[dict[str, Any]]:
    response = await stack.client.get("/v1/push/subscriptions", headers=member.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["subscriptions"])


async def _login(stack: Stack, member: Member) -> Member:
    """The same user on a second device (a session of its own)."""
    response = await stack.client.post("/v1/auth/login", json={"email": member.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return Member(**{**member.__dict__, "token": response.json()["access_token"]})


async def test_the_public_key_is_a_p256_point_and_stays_the_same(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    first = await stack.client.get("/v1/push/key", headers=world.admins[0].headers)
    second = await stack.client.get("/v1/push/key", headers=world.medics[0].headers)
    assert first.status_code == 200
    key = first.json()["public_key"]
    raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(raw) == 65 and raw[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # a point on the curve
    assert second.json()["public_key"] == key


async def test_subscribe_list_and_delete(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    body = subscription()
    created = await _subscribe(stack, medic, body)
    assert created["endpoint"] == body["endpoint"] and created["current"] is True
    again = await _subscribe(stack, medic, body, status=200)
    assert again["id"] == created["id"]
    assert [s["id"] for s in await _mine(stack, medic)] == [created["id"]]
    # Someone else's subscription is not found, for them as for a stranger.
    other = await stack.client.delete(f"/v1/push/subscriptions/{created['id']}", headers=world.admins[0].headers)
    assert other.status_code == 404
    deleted = await stack.client.delete(f"/v1/push/subscriptions/{created['id']}", headers=medic.headers)
    assert deleted.status_code == 204
    assert await _mine(stack, medic) == []
    gone = await stack.client.delete(f"/v1/push/subscriptions/{created['id']}", headers=medic.headers)
    assert gone.status_code == 404


async def test_subscribing_needs_a_signed_in_device(stack: Stack) -> None:
    response = await stack.client.post("/v1/push/subscriptions", json=subscription())
    assert response.status_code == 401


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.net/wpush/1",  # not https
        "https://127.0.0.1/wpush/1",  # loopback
        "https://10.1.2.3/wpush/1",  # private
        "https://169.254.169.254/latest/meta-data",  # the cloud metadata address
        "https://[::1]/wpush/1",
        "https://user:pass@push.example.net/wpush/1",  # credentials in the URL
        "ftp://push.example.net/1",
        "https://0x7f000001/wpush/1",  # 127.0.0.1 in hex, as the C resolver reads it
        "https://push.example.net/wpush/\x00",  # PostgreSQL cannot even store it
        "https://push.example.net/wpush/a b",
        "not a url",
    ],
)
async def test_an_endpoint_the_server_must_not_call_is_refused(stack: Stack, endpoint: str) -> None:
    world = await stack.orgs.make(admins=1, medics=0)
    response = await stack.client.post(
        "/v1/push/subscriptions", json=subscription(endpoint), headers=world.admins[0].headers
    )
    assert response.status_code == 422, response.text
    assert await _mine(stack, world.admins[0]) == []


@pytest.mark.parametrize(
    "keys",
    [
        {"p256dh": "not-base64!", "auth": _b64(b"0" * 16)},
        {"p256dh": _b64(b"\x04" + b"\x01" * 64), "auth": _b64(b"0" * 16)},  # not a point on the curve
        {"p256dh": subscription()["keys"]["p256dh"], "auth": _b64(b"0" * 8)},  # auth must be 16 bytes
        {"p256dh": subscription()["keys"]["p256dh"]},
    ],
)
async def test_bad_keys_are_refused(stack: Stack, keys: dict[str, str]) -> None:
    world = await stack.orgs.make(admins=1, medics=0)
    body = {**subscription(), "keys": keys}
    response = await stack.client.post("/v1/push/subscriptions", json=body, headers=world.admins[0].headers)
    assert response.status_code == 422, response.text


async def test_an_endpoint_moves_to_the_session_that_registers_it_last(stack: Stack) -> None:
    """A shared phone: the browser profile's endpoint follows whoever signed in on it."""
    world = await stack.orgs.make(admins=1, medics=2)
    first, second = world.medics
    body = subscription()
    created = await _subscribe(stack, first, body)
    moved = await _subscribe(stack, second, body, status=200)
    assert moved["id"] == created["id"] and moved["current"] is True
    assert await _mine(stack, first) == []
    assert [s["id"] for s in await _mine(stack, second)] == [created["id"]]


async def test_a_device_keeps_one_subscription(stack: Stack) -> None:
    """A browser that renews its endpoint replaces the old one (no pushes to a dead endpoint)."""
    world = await stack.orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    await _subscribe(stack, medic, subscription())
    renewed = await _subscribe(stack, medic, subscription())
    assert [s["id"] for s in await _mine(stack, medic)] == [renewed["id"]]


async def test_devices_per_user_are_bounded(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=0)
    admin = world.admins[0]
    for _ in range(PUSH_DEVICES_PER_USER):
        await _subscribe(stack, await _login(stack, admin), subscription())
    response = await stack.client.post(
        "/v1/push/subscriptions", json=subscription(), headers=(await _login(stack, admin)).headers
    )
    assert response.status_code == 409, response.text
    assert len(await _mine(stack, admin)) == PUSH_DEVICES_PER_USER


async def test_listing_marks_this_device(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    phone, laptop = world.medics[0], await _login(stack, world.medics[0])
    on_phone = await _subscribe(stack, phone, subscription())
    await _subscribe(stack, laptop, subscription())
    listed = {s["id"]: s["current"] for s in await _mine(stack, phone)}
    assert len(listed) == 2 and listed[on_phone["id"]] is True and sum(listed.values()) == 1


async def test_signing_out_removes_the_devices_subscription_only(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    phone, laptop = world.medics[0], await _login(stack, world.medics[0])
    await _subscribe(stack, phone, subscription())
    kept = await _subscribe(stack, laptop, subscription())
    response = await stack.client.post("/v1/auth/logout", headers=phone.headers)
    assert response.status_code == 204
    assert [s["id"] for s in await _mine(stack, laptop)] == [kept["id"]]


async def test_revoking_a_session_removes_its_subscription(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    phone, laptop = world.medics[0], await _login(stack, world.medics[0])
    await _subscribe(stack, phone, subscription())
    kept = await _subscribe(stack, laptop, subscription())
    sessions = (await stack.client.get("/v1/sessions", headers=laptop.headers)).json()["sessions"]
    (phone_session,) = [s for s in sessions if not s["current"] and s["device"] != "operator"] or [
        s for s in sessions if not s["current"]
    ]
    response = await stack.client.delete(f"/v1/sessions/{phone_session['id']}", headers=laptop.headers)
    assert response.status_code == 204
    assert [s["id"] for s in await _mine(stack, laptop)] == [kept["id"]]


async def test_deactivating_a_user_removes_every_subscription_of_theirs(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    medic, admin = world.medics[0], world.admins[0]
    await _subscribe(stack, medic, subscription())
    await _subscribe(stack, await _login(stack, medic), subscription())
    response = await stack.client.post(f"/v1/users/{medic.id}/deactivate", headers=admin.headers)
    assert response.status_code == 200, response.text
    reactivated = await stack.client.post(f"/v1/users/{medic.id}/reactivate", headers=admin.headers)
    assert reactivated.status_code == 200
    assert await _mine(stack, await _login(stack, medic)) == []


async def test_a_password_change_keeps_only_this_devices_subscription(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    phone = await _login(stack, world.medics[0])
    laptop = await _login(stack, world.medics[0])
    kept = await _subscribe(stack, phone, subscription())
    await _subscribe(stack, laptop, subscription())
    response = await stack.client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "another horse battery"},
        headers=phone.headers,
    )
    assert response.status_code == 204, response.text
    assert [s["id"] for s in await _mine(stack, phone)] == [kept["id"]]


async def test_a_session_revoked_while_its_request_was_on_the_way_subscribes_nothing(stack: Stack) -> None:
    world = await stack.orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    listed = (await stack.client.get("/v1/sessions", headers=medic.headers)).json()["sessions"]
    (current,) = [s for s in listed if s["current"]]
    # Revoked in the database, the access log not told yet (the request passed authentication
    # just before): the subscription would outlive its session, never pushed nor removed.
    assert await stack.db.write("test_revoke", sessions.revoke, current["id"], now=utcnow(), reason="revoked")
    response = await stack.client.post("/v1/push/subscriptions", json=subscription(), headers=medic.headers)
    assert response.status_code == 401, response.text
    assert await stack.db.read("test_subs", push.subscriptions_of, medic.id) == []
