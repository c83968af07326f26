"""A local RFC 8030 push service for tests and `sitecomms bench`: HTTPS on 127.0.0.1, strict checks.

`PushService` hands out subscriptions (`subscribe`: a fresh receiver P-256 key and auth secret,
bound to one VAPID key) and answers `POST /push/<id>` as a push service must: the VAPID
Authorization (RFC 8292: ES256 JWT verified against `k`, which must be the bound key; `aud` the
origin; `exp` in the future and at most 24 h ahead; `sub` a mailto: or https: URI; 401 when
absent, 403 when invalid), the TTL, Urgency and Topic headers (RFC 8030; 400), and the body,
which must be `aes128gcm` (RFC 8291) and is decrypted, every time, with http_ece and the
subscription's private key (400 if it does not decrypt, 413 above 4096 bytes). A valid push
answers 201 with a Location and lands in `.received`; every request lands in `.attempts`, with
the refusal's reason (`.rejections`). `.script()` makes valid requests answer 404/410/413/429/5xx
instead, `.expire()` makes a subscription answer 410. JWT verification is cached per token
(the claims' times are still checked per request). There is no switch to skip decryption: a push
costs ~165 µs of CPU with it, TLS included (measured: 10,000 pushes on 32 keep-alive connections,
3,300-5,000 accepted/s on the 2-core dev machine while another load ran). `at` fields are
time.monotonic(). It runs on the caller's loop (`async with`) or in its own thread
(`start()`/`stop()`, `with`); all methods are thread-safe, and `wait_for` / `wait_for_sync` wake
on each request (no polling).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import http_ece  # type: ignore[import-untyped]
import httptools
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sitecomms.bench.local_tls import make_certificates

MAX_BODY = 4096  # RFC 8030 §7.2: the payload size a push service must accept
MAX_EXP_AHEAD = 24 * 3600  # RFC 8292 §2: exp no more than 24 h after the request
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_DIGITS = re.compile(r"[0-9]{1,10}")
_PATH = re.compile(rb"/push/([A-Za-z0-9_-]{1,64})")
_REASONS = {201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 410: "Gone", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip
_JWT_CACHE_LIMIT = 65536

Condition = int | Callable[["PushService"], bool]


@dataclass(frozen=True, slots=True)
class Received:
    """A push the service accepted (201). `at` is time.monotonic()."""

    subscription_id: str
    payload: bytes | None  # decrypted; None for a push without a body
    ttl: int
    urgency: str
    topic: str | None
    claims: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class Attempt:
    """Any request and its answer: refused by a check (`reason`), scripted, or accepted."""

    subscription_id: str | None
    status: int
    reason: str | None  # why a check refused it; None when accepted or scripted
    scripted: bool
    payload: bytes | None  # decrypted, when the request passed the checks
    at: float  # time.monotonic()


@dataclass(slots=True)
class _Subscription:
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    vapid_key: bytes  # the 65-byte point it is bound to
    expired: bool = False


@dataclass(slots=True)
class _Script:
    status: int
    subscription_id: str | None
    retry_after: str | None
    times: int


@dataclass(slots=True)
class _Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


class PushService:
    """The push-service double; see the module docstring. Single use: start it once."""

    def __init__(self, application_server_key: str | None = None) -> None:
        self._default_key = application_server_key
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._subscriptions: dict[str, _Subscription] = {}
        self._scripts: list[_Script] = []
        self._received: list[Received] = []
        self._attempts: list[Attempt] = []
        self._jwt_cache: dict[tuple[str, bytes], dict[str, Any] | str] = {}
        self._public_keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        directory = Path(tempfile.mkdtemp(prefix="sitecomms-push-"))
        self._remove_files = weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
        self._used = False
        certificates = make_certificates(directory, ca_name="SiteComms push-service double CA")
        self.ca_file = certificates.ca_file
        self._ssl = certificates.server_context()
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Future[None] | None = None
        self._port = 0

    @property
    def origin(self) -> str:
        if not self._port:
            raise RuntimeError("the push service is not running")
        return f"https://127.0.0.1:{self._port}"

    # -- running ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._close()

    def start(self) -> Self:
        """Serve from a background thread with its own event loop; returns once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            try:
                await self._open()
                self._stop = asyncio.get_running_loop().create_future()
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                ready.set()
            try:
                await self._stop
            finally:
                await self._close()

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), name="push-service", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(_wake, self._stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _open(self) -> None:
        if self._used:
            raise RuntimeError("a PushService is started once")
        self._used = True
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), "127.0.0.1", 0, ssl=self._ssl, backlog=1024
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        async with asyncio.timeout(10):
            await self._server.wait_closed()
        self._server, self._port = None, 0
        self._remove_files()

    # -- subscriptions and scripting -----------------------------------------------------------

    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A new subscription bound to that VAPID key, as PushSubscription.toJSON() gives it."""
        vapid = application_server_key or self._default_key
        if vapid is None:
            raise ValueError("subscribe needs the application server key (or give it to PushService)")
        vapid_point = _unb64url(vapid)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), vapid_point)  # a P-256 point
        key = ec.generate_private_key(ec.SECP256R1())
        subscription = _Subscription(key=key, auth=secrets.token_bytes(16), vapid_key=vapid_point)
        subscription_id = secrets.token_urlsafe(16)
        with self._lock:
            self._subscriptions[subscription_id] = subscription
        return {
            "endpoint": f"{self.origin}/push/{subscription_id}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(_point(key.public_key())), "auth": b64url(subscription.auth)},
        }

    @staticmethod
    def subscription_id(endpoint: str) -> str:
        return endpoint.rsplit("/", 1)[-1]

    def expire(self, subscription_id: str) -> None:
        """From now on that subscription answers 410 Gone."""
        with self._lock:
            self._subscriptions[subscription_id].expired = True

    def script(
        self, status: int, *, subscription_id: str | None = None, retry_after: float | str | None = None, times: int = 1
    ) -> None:
        """The next `times` valid requests (to that subscription, or to any) answer `status`."""
        if status not in _REASONS or status in (400, 401, 403, 405):
            raise ValueError(f"cannot script {status}")
        after = (
            None
            if retry_after is None
            else str(int(retry_after) if isinstance(retry_after, float | int) else retry_after)
        )
        with self._lock:
            self._scripts.append(_Script(status, subscription_id, after, times))

    # -- what happened -------------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def rejections(self) -> list[Attempt]:
        """Requests a check refused (scripted answers are not refusals)."""
        with self._lock:
            return [attempt for attempt in self._attempts if attempt.reason is not None]

    def received_count(self) -> int:
        with self._lock:
            return len(self._received)

    async def wait_for(self, condition: Condition, timeout: float) -> None:  # noqa: ASYNC109 (the contract's shape)
        """Until `condition` (a count of received pushes, or a predicate on this service) holds."""
        check = self._check_of(condition)
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    woken = loop.create_future()
                    with self._lock:
                        self._async_waiters.append((loop, woken))
                    if check():
                        return
                    await woken
        except TimeoutError:
            raise TimeoutError(self._summary(condition, timeout)) from None
        finally:
            with self._lock:
                self._async_waiters = [(lp, f) for lp, f in self._async_waiters if f is not woken]

    def wait_for_sync(self, condition: Condition, timeout: float) -> None:
        """Blocking `wait_for`, for threads other than the one the service runs on."""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("wait_for_sync would block the loop the service runs on: await wait_for there")
        check = self._check_of(condition)
        with self._changed:
            if not self._changed.wait_for(check, timeout):
                raise TimeoutError(self._summary(condition, timeout))

    def _check_of(self, condition: Condition) -> Callable[[], bool]:
        if isinstance(condition, int):
            return lambda: self.received_count() >= condition
        return lambda: condition(self)

    def _summary(self, condition: Condition, timeout: float) -> str:
        with self._lock:
            last = [(a.status, a.reason) for a in self._attempts[-3:]]
            return f"{condition!r} not met in {timeout} s: {len(self._received)} received, last attempts {last}"

    def _record(self, attempt: Attempt, received: Received | None) -> None:
        current = asyncio.get_running_loop()
        with self._lock:
            self._attempts.append(attempt)
            if received is not None:
                self._received.append(received)
            self._changed.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, woken in waiters:
            if loop is current:
                _wake(woken)
            else:
                loop.call_soon_threadsafe(_wake, woken)

    # -- a request -----------------------------------------------------------------------------

    def _handle(self, method: bytes, url: bytes, headers: dict[str, str], body: bytes, oversize: bool) -> _Answer:
        at = time.monotonic()
        subscription_id: str | None = None
        try:
            if method != b"POST":
                raise _Refused(405, f"method {method.decode('latin-1')}")
            match = _PATH.fullmatch(url)
            if match is None:
                raise _Refused(404, "no such path")
            subscription_id = match[1].decode()
            with self._lock:
                subscription = self._subscriptions.get(subscription_id)
            if subscription is None:
                raise _Refused(404, "unknown subscription")
            if subscription.expired:
                raise _Refused(410, "subscription expired")
            claims = self._check_vapid(subscription, headers.get("authorization"))
            ttl, urgency, topic = _check_headers(headers)
            payload = self._check_body(subscription, headers, body, oversize)
        except _Refused as refused:
            self._record(Attempt(subscription_id, refused.status, refused.reason, False, None, at), None)
            return _Answer(refused.status, body=refused.reason.encode())
        script = self._take_script(subscription_id)
        if script is not None and script.status != 201:
            self._record(Attempt(subscription_id, script.status, None, True, payload, at), None)
            extra = [("Retry-After", script.retry_after)] if script.retry_after and script.status in (429, 503) else []
            return _Answer(script.status, extra, b"scripted")
        received = Received(subscription_id, payload, ttl, urgency, topic, dict(claims), at)
        self._record(Attempt(subscription_id, 201, None, script is not None, payload, at), received)
        return _Answer(201, [("Location", f"{self.origin}/message/{secrets.token_urlsafe(12)}")])

    def _take_script(self, subscription_id: str) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.subscription_id in (None, subscription_id):
                    script.times -= 1
                    if script.times <= 0:
                        self._scripts.remove(script)
                    return script
        return None

    def _check_vapid(self, subscription: _Subscription, authorization: str | None) -> dict[str, Any]:
        if authorization is None:
            raise _Refused(401, "no Authorization")
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise _Refused(401, f"Authorization scheme {scheme!r} is not vapid")
        params: dict[str, str] = {}
        for part in rest.split(","):
            name, equals, value = part.strip().partition("=")
            if not equals or name in params:
                raise _Refused(401, "malformed vapid parameters")
            params[name] = value
        if set(params) != {"t", "k"}:
            raise _Refused(401, "vapid needs exactly t= and k=")
        try:
            k = _unb64url(params["k"])
        except ValueError:
            raise _Refused(403, "k is not base64url") from None
        if k != subscription.vapid_key:
            raise _Refused(403, "k is not the key the subscription is bound to")
        claims = self._verified_claims(params["t"], k)
        now = time.time()
        if claims.get("aud") != self.origin:
            raise _Refused(403, f"aud {claims.get('aud')!r} is not {self.origin!r}")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _Refused(403, "exp missing or not a number")
        if exp <= now:
            raise _Refused(403, "exp has passed")
        if exp > now + MAX_EXP_AHEAD:
            raise _Refused(403, "exp more than 24 h ahead")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _Refused(403, f"sub {sub!r} is not a mailto: or https: URI")
        return claims

    def _verified_claims(self, token: str, k: bytes) -> dict[str, Any]:
        cached = self._jwt_cache.get((token, k))
        if cached is None:
            cached = self._verify_jwt(token, k)
            if len(self._jwt_cache) >= _JWT_CACHE_LIMIT:
                self._jwt_cache.clear()
            self._jwt_cache[(token, k)] = cached
        if isinstance(cached, str):
            raise _Refused(403, cached)
        return cached

    def _verify_jwt(self, token: str, k: bytes) -> dict[str, Any] | str:
        key = self._public_keys.get(k)
        if key is None:
            try:
                key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), k)
            except ValueError:
                return "k is not a P-256 point"
            self._public_keys[k] = key
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["ES256"], options={"verify_exp": False, "verify_aud": False}
            )
        except jwt.PyJWTError as exc:
            return f"JWT refused: {type(exc).__name__}: {exc}"
        return claims

    def _check_body(
        self, subscription: _Subscription, headers: dict[str, str], body: bytes, oversize: bool
    ) -> bytes | None:
        if oversize or len(body) > MAX_BODY:
            raise _Refused(413, f"body over {MAX_BODY} bytes")
        encoding = headers.get("content-encoding")
        if not body:
            if encoding is not None:
                raise _Refused(400, "Content-Encoding without a body")
            return None
        if encoding != "aes128gcm":
            raise _Refused(400, f"Content-Encoding {encoding!r} is not aes128gcm")
        if len(body) < 21 or body[20] != 65:
            raise _Refused(400, "aes128gcm header: keyid is not a 65-byte P-256 point")
        try:
            payload: bytes = http_ece.decrypt(
                body, private_key=subscription.key, auth_secret=subscription.auth, version="aes128gcm"
            )
        except Exception as exc:  # http_ece raises several kinds for a body that is not ours
            raise _Refused(400, f"does not decrypt: {type(exc).__name__}") from None
        return payload


def _check_headers(headers: dict[str, str]) -> tuple[int, str, str | None]:
    ttl = headers.get("ttl")
    if ttl is None:
        raise _Refused(400, "no TTL")
    if not _DIGITS.fullmatch(ttl):
        raise _Refused(400, f"TTL {ttl!r} is not a non-negative integer")
    urgency = headers.get("urgency", "normal")
    if urgency not in URGENCIES:
        raise _Refused(400, f"Urgency {urgency!r}")
    topic = headers.get("topic")
    if topic is not None and not _TOPIC.fullmatch(topic):
        raise _Refused(400, f"Topic {topic!r} is not 1-32 base64url characters")
    return int(ttl), urgency, topic


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses, the service answers each request in order."""

    def __init__(self, service: PushService) -> None:
        self._service = service
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._oversize = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._service._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._service._connections.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._service._record(Attempt(None, 400, f"malformed HTTP: {exc}", False, None, time.monotonic()), None)
            self._respond(_Answer(400, body=b"malformed HTTP"), keep_alive=False)

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._oversize = b"", {}, bytearray(), False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1").strip()
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_BODY:
            self._oversize = True
        else:
            self._body += body

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        answer = self._service._handle(method, self._url, self._headers, bytes(self._body), self._oversize)
        self._respond(answer, keep_alive=self._parser.should_keep_alive())

    def _respond(self, answer: _Answer, *, keep_alive: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        head = [f"HTTP/1.1 {answer.status} {_REASONS[answer.status]}", f"Content-Length: {len(answer.body)}"]
        head += [f"{name}: {value}" for name, value in answer.headers]
        if not keep_alive:
            head.append("Connection: close")
        self._transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)
        if not keep_alive:
            self._transport.close()
