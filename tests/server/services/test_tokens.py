"""Access tokens: unique strings, signed by the newest key, verified by `kid` across rotations."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from sitecomms.protocol.enums import Role
from sitecomms.server import keys
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.tokens import Tokens


def _issue(tokens: Tokens, session_id: str = "s") -> str:
    return tokens.issue(user_id="u", org_id="o", role=Role.MEDIC, session_id=session_id)[0]


def test_two_tokens_issued_at_once_differ() -> None:
    tokens = Tokens(keys.Keyring.fixed("x" * 40), timedelta(minutes=15))
    first, second = _issue(tokens), _issue(tokens)
    assert first != second, "a client tells a refreshed token from the old one by its string"
    assert tokens.verify(first).session_id == tokens.verify(second).session_id == "s"


def test_a_token_of_an_older_key_verifies_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "sitecomms.keys"
    clock = [0.0]
    ring = keys.Keyring.open(path, clock=lambda: clock[0])
    tokens = Tokens(ring, timedelta(minutes=15))
    before = _issue(tokens, str(uuid.uuid4()))
    old_kid = jwt.get_unverified_header(before)["kid"]
    keys.rotate(path, keep_seconds=900)
    clock[0] += 2.0  # the keyring looks at its file at most once a second
    after = _issue(tokens, str(uuid.uuid4()))
    assert jwt.get_unverified_header(after)["kid"] != old_kid, "new tokens are signed by the new key"
    assert tokens.verify(before).expires_at > 0 and tokens.verify(after).expires_at > 0


def test_an_unknown_or_missing_kid_is_refused() -> None:
    tokens = Tokens(keys.Keyring.fixed("y" * 40), timedelta(minutes=15))
    claims = jwt.decode(_issue(tokens), "y" * 40, algorithms=["HS256"])
    for headers in ({"kid": "nope"}, {}, {"kid": ""}, {"kid": "../../etc/passwd"}, {"kid": "k" * 10_000}):
        forged = jwt.encode(claims, "y" * 40, algorithm="HS256", headers=headers)
        with pytest.raises(Unauthenticated):
            tokens.verify(forged)
