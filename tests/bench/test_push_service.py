"""The push-service double: valid pushes (built here with py_vapid, PyJWT and http_ece, not with any
server code) are accepted and decrypted; every violation of RFC 8030/8291/8292 is refused with its
status and a recorded reason; scripted answers, expiry and waiting work, on the test's loop and
from a background thread."""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import http_ece  # type: ignore[import-untyped]
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02  # type: ignore[import-untyped]

from sitecomms.bench.push_service import PushService

TIMEOUT = 10.0
PAYLOAD = b'{"type":"message","conversation_id":"c1"}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


@dataclass
class Sender:
    """An application server: its VAPID key, and how it builds a push request."""

    key: ec.EllipticCurvePrivateKey

    @property
    def public(self) -> str:
        return b64(point(self.key))

    def token(self, aud: str, **claims: Any) -> str:
        body = {"aud": aud, "exp": int(time.time()) + 12 * 3600, "sub": "mailto:ops@example.org"} | claims
        return jwt.encode({k: v for k, v in body.items() if v is not None}, self.key, algorithm="ES256")

    def push(self, subscription: dict[str, Any], payload: bytes | None = PAYLOAD, **claims: Any) -> dict[str, Any]:
        origin = subscription["endpoint"].split("/push/")[0]
        headers = {
            "Authorization": f"vapid t={self.token(origin, **claims)}, k={self.public}",
            "TTL": "60",
            "Urgency": "high",
            "Topic": "conversation1",
        }
        body = b""
        if payload is not None:
            body = encrypt(payload, subscription)
            headers |= {"Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream"}
        return {"url": subscription["endpoint"], "headers": headers, "content": body}


def encrypt(payload: bytes, subscription: dict[str, Any]) -> bytes:
    keys = subscription["keys"]
    body: bytes = http_ece.encrypt(
        payload,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=unb64(keys["p256dh"]),
        auth_secret=unb64(keys["auth"]),
        version="aes128gcm",
    )
    return body


@pytest.fixture
def sender() -> Sender:
    return Sender(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
async def service(sender: Sender) -> AsyncIterator[PushService]:
    async with PushService(sender.public) as running:
        yield running


@pytest.fixture
async def client(service: PushService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=service.ca_file), timeout=TIMEOUT) as http:
        yield http


async def test_a_push_made_with_py_vapid_and_http_ece_is_accepted_and_decrypted(
    service: PushService, client: httpx.AsyncClient
) -> None:
    vapid = Vapid02()
    vapid.generate_keys()
    subscription = service.subscribe(b64(vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)))  # fmt: skip
    assert subscription["endpoint"].startswith(service.origin + "/push/")
    assert subscription["expirationTime"] is None
    assert len(unb64(subscription["keys"]["p256dh"])) == 65 and len(unb64(subscription["keys"]["auth"])) == 16
    exp = int(time.time()) + 3600
    authorization = vapid.sign({"aud": service.origin, "sub": "mailto:ops@example.org", "exp": exp})["Authorization"]
    headers = {"Authorization": authorization, "TTL": "86400", "Content-Encoding": "aes128gcm"}

    response = await client.post(subscription["endpoint"], headers=headers, content=encrypt(PAYLOAD, subscription))

    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith(service.origin + "/message/")
    [received] = service.received
    assert received.subscription_id == PushService.subscription_id(subscription["endpoint"])
    assert (received.payload, received.ttl, received.urgency, received.topic) == (PAYLOAD, 86400, "normal", None)
    assert received.claims == {"aud": service.origin, "sub": "mailto:ops@example.org", "exp": exp}
    assert [(a.status, a.reason) for a in service.attempts] == [(201, None)]


async def test_pushes_with_and_without_a_payload_are_recorded_as_sent(
    service: PushService, client: httpx.AsyncClient, sender: Sender
) -> None:
    first, second = service.subscribe(), service.subscribe()
    big = bytes(range(256)) * 15  # 3840 bytes: the body is still within 4096
    for request in (sender.push(first), sender.push(second, payload=None), sender.push(first, payload=big)):
        assert (await client.post(**request)).status_code == 201

    received = service.received
    assert [r.payload for r in received] == [PAYLOAD, None, big]
    assert [r.subscription_id for r in received] == [
        PushService.subscription_id(s["endpoint"]) for s in (first, second, first)
    ]
    assert {(r.ttl, r.urgency, r.topic) for r in received} == {(60, "high", "conversation1")}
    assert service.rejections == []


def mutate(request: dict[str, Any], headers: dict[str, str | None] | None = None, content: bytes | None = None) -> None:
    for name, value in (headers or {}).items():
        request["headers"].pop(name, None)
        if value is not None:
            request["headers"][name] = value
    if content is not None:
        request["content"] = content


Violation = tuple[int, str]


def hs256_token(origin: str) -> str:
    claims = {"aud": origin, "exp": int(time.time()) + 60, "sub": "mailto:ops@example.org"}
    return jwt.encode(claims, "a shared secret of at least 32 bytes", algorithm="HS256")


OTHER = ec.generate_private_key(ec.SECP256R1())


def violations(
    service: PushService, sender: Sender, subscription: dict[str, Any], request: dict[str, Any], name: str
) -> Violation:
    """Make `request` break one rule; return the status and the reason fragment it must get."""
    origin = service.origin
    other = Sender(OTHER)
    bad = {
        "no authorization": ({"Authorization": None}, (401, "no Authorization")),
        "webpush scheme": ({"Authorization": "WebPush " + sender.token(origin)}, (401, "not vapid")),
        "no k": ({"Authorization": f"vapid t={sender.token(origin)}"}, (401, "t= and k=")),
        "other key as k": ({"Authorization": f"vapid t={other.token(origin)}, k={other.public}"}, (403, "bound")),
        "bad signature": ({"Authorization": f"vapid t={other.token(origin)}, k={sender.public}"}, (403, "Signature")),
        "tampered token": (
            {"Authorization": f"vapid t={sender.token(origin)[:-4]}AAAA, k={sender.public}"},
            (403, "JWT refused"),
        ),
        "hs256": (  # the "none"/HMAC confusion: only ES256 is accepted
            {"Authorization": f"vapid t={hs256_token(origin)}, k={sender.public}"},
            (403, "JWT refused"),
        ),
        "aud with a path": (
            {"Authorization": f"vapid t={sender.token(origin + '/push')}, k={sender.public}"},
            (403, "aud"),
        ),
        "aud other port": (
            {"Authorization": f"vapid t={sender.token('https://127.0.0.1:1')}, k={sender.public}"},
            (403, "aud"),
        ),
        "aud http": (
            {"Authorization": f"vapid t={sender.token(origin.replace('https', 'http'))}, k={sender.public}"},
            (403, "aud"),
        ),
        "expired": (
            {"Authorization": f"vapid t={sender.token(origin, exp=int(time.time()) - 5)}, k={sender.public}"},
            (403, "passed"),
        ),
        "exp over 24 h": (
            {"Authorization": f"vapid t={sender.token(origin, exp=int(time.time()) + 25 * 3600)}, k={sender.public}"},
            (403, "24 h"),
        ),
        "no exp": ({"Authorization": f"vapid t={sender.token(origin, exp=None)}, k={sender.public}"}, (403, "exp")),
        "no sub": ({"Authorization": f"vapid t={sender.token(origin, sub=None)}, k={sender.public}"}, (403, "sub")),
        "sub bare email": (
            {"Authorization": f"vapid t={sender.token(origin, sub='ops@example.org')}, k={sender.public}"},
            (403, "sub"),
        ),
        "sub http": (
            {"Authorization": f"vapid t={sender.token(origin, sub='http://example.org')}, k={sender.public}"},
            (403, "sub"),
        ),
        "no ttl": ({"TTL": None}, (400, "no TTL")),
        "negative ttl": ({"TTL": "-1"}, (400, "TTL")),
        "text ttl": ({"TTL": "a day"}, (400, "TTL")),
        "bad urgency": ({"Urgency": "urgent"}, (400, "Urgency")),
        "long topic": ({"Topic": "a" * 33}, (400, "Topic")),
        "topic outside base64url": ({"Topic": "conversation+1"}, (400, "Topic")),
        "padded topic": ({"Topic": "YWJj="}, (400, "Topic")),
        "no content-encoding": ({"Content-Encoding": None}, (400, "Content-Encoding")),
        "aesgcm encoding": ({"Content-Encoding": "aesgcm"}, (400, "Content-Encoding")),
    }
    if name in bad:
        headers, expected = bad[name]
        mutate(request, headers)
        return expected
    if name == "garbage body":
        mutate(request, content=b"garbage" * 40)
        return 400, "keyid"
    if name == "corrupted body":
        body = bytearray(request["content"])
        body[-3] ^= 0xFF
        mutate(request, content=bytes(body))
        return 400, "does not decrypt"
    if name == "encrypted for another subscription":
        mutate(request, content=encrypt(PAYLOAD, service.subscribe()))
        return 400, "does not decrypt"
    if name == "oversize":
        mutate(request, content=encrypt(b"x" * 4000, subscription))
        return 413, "4096"
    raise AssertionError(name)


VIOLATIONS = [
    "no authorization", "webpush scheme", "no k", "other key as k", "bad signature", "tampered token", "hs256",
    "aud with a path", "aud other port", "aud http", "expired", "exp over 24 h", "no exp", "no sub",
    "sub bare email", "sub http", "no ttl", "negative ttl", "text ttl", "bad urgency", "long topic",
    "topic outside base64url", "padded topic", "no content-encoding", "aesgcm encoding", "garbage body",
    "corrupted body", "encrypted for another subscription", "oversize",
]  # fmt: skip


@pytest.mark.parametrize("name", VIOLATIONS)
async def test_each_violation_is_refused_with_its_status_and_reason(
    service: PushService, client: httpx.AsyncClient, sender: Sender, name: str
) -> None:
    subscription = service.subscribe()
    request = sender.push(subscription)
    assert (await client.post(**sender.push(subscription))).status_code == 201  # the unbroken request passes
    status, reason = violations(service, sender, subscription, request, name)

    response = await client.post(**request)

    assert response.status_code == status, (response.status_code, response.text)
    [rejection] = service.rejections
    assert (rejection.status, rejection.subscription_id) == (
        status,
        PushService.subscription_id(subscription["endpoint"]),
    )
    assert rejection.reason is not None and reason in rejection.reason, rejection.reason
    assert len(service.received) == 1


async def test_unknown_expired_and_wrong_method_or_path(
    service: PushService, client: httpx.AsyncClient, sender: Sender
) -> None:
    subscription = service.subscribe()
    service.expire(PushService.subscription_id(subscription["endpoint"]))
    unknown = sender.push(subscription) | {"url": service.origin + "/push/nosuchsubscription"}

    assert (await client.post(**sender.push(subscription))).status_code == 410
    assert (await client.post(**unknown)).status_code == 404
    assert (await client.get(subscription["endpoint"])).status_code == 405
    assert (await client.post(service.origin + "/other", content=b"")).status_code == 404
    assert [(a.status, a.reason) for a in service.rejections] == [
        (410, "subscription expired"), (404, "unknown subscription"), (405, "method GET"), (404, "no such path")
    ]  # fmt: skip
    assert service.received == []


async def test_scripted_answers_replace_the_next_valid_requests_answers(
    service: PushService, client: httpx.AsyncClient, sender: Sender
) -> None:
    target, bystander = service.subscribe(), service.subscribe()
    target_id = PushService.subscription_id(target["endpoint"])
    service.script(429, subscription_id=target_id, retry_after=7)
    service.script(500, subscription_id=target_id, times=2)
    service.script(413, subscription_id=target_id)
    service.script(410, subscription_id=target_id)
    service.script(503, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")

    bystander_first = await client.post(**sender.push(bystander))  # the un-targeted 503 applies to anyone
    bystander_second = await client.post(**sender.push(bystander))
    answers = [await client.post(**sender.push(target)) for _ in range(6)]

    assert (bystander_first.status_code, bystander_first.headers["Retry-After"]) == (
        503,
        "Wed, 21 Oct 2026 07:28:00 GMT",
    )
    assert bystander_second.status_code == 201
    assert [a.status_code for a in answers] == [429, 500, 500, 413, 410, 201]
    assert answers[0].headers["Retry-After"] == "7"
    assert all("Retry-After" not in a.headers for a in answers[1:])
    target_attempts = [a for a in service.attempts if a.subscription_id == target_id]
    assert [(a.status, a.scripted, a.payload) for a in target_attempts] == [
        (429, True, PAYLOAD), (500, True, PAYLOAD), (500, True, PAYLOAD), (413, True, PAYLOAD), (410, True, PAYLOAD),
        (201, False, PAYLOAD),
    ]  # fmt: skip
    assert len(service.received) == 2 and service.rejections == []


async def test_an_invalid_request_is_refused_and_leaves_the_script_for_the_next_valid_one(
    service: PushService, client: httpx.AsyncClient, sender: Sender
) -> None:
    subscription = service.subscribe()
    service.script(429, retry_after=1)
    invalid = sender.push(subscription)
    mutate(invalid, {"TTL": None})

    assert (await client.post(**invalid)).status_code == 400
    assert (await client.post(**sender.push(subscription))).status_code == 429
    assert (await client.post(**sender.push(subscription))).status_code == 201


def test_scripting_refuses_statuses_a_check_owns() -> None:
    service = PushService()
    for status in (400, 401, 403, 418):
        with pytest.raises(ValueError, match="cannot script"):
            service.script(status)


async def test_wait_for_wakes_on_a_push_and_times_out_with_a_summary(
    service: PushService, client: httpx.AsyncClient, sender: Sender
) -> None:
    subscription = service.subscribe()
    waiting = asyncio.create_task(service.wait_for(lambda s: any(a.status == 201 for a in s.attempts), TIMEOUT))
    counting = asyncio.create_task(service.wait_for(2, TIMEOUT))

    assert (await client.post(**sender.push(subscription))).status_code == 201
    async with asyncio.timeout(TIMEOUT):
        await waiting
    assert not counting.done()
    assert (await client.post(**sender.push(subscription))).status_code == 201
    async with asyncio.timeout(TIMEOUT):
        await counting

    with pytest.raises(TimeoutError, match="2 received"):
        await service.wait_for(3, 0.05)


def test_in_a_background_thread_with_blocking_and_async_waiters(sender: Sender) -> None:
    with PushService(sender.public) as service:
        subscription = service.subscribe()
        context = ssl.create_default_context(cafile=service.ca_file)
        with httpx.Client(verify=context, timeout=TIMEOUT) as http:
            woke = threading.Event()

            def blocking_wait() -> None:
                service.wait_for_sync(1, TIMEOUT)
                woke.set()

            waiter = threading.Thread(target=blocking_wait)
            waiter.start()
            assert http.post(**sender.push(subscription)).status_code == 201
            waiter.join(TIMEOUT)
            assert woke.is_set()

            async def from_another_loop() -> None:
                task = asyncio.create_task(service.wait_for(2, TIMEOUT))
                await asyncio.to_thread(lambda: http.post(**sender.push(subscription)))
                async with asyncio.timeout(TIMEOUT):
                    await task

            asyncio.run(from_another_loop())
        assert [r.payload for r in service.received] == [PAYLOAD, PAYLOAD]
    with pytest.raises(RuntimeError, match="not running"):
        _ = service.origin


def test_the_certificate_is_verified_against_ca_file_only(sender: Sender) -> None:
    with PushService(sender.public) as service, httpx.Client(timeout=TIMEOUT) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            http.post(**sender.push(service.subscribe()))
        assert service.attempts == []


async def test_malformed_http_is_answered_400_and_recorded(service: PushService) -> None:
    context = ssl.create_default_context(cafile=service.ca_file)
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(service.origin.rsplit(":", 1)[1]), ssl=context)
        writer.write(b"POST /push/x HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer
    [attempt] = service.rejections
    assert attempt.status == 400 and attempt.reason is not None and attempt.reason.startswith("malformed HTTP")
