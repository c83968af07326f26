"""The direct path for `POST /v1/messages` answers exactly as the FastAPI route does.

`FastSend` serves sends with `content-type: application/json`; the same request with
`application/vnd.sitecomms+json` (JSON to FastAPI, not to the direct path) is served by the
route in `messages.py`. Each case goes through both and the answers must match, apart from the
ids a new message gets.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import Stack
from tests.support import Member, Orgs

DIRECT = "application/json"
ROUTED = "application/vnd.sitecomms+json"  # FastAPI parses +json subtypes; the direct path leaves them


async def post(stack: Stack, member: Member, payload: Any, content_type: str) -> httpx.Response:
    import orjson

    headers = {**member.headers, "content-type": content_type}
    return await stack.client.post("/v1/messages", content=orjson.dumps(payload), headers=headers)


def comparable(response: httpx.Response) -> tuple[int, str, Any]:
    data = response.json()
    if "id" in data:  # a message: drop what differs between two new messages
        data = {k: v for k, v in data.items() if k not in ("id", "idempotency_key", "created_at", "position")}
    return response.status_code, response.headers["content-type"], data


async def test_both_paths_send_and_replay_alike(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    answers = {}
    for content_type in (DIRECT, ROUTED):
        payload = {"conversation_id": medic.conversation_id, "content": "same", "idempotency_key": uuid.uuid4().hex}
        first = await post(stack, medic, payload, content_type)
        again = await post(stack, medic, payload, content_type)
        assert (first.status_code, again.status_code) == (201, 200), first.text
        assert first.json() == again.json()
        assert first.json()["idempotency_key"] == payload["idempotency_key"]
        answers[content_type] = (comparable(first), comparable(again))
    assert answers[DIRECT] == answers[ROUTED]


async def test_both_paths_refuse_alike(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=2)
    medic, neighbour = world.medics
    other = await orgs.make(medics=1)
    assert medic.conversation_id and neighbour.conversation_id and other.medics[0].conversation_id
    broadcast = next(
        c["id"] for c in (await orgs.get(medic, "/v1/conversations"))["conversations"] if c["type"] == "broadcast"
    )
    used_key = uuid.uuid4().hex
    await orgs.send(medic, medic.conversation_id, "first", key=used_key)
    cases = {
        "another medic's conversation": {"conversation_id": neighbour.conversation_id},
        "another org's conversation": {"conversation_id": other.medics[0].conversation_id},
        "a conversation that never existed": {"conversation_id": str(uuid.uuid4())},
        "a medic posting to the broadcast": {"conversation_id": broadcast},
        "a key reused for other content": {"conversation_id": medic.conversation_id, "idempotency_key": used_key},
    }
    for label, override in cases.items():
        payload = {"conversation_id": medic.conversation_id, "content": "x", "idempotency_key": uuid.uuid4().hex}
        payload.update(override)
        direct = await post(stack, medic, payload, DIRECT)
        routed = await post(stack, medic, payload, ROUTED)
        assert direct.status_code in (403, 404, 409), (label, direct.text)
        assert comparable(direct) == comparable(routed), label


async def test_requests_the_direct_path_leaves_alone_get_the_routes_answers(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    good = {"conversation_id": medic.conversation_id, "content": "x", "idempotency_key": uuid.uuid4().hex}
    no_token = await stack.client.post("/v1/messages", json=good)
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"] == "Bearer"
    bad_token = await stack.client.post("/v1/messages", json=good, headers={"authorization": "Bearer nope"})
    assert bad_token.status_code == 401
    as_text = await stack.client.post(
        "/v1/messages", content=b"hello", headers={**medic.headers, "content-type": "text/plain"}
    )
    assert as_text.status_code == 422
    invalid = await post(stack, medic, {**good, "content": ""}, DIRECT)  # read by the direct path, then replayed
    assert invalid.status_code == 422
    assert "content" in invalid.json()["error"]["message"]


async def test_the_direct_path_accepts_a_charset_and_any_case_of_bearer(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    token = medic.headers["Authorization"].split(" ", 1)[1]
    payload = {"conversation_id": medic.conversation_id, "content": "x", "idempotency_key": uuid.uuid4().hex}
    response = await stack.client.post(
        "/v1/messages",
        json=payload,
        headers={"authorization": f"bearer {token}", "content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201, response.text
