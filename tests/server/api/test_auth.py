"""Sign-in and bearer tokens: every failure is a 401 in the one error shape."""

from __future__ import annotations

import time

import jwt
import pytest

from sitecomms.protocol.enums import Role
from tests.conftest import Stack
from tests.support import JWT_SECRET, PASSWORD, Orgs


async def test_login_returns_a_token_with_the_documented_claims(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    response = await stack.client.post("/v1/auth/login", json={"email": medic.email.upper(), "password": PASSWORD})
    assert response.status_code == 200
    data = response.json()
    assert data["token_type"] == "bearer"
    assert data["user"]["id"] == medic.id
    claims = jwt.decode(data["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == medic.id
    assert claims["org_id"] == world.org_id
    assert claims["role"] == "medic"
    assert claims["exp"] > time.time()
    me = await stack.client.get("/v1/me", headers={"Authorization": f"Bearer {data['access_token']}"})
    assert me.status_code == 200
    assert me.json()["user"]["id"] == medic.id
    assert me.json()["org"] == {"id": world.org_id, "name": world.name}


@pytest.mark.parametrize("email_of", ["member", "unknown"])
async def test_wrong_credentials_are_refused_alike(stack: Stack, orgs: Orgs, email_of: str) -> None:
    world = await orgs.make(medics=1)
    email = world.medics[0].email if email_of == "member" else "nobody@nowhere.test"
    response = await stack.client.post("/v1/auth/login", json={"email": email, "password": "wrong password"})
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "unauthenticated", "message": "wrong email or password"}}


def _token(secret: str, **claims: object) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_bad_tokens_are_401(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    base = {"sub": medic.id, "org_id": world.org_id, "role": Role.MEDIC.value}
    future, past = int(time.time()) + 600, int(time.time()) - 10
    bad = {
        "expired": _token(JWT_SECRET, **base, exp=past),
        "wrong signature": _token("another-secret-another-secret-another-secret", **base, exp=future),
        "malformed": "not.a.jwt",
        "no exp": _token(JWT_SECRET, **base),
        "unknown role": _token(JWT_SECRET, **{**base, "role": "superuser"}, exp=future),
        "alg none": jwt.encode({**base, "exp": future}, None, algorithm="none"),
    }
    for name, token in bad.items():
        response = await stack.client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthenticated", name
        assert response.headers["www-authenticate"] == "Bearer"
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await stack.client.get("/v1/conversations", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


async def test_a_token_for_a_user_that_does_not_exist_cannot_send(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    ghost = _token(
        JWT_SECRET,
        sub="00000000-0000-4000-8000-000000000000",
        org_id=world.org_id,
        role="admin",
        exp=int(time.time()) + 600,
    )
    headers = {"Authorization": f"Bearer {ghost}"}
    response = await stack.client.post(
        "/v1/messages",
        json={"conversation_id": world.broadcast_id, "content": "boo", "idempotency_key": "g"},
        headers=headers,
    )
    assert response.status_code == 401
    assert (await stack.client.get("/v1/me", headers=headers)).status_code == 401


async def test_every_v1_endpoint_but_login_needs_a_token(stack: Stack) -> None:
    schema = (await stack.client.get("/openapi.json")).json()
    checked = 0
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/") or path in ("/v1/auth/login", "/v1/auth/refresh"):
            continue
        concrete = (
            path.replace("{conversation_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{user_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{session_id}", "00000000-0000-4000-8000-000000000000")
        )
        for method in operations:
            response = await stack.client.request(method.upper(), concrete)
            assert response.status_code == 401, (method, path)
            checked += 1
    assert checked >= 8


async def test_health_endpoints_need_no_token(stack: Stack) -> None:
    assert (await stack.client.get("/healthz")).json() == {"status": "ok"}
    ready = await stack.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == stack.dialect
