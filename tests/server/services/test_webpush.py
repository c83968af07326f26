"""Web Push messages: bodies a receiver decrypts, VAPID tokens that verify, the key file kept safe."""

from __future__ import annotations

import base64
import os
import stat
import struct
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import http_ece  # type: ignore[import-untyped]
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sitecomms.server.private_files import KeyFileError
from sitecomms.server.services import webpush
from sitecomms.server.services.webpush import VapidKey, build_request, encrypt, topic_for, validate_keys

NOW = 1_800_000_000.0
SUBJECT = "mailto:push@sitecomms.invalid"
ENDPOINT = "https://push.example:8443/wpush/v2/secret-capability"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Receiver:
    """A browser's side of one subscription: its private key and auth secret."""

    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @classmethod
    def new(cls) -> Receiver:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth(self) -> str:
        return b64(self.auth_secret)

    def decrypt(self, body: bytes) -> bytes:
        plain: bytes = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth_secret, version="aes128gcm"
        )
        return plain


def verified_claims(header: str, audience: str) -> dict[str, object]:
    """The claims of a `vapid t=..., k=...` header, checked as a push service checks them."""
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert set(fields) == {"t", "k"}
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(fields["k"]))
    claims: dict[str, object] = jwt.decode(
        fields["t"], public_key, algorithms=["ES256"], audience=audience, options={"verify_exp": False}
    )
    assert jwt.get_unverified_header(fields["t"])["alg"] == "ES256"
    return claims


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# encrypt


def test_the_receiver_decrypts_the_body_and_it_is_aes128gcm_with_4096_byte_records() -> None:
    receiver = Receiver.new()
    payload = b'{"type": "message", "conversation_id": "c"}'
    body = encrypt(payload, p256dh=receiver.p256dh, auth=receiver.auth)
    assert receiver.decrypt(body) == payload
    salt, record_size, id_length = body[:16], struct.unpack("!L", body[16:20])[0], body[20]
    assert record_size == 4096 and id_length == 65 and body[21] == 4  # keyid: the sender's ephemeral point
    assert len(salt) == 16


def test_every_body_has_a_fresh_salt_and_ephemeral_key() -> None:
    receiver = Receiver.new()
    first = encrypt(b"same", p256dh=receiver.p256dh, auth=receiver.auth)
    second = encrypt(b"same", p256dh=receiver.p256dh, auth=receiver.auth)
    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # ephemeral public key
    assert receiver.decrypt(first) == receiver.decrypt(second) == b"same"


def test_another_receiver_cannot_decrypt() -> None:
    receiver, other = Receiver.new(), Receiver.new()
    body = encrypt(b"secret", p256dh=receiver.p256dh, auth=receiver.auth)
    with pytest.raises(http_ece.ECEException):
        other.decrypt(body)


def bad_keys() -> list[tuple[str, str, str]]:
    good = Receiver.new()
    point = unb64(good.p256dh)
    off_curve = point[:-1] + bytes([point[-1] ^ 1])
    return [
        ("p256dh", b64(point[:64]), good.auth),
        ("p256dh", b64(b"\x03" + point[1:]), good.auth),
        ("p256dh", b64(off_curve), good.auth),
        ("p256dh", good.p256dh + "!", good.auth),
        ("p256dh", "", good.auth),
        ("auth", good.p256dh, b64(os.urandom(15))),
        ("auth", good.p256dh, b64(os.urandom(17))),
        ("auth", good.p256dh, "not base64 at all"),
    ]


@pytest.mark.parametrize(("field", "p256dh", "auth"), bad_keys())
def test_malformed_keys_are_refused(field: str, p256dh: str, auth: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate_keys(p256dh, auth)
    with pytest.raises(ValueError, match=field):
        encrypt(b"x", p256dh=p256dh, auth=auth)


def test_keys_as_a_browser_gives_them_are_valid_with_or_without_padding() -> None:
    receiver = Receiver.new()
    validate_keys(receiver.p256dh, receiver.auth)
    validate_keys(receiver.p256dh + "=", receiver.auth + "==")


# VAPID


def test_the_public_key_is_the_65_byte_uncompressed_point_base64url() -> None:
    key = VapidKey.generate()
    raw = unb64(key.public_key)
    assert len(raw) == 65 and raw[0] == 4 and "=" not in key.public_key
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def test_the_authorization_is_an_es256_jwt_for_the_endpoints_origin() -> None:
    key = VapidKey.generate()
    header = key.authorization(ENDPOINT, subject=SUBJECT, now=NOW)
    assert header.endswith(f", k={key.public_key}")
    claims = verified_claims(header, "https://push.example:8443")
    assert claims == {"aud": "https://push.example:8443", "exp": int(NOW) + 12 * 3600, "sub": SUBJECT}


@pytest.mark.parametrize(
    ("endpoint", "audience"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com"),
        ("https://Push.Example:443/x?y=1", "https://push.example"),
        ("https://127.0.0.1:8443/push/1", "https://127.0.0.1:8443"),
        ("https://[::1]:8443/push/1", "https://[::1]:8443"),
    ],
)
def test_the_audience_is_the_origin_without_path_or_default_port(endpoint: str, audience: str) -> None:
    key = VapidKey.generate()
    assert verified_claims(key.authorization(endpoint, subject=SUBJECT, now=NOW), audience)["aud"] == audience


def test_a_token_signed_by_another_key_does_not_verify() -> None:
    header = VapidKey.generate().authorization(ENDPOINT, subject=SUBJECT, now=NOW)
    token = header.split("t=", 1)[1].split(",", 1)[0]
    forged = f"vapid t={token}, k={VapidKey.generate().public_key}"
    with pytest.raises(jwt.InvalidSignatureError):
        verified_claims(forged, "https://push.example:8443")


def test_a_token_is_reused_per_origin_until_less_than_an_hour_remains() -> None:
    key = VapidKey.generate()
    first = key.authorization(ENDPOINT, subject=SUBJECT, now=NOW)
    assert key.authorization("https://push.example:8443/other/path", subject=SUBJECT, now=NOW + 11 * 3600) == first
    renewed = key.authorization(ENDPOINT, subject=SUBJECT, now=NOW + 11 * 3600 + 1)
    assert renewed != first
    assert verified_claims(renewed, "https://push.example:8443")["exp"] == int(NOW) + 23 * 3600 + 1
    other_origin = key.authorization("https://push.example/x", subject=SUBJECT, now=NOW)
    assert verified_claims(other_origin, "https://push.example")["aud"] == "https://push.example"
    other_subject = key.authorization(ENDPOINT, subject="mailto:ops@example.org", now=NOW + 11 * 3600 + 2)
    assert verified_claims(other_subject, "https://push.example:8443")["sub"] == "mailto:ops@example.org"


# the key file


def test_the_first_open_creates_a_pem_file_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sitecomms.vapid"
    key = VapidKey.open(path)
    assert mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sitecomms.vapid"]  # no temporary file left
    assert VapidKey.open(path).public_key == key.public_key


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "sitecomms.vapid"
    starters = 8
    barrier = threading.Barrier(starters, timeout=10)
    public_keys: list[str] = []

    def start() -> None:
        barrier.wait()
        public_keys.append(VapidKey.open(path).public_key)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(public_keys) == starters
    assert len(set(public_keys)) == 1
    assert VapidKey.open(path).public_key == public_keys[0]


def test_separate_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "sitecomms.vapid"
    program = "import sys; from pathlib import Path; from sitecomms.server.services.webpush import VapidKey;"
    program += " print(VapidKey.open(Path(sys.argv[1])).public_key)"
    starters = [
        subprocess.Popen([sys.executable, "-c", program, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    public_keys = {starter.communicate(timeout=60)[0].strip() for starter in starters}
    assert all(starter.returncode == 0 for starter in starters)
    assert public_keys == {VapidKey.open(path).public_key}


@pytest.mark.parametrize("unsafe", [0o644, 0o640, 0o604, 0o660])
def test_a_file_others_may_read_is_refused_with_the_fix(tmp_path: Path, unsafe: int) -> None:
    path = tmp_path / "sitecomms.vapid"
    VapidKey.open(path)
    path.chmod(unsafe)
    with pytest.raises(KeyFileError, match=f"mode {unsafe:04o}") as refused:
        VapidKey.open(path)
    assert f"chmod 600 {path}" in str(refused.value) and "VAPID" in str(refused.value)


@pytest.mark.parametrize(
    "contents",
    [
        b"not a key",
        b"",
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    ],
    ids=["garbage", "empty", "p384"],
)
def test_a_file_that_is_not_a_p256_key_is_refused(tmp_path: Path, contents: bytes) -> None:
    path = tmp_path / "sitecomms.vapid"
    path.write_bytes(contents)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="is malformed"):
        VapidKey.open(path)
    assert path.read_bytes() == contents  # never replaced: a new key would end every subscription


# requests


def test_a_request_with_a_payload_carries_the_encrypted_body_and_headers() -> None:
    key, receiver = VapidKey.generate(), Receiver.new()
    topic = topic_for(str(uuid.uuid4()))
    request = build_request(
        key,
        endpoint=ENDPOINT,
        p256dh=receiver.p256dh,
        auth=receiver.auth,
        payload=b"{}",
        ttl=86400,
        topic=topic,
        subject=SUBJECT,
        now=NOW,
    )
    assert request.endpoint == ENDPOINT
    assert set(request.headers) == {"TTL", "Urgency", "Topic", "Authorization", "Content-Encoding", "Content-Type"}
    assert request.headers["TTL"] == "86400" and request.headers["Urgency"] == "high"
    assert request.headers["Topic"] == topic
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert verified_claims(request.headers["Authorization"], "https://push.example:8443")["sub"] == SUBJECT
    assert receiver.decrypt(request.body) == b"{}"


def test_a_request_without_a_payload_has_an_empty_body_and_no_encoding() -> None:
    key, receiver = VapidKey.generate(), Receiver.new()
    request = build_request(
        key,
        endpoint=ENDPOINT,
        p256dh=receiver.p256dh,
        auth=receiver.auth,
        payload=None,
        ttl=0,
        topic="abc",
        subject=SUBJECT,
        now=NOW,
    )
    assert request.body == b""
    assert set(request.headers) == {"TTL", "Urgency", "Topic", "Authorization"}
    assert request.headers["TTL"] == "0"


@pytest.mark.parametrize(("ttl", "topic"), [(-1, "abc"), (10, "a" * 33), (10, "with space"), (10, "")])
def test_a_request_with_a_bad_ttl_or_topic_is_refused(ttl: int, topic: str) -> None:
    receiver = Receiver.new()
    with pytest.raises(ValueError):
        build_request(
            VapidKey.generate(),
            endpoint=ENDPOINT,
            p256dh=receiver.p256dh,
            auth=receiver.auth,
            payload=None,
            ttl=ttl,
            topic=topic,
            subject=SUBJECT,
            now=NOW,
        )


def test_a_topic_is_at_most_32_base64url_characters_one_per_conversation() -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    topic = topic_for(first)
    assert webpush._TOPIC.fullmatch(topic) and len(topic) == 22
    assert topic_for(first) == topic != topic_for(second)
    assert topic_for(first.upper()) == topic
    with pytest.raises(ValueError):
        topic_for("not a uuid")
