"""The Keyring: the key file created 0600 and shared, refused when unsafe, rotated, re-read."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from sitecomms.server import keys
from sitecomms.server.keys import KeyFileError, Keyring, key_path, keyring_for, push_key_path, rotate
from tests.support import JWT_SECRET, fast_settings

DAY = 86_400


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "sitecomms.keys"


def test_the_first_open_creates_the_file_for_its_owner_only(key_file: Path) -> None:
    ring = Keyring.open(key_file)
    assert mode(key_file) == 0o600
    kid, secret = ring.signing
    assert len(secret) == keys.KEY_BYTES and len(ring.refresh_key) == keys.KEY_BYTES
    assert ring.find(kid) == secret
    document = json.loads(key_file.read_text())
    assert [entry["kid"] for entry in document["keys"]] == [kid]
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["sitecomms.keys"]  # no temporary file left


def test_a_second_open_reads_the_same_keys(key_file: Path) -> None:
    first = Keyring.open(key_file)
    second = Keyring.open(key_file)
    assert second.signing == first.signing
    assert second.refresh_key == first.refresh_key
    assert second.refresh_key != first.signing[1]


def test_processes_starting_at_once_agree_on_one_key(key_file: Path) -> None:
    starters = 8
    barrier = threading.Barrier(starters, timeout=10)
    rings: list[Keyring] = []

    def start() -> None:
        barrier.wait()
        rings.append(Keyring.open(key_file))

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(rings) == starters
    assert len({ring.signing for ring in rings}) == 1
    assert len({ring.refresh_key for ring in rings}) == 1
    assert len(rings[0].keys) == 1


def test_separate_processes_starting_at_once_agree_on_one_key(key_file: Path) -> None:
    program = "import sys; from pathlib import Path; from sitecomms.server.keys import Keyring;"
    program += " print(Keyring.open(Path(sys.argv[1])).signing[0])"
    starters = [
        subprocess.Popen([sys.executable, "-c", program, str(key_file)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    kids = {starter.communicate(timeout=60)[0].strip() for starter in starters}
    assert all(starter.returncode == 0 for starter in starters)
    assert kids == {Keyring.open(key_file).signing[0]}


@pytest.mark.parametrize("unsafe", [0o644, 0o640, 0o604, 0o660])
def test_a_file_others_may_read_is_refused_with_the_fix(key_file: Path, unsafe: int) -> None:
    Keyring.open(key_file)
    key_file.chmod(unsafe)
    with pytest.raises(KeyFileError, match=f"mode {unsafe:04o}") as refused:
        Keyring.open(key_file)
    assert f"chmod 600 {key_file}" in str(refused.value)


def _valid_document(key_file: Path) -> dict[str, Any]:
    Keyring.open(key_file)
    document: dict[str, Any] = json.loads(key_file.read_text())
    return document


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: "not json {",
        lambda d: "",
        lambda d: json.dumps({**d, "version": 2}),
        lambda d: json.dumps({**d, "keys": []}),
        lambda d: json.dumps({**d, "keys": [{**d["keys"][0], "secret": "c2hvcnQ"}]}),  # "short"
        lambda d: json.dumps({**d, "keys": [d["keys"][0], d["keys"][0]]}),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "refresh_key"}),
        lambda d: json.dumps({**d, "keys": [{**d["keys"][0], "created_at": "yesterday"}]}),
        lambda d: json.dumps({**d, "keys": [{**d["keys"][0], "created_at": True}]}),
        lambda d: json.dumps({**d, "keys": ["a key"]}),
        lambda d: json.dumps({**d, "refresh_key": 12345}),
        lambda d: json.dumps({**d, "refresh_key": "A" * 65}),  # 65 base64 characters decode to nothing
    ],
    ids=[
        "not-json",
        "empty",
        "version",
        "no-keys",
        "short-secret",
        "same-kid",
        "no-refresh-key",
        "bad-time",
        "bool-time",
        "key-not-object",
        "secret-not-text",
        "secret-not-base64",
    ],
)
def test_a_malformed_file_is_refused(key_file: Path, spoil: Any) -> None:
    spoiled = spoil(_valid_document(key_file))
    key_file.write_text(spoiled)
    assert mode(key_file) == 0o600
    with pytest.raises(KeyFileError, match="is malformed"):
        Keyring.open(key_file)


def test_rotate_makes_a_new_signing_key_and_keeps_the_old_one_accepted(key_file: Path) -> None:
    old_kid, old_secret = Keyring.open(key_file).signing
    rotated = rotate(key_file, keep_seconds=DAY)
    assert mode(key_file) == 0o600
    assert rotated.dropped == ()
    ring = Keyring.open(key_file)
    new_kid, new_secret = ring.signing
    assert new_kid == rotated.keys[0].kid != old_kid and new_secret != old_secret
    assert ring.find(old_kid) == old_secret
    assert [key.kid for key in ring.keys] == [new_kid, old_kid]
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["sitecomms.keys"]


def test_rotate_never_changes_the_refresh_key(key_file: Path) -> None:
    refresh_key = Keyring.open(key_file).refresh_key
    rotate(key_file, keep_seconds=0)
    rotate(key_file, keep_seconds=0)
    assert Keyring.open(key_file).refresh_key == refresh_key


def test_rotate_drops_keys_whose_tokens_have_all_expired(key_file: Path) -> None:
    first = Keyring.open(key_file, now=lambda: 0).signing[0]
    second = rotate(key_file, keep_seconds=50, now=lambda: 100).keys[0].kid
    # `first` stopped signing at 100: its tokens may live until 150
    third = rotate(key_file, keep_seconds=50, now=lambda: 140)
    assert [key.kid for key in third.keys][1:] == [second, first]
    fourth = rotate(key_file, keep_seconds=50, now=lambda: 160)
    # now `first` goes; `second` stopped signing at 140, so is kept; the one signing until now always is
    assert fourth.dropped == (first,)
    assert [key.kid for key in fourth.keys][1:] == [third.keys[0].kid, second]
    assert rotate(key_file, keep_seconds=0, now=lambda: 1000).dropped == (third.keys[0].kid, second)


def test_rotate_needs_an_existing_file(key_file: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file"):
        rotate(key_file, keep_seconds=DAY)
    assert not key_file.exists()


def test_a_running_keyring_signs_with_the_new_key_after_its_next_look(key_file: Path) -> None:
    clock = Clock()
    ring = Keyring.open(key_file, clock=clock)
    old = ring.signing
    new_kid = rotate(key_file, keep_seconds=DAY).keys[0].kid
    clock.advance(0.5)
    assert ring.signing == old  # looked at less than a second ago: still the old key, which is accepted
    clock.advance(0.6)
    assert ring.signing[0] == new_kid
    assert ring.find(old[0]) == old[1]


def test_a_running_keyring_finds_a_kid_rotated_in_by_another_process(key_file: Path) -> None:
    clock = Clock()
    ring = Keyring.open(key_file, clock=clock)
    rotated = rotate(key_file, keep_seconds=DAY).keys[0]
    assert ring.find(rotated.kid) == rotated.secret  # unknown: the file is re-read, no waiting


def test_a_flood_of_unknown_kids_reads_the_file_at_most_once_a_second(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    ring = Keyring.open(key_file, clock=clock)
    reads: list[Path] = []
    read = keys._read

    def counted(path: Path, **kwargs: Any) -> Any:
        reads.append(path)
        return read(path, **kwargs)

    monkeypatch.setattr(keys, "_read", counted)
    for n in range(500):
        assert ring.find(f"made-up-{n}") is None
    assert len(reads) == 1
    rotated = rotate(key_file, keep_seconds=DAY).keys[0]
    reads.clear()
    clock.advance(0.9)
    assert ring.find("made-up") is None and ring.find(rotated.kid) is None  # the gate is still shut
    assert reads == []
    clock.advance(0.2)
    assert ring.find(rotated.kid) == rotated.secret
    assert len(reads) == 1  # the mtime look found the change and read the file once


def test_a_spoiled_file_while_running_keeps_the_keys_read_before(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ring = Keyring.open(key_file, clock=clock)
    signing = ring.signing
    key_file.write_text("{}")
    clock.advance(2)
    with caplog.at_level(logging.WARNING, logger="sitecomms.server.keys"):
        assert ring.signing == signing
    assert "cannot re-read the key file" in caplog.text


def test_read_does_not_create_a_file(key_file: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file"):
        Keyring.read(key_file)
    assert not key_file.exists()
    made = Keyring.open(key_file)
    assert Keyring.read(key_file).signing == made.signing


def test_fixed_is_one_key_every_process_derives_alike() -> None:
    ring, again, other = Keyring.fixed(JWT_SECRET), Keyring.fixed(JWT_SECRET), Keyring.fixed(JWT_SECRET + "x")
    kid, secret = ring.signing
    assert secret == JWT_SECRET.encode()
    assert again.signing == (kid, secret) and again.refresh_key == ring.refresh_key
    assert other.signing[0] != kid and other.refresh_key != ring.refresh_key
    assert ring.refresh_key != secret and len(ring.refresh_key) == 32
    assert ring.find(kid) == secret
    assert ring.find(other.signing[0]) is None
    assert JWT_SECRET not in kid


def test_a_key_never_shows_its_secret() -> None:
    key = Keyring.fixed(JWT_SECRET).keys[0]
    assert JWT_SECRET not in repr(key) and key.kid in repr(key)


def test_the_key_file_is_next_to_the_sqlite_file_unless_set(tmp_path: Path) -> None:
    assert key_path(fast_settings(f"sqlite:///{tmp_path / 'data' / 'site.db'}")) == tmp_path / "data" / "site.keys"
    assert key_path(fast_settings("sqlite:///./sitecomms.db")) == Path("sitecomms.keys")
    assert key_path(fast_settings("postgresql://u@127.0.0.1:5432/db")) == Path("sitecomms.keys")
    assert key_path(fast_settings("sqlite://")) == Path("sitecomms.keys")
    chosen = tmp_path / "elsewhere.json"
    assert key_path(fast_settings("sqlite:///./sitecomms.db", key_file=chosen)) == chosen


def test_the_vapid_key_is_beside_the_key_file_unless_set(tmp_path: Path) -> None:
    site = f"sqlite:///{tmp_path / 'data' / 'site.db'}"
    assert push_key_path(fast_settings(site, push_key_file=None)) == tmp_path / "data" / "site.vapid"
    keys_elsewhere = fast_settings(site, push_key_file=None, key_file=tmp_path / "k" / "prod.keys")
    assert push_key_path(keys_elsewhere) == tmp_path / "k" / "prod.vapid"
    assert push_key_path(fast_settings("postgresql://u@127.0.0.1:5432/db", push_key_file=None)) == Path(
        "sitecomms.vapid"
    )
    chosen = tmp_path / "vapid.pem"
    assert push_key_path(fast_settings(site, push_key_file=chosen)) == chosen


def test_keyring_for_uses_the_jwt_secret_when_set_else_the_key_file(tmp_path: Path) -> None:
    assert keyring_for(fast_settings("sqlite:///x.db")).signing == Keyring.fixed(JWT_SECRET).signing
    settings = fast_settings(f"sqlite:///{tmp_path / 'site.db'}", jwt_secret=None)
    ring = keyring_for(settings)
    assert (tmp_path / "site.keys").exists()
    assert Keyring.open(tmp_path / "site.keys").signing == ring.signing
    assert os.listdir(tmp_path) == ["site.keys"]


def test_a_file_gone_while_running_is_warned_about_once_and_its_keys_kept(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ring = Keyring.open(key_file, clock=clock)
    signing = ring.signing
    key_file.unlink()
    with caplog.at_level(logging.WARNING, logger="sitecomms.server.keys"):
        for _ in range(3):
            clock.advance(2)
            assert ring.signing == signing
    assert caplog.text.count("cannot look at the key file") == 1
