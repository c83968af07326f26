"""Web Push messages (RFC 8291 payload encryption, RFC 8292 VAPID): the key, the body, the request.

`VapidKey` is the server's P-256 key pair, kept in a PEM file for its owner only (mode 0600;
`VapidKey.open` creates it on first start, as `keys.py` does the token keys, through
`private_files`); its `public_key` is what a browser's `applicationServerKey` takes, and
`authorization` the `vapid t=<ES256 JWT>, k=<key>` header, signed once per push-service origin
and reused until less than an hour of its 12 h remains. `encrypt` makes the `aes128gcm` body for
one subscription (http_ece, a fresh ephemeral key and salt each call); `build_request` puts
headers and body together into a `PushRequest`, which `outbound.Outbound` sends. No cryptography
is written here: http_ece, PyJWT and cryptography do it all.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sitecomms.server.private_files import KeyFileError, read_private, write_private

__all__ = ["PushRequest", "VapidKey", "build_request", "encrypt", "origin_of", "topic_for", "validate_keys"]

TOKEN_SECONDS = 12 * 3600  # a VAPID JWT's lifetime (RFC 8292 allows at most 24 h)
RESIGN_SECONDS = 3600  # a cached JWT is signed again when less than this remains
RECORD_SIZE = 4096
AUTH_BYTES = 16
POINT_BYTES = 65  # an uncompressed P-256 point: 0x04 || x || y
_CACHED_ORIGINS = 1024  # the token cache is emptied when it holds this many (origin, subject) pairs
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_HOLDS = "the Web Push (VAPID) private key"


class VapidKey:
    """The server's VAPID key pair. Make one with `open(path)` (or `generate()`, without a file)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("a VAPID key is a P-256 key")
        self._private_key = private_key
        point = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key: str = _b64(point)
        self._tokens: dict[tuple[str, str], tuple[float, str]] = {}  # (origin, subject) -> (exp, header)
        self._lock = threading.Lock()

    @classmethod
    def generate(cls) -> VapidKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def open(cls, path: Path) -> VapidKey:
        """The key in the PEM file at `path`, which is created (0600) if there is none yet; when two
        processes create it at once, both use the one that was linked into place first.

        KeyFileError when the file may be read by group or others, or is not a P-256 private key."""
        try:
            return cls._read(path)
        except FileNotFoundError:
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            with contextlib.suppress(FileExistsError):  # lost the race: read the winner's
                write_private(path, pem, replace=False)
            return cls._read(path)

    @classmethod
    def _read(cls, path: Path) -> VapidKey:
        raw, _ = read_private(path, holds=_HOLDS)
        try:
            key = serialization.load_pem_private_key(raw, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("not a P-256 private key")
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(
                f"the key file {path} is malformed ({exc}); it holds {_HOLDS}: restore it from a backup "
                f"(a new key, made by removing the file, ends every browser's subscription)"
            ) from exc
        return cls(key)

    def authorization(self, endpoint: str, *, subject: str, now: float) -> str:
        """The `Authorization` header for a push to `endpoint`: `vapid t=<JWT>, k=<public key>`,
        with aud = the endpoint's origin, exp = now + 12 h and sub = `subject`."""
        audience = origin_of(endpoint)
        with self._lock:
            cached = self._tokens.get((audience, subject))
            if cached is not None and cached[0] - now >= RESIGN_SECONDS:
                return cached[1]
        expires = int(now) + TOKEN_SECONDS
        token = jwt.encode({"aud": audience, "exp": expires, "sub": subject}, self._private_key, algorithm="ES256")
        header = f"vapid t={token}, k={self.public_key}"
        with self._lock:
            if len(self._tokens) >= _CACHED_ORIGINS:
                self._tokens.clear()
            self._tokens[(audience, subject)] = (expires, header)
        return header


@dataclass
class PushRequest:
    endpoint: str
    headers: dict[str, str]
    body: bytes


def build_request(
    key: VapidKey,
    *,
    endpoint: str,
    p256dh: str,
    auth: str,
    payload: bytes | None,
    ttl: int,
    topic: str,
    subject: str,
    now: float,
) -> PushRequest:
    """The push of `payload` (encrypted for the subscription's keys), or of no payload at all, to
    `endpoint`: TTL, `Urgency: high`, Topic (from `topic_for`) and VAPID Authorization headers."""
    if ttl < 0:
        raise ValueError("a TTL is 0 or more seconds")
    if _TOPIC.fullmatch(topic) is None:
        raise ValueError("a Topic is 1 to 32 characters of the base64url alphabet")
    headers = {
        "TTL": str(ttl),
        "Urgency": "high",
        "Topic": topic,
        "Authorization": key.authorization(endpoint, subject=subject, now=now),
    }
    if payload is None:
        return PushRequest(endpoint, headers, b"")
    headers["Content-Encoding"] = "aes128gcm"
    headers["Content-Type"] = "application/octet-stream"
    return PushRequest(endpoint, headers, encrypt(payload, p256dh=p256dh, auth=auth))


def encrypt(payload: bytes, *, p256dh: str, auth: str) -> bytes:
    """The `aes128gcm` body of `payload` for the subscription with these keys (RFC 8291; a fresh
    ephemeral key and salt each call, records of 4096 bytes). ValueError on malformed keys."""
    receiver, secret = _decode_keys(p256dh, auth)
    body: bytes = http_ece.encrypt(
        payload,
        salt=os.urandom(16),
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=receiver,
        auth_secret=secret,
        rs=RECORD_SIZE,
        version="aes128gcm",
    )
    return body


def validate_keys(p256dh: str, auth: str) -> None:
    """ValueError unless `p256dh` is an uncompressed P-256 point (65 bytes) and `auth` 16 bytes,
    both base64url (as `PushSubscription.toJSON()` gives them)."""
    _decode_keys(p256dh, auth)


def topic_for(conversation_id: str) -> str:
    """The `Topic` of a conversation's pushes (so a newer one replaces an undelivered older one):
    the base64url of the conversation's UUID, 22 characters (RFC 8030 allows 32)."""
    return _b64(uuid.UUID(conversation_id).bytes)


def origin_of(endpoint: str) -> str:
    """`scheme://host[:port]` of a URL, lowercase, without a default port (a VAPID `aud`)."""
    parts = urlsplit(endpoint)
    scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    if not scheme or not host:
        raise ValueError("an endpoint is an absolute URL")
    if ":" in host:
        host = f"[{host}]"
    default = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{host}" if port is None or port == default else f"{scheme}://{host}:{port}"


def _decode_keys(p256dh: str, auth: str) -> tuple[bytes, bytes]:
    point, secret = _unb64(p256dh, "p256dh"), _unb64(auth, "auth")
    if len(point) != POINT_BYTES or point[0] != 4:
        raise ValueError(f"p256dh is not an uncompressed P-256 point ({POINT_BYTES} bytes)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise ValueError("p256dh is not a point on the P-256 curve") from exc
    if len(secret) != AUTH_BYTES:
        raise ValueError(f"auth is not {AUTH_BYTES} bytes")
    return point, secret


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str, name: str) -> bytes:
    if _BASE64URL.fullmatch(text) is None:
        raise ValueError(f"{name} is not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except binascii.Error as exc:
        raise ValueError(f"{name} is not base64url") from exc
