"""`sitecomms keys show` and `sitecomms keys rotate`, run in process (typer's CliRunner)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sitecomms.cli import app
from sitecomms.server.keys import Keyring, rotate
from tests.support import JWT_SECRET


@pytest.fixture(autouse=True)
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SITECOMMS_")]:
        monkeypatch.delenv(name)


def invoke(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env or None)


def test_show_lists_kids_and_never_secrets(tmp_path: Path) -> None:
    key_file = tmp_path / "site.keys"
    ring = Keyring.open(key_file)
    shown = invoke("keys", "show", "--key-file", str(key_file))
    assert shown.exit_code == 0, shown.output
    assert ring.signing[0] in shown.output and "signing" in shown.output
    secrets = [entry["secret"] for entry in json.loads(key_file.read_text())["keys"]]
    secrets.append(base64.urlsafe_b64encode(ring.refresh_key).decode().rstrip("="))
    assert not any(secret[:12] in shown.output for secret in secrets)


def test_show_finds_the_file_next_to_the_sqlite_database(tmp_path: Path) -> None:
    ring = Keyring.open(tmp_path / "site.keys")
    shown = invoke("keys", "show", "--database-url", f"sqlite:///{tmp_path / 'site.db'}")
    assert shown.exit_code == 0, shown.output
    assert ring.signing[0] in shown.output


def test_show_without_a_file_says_so_and_creates_none(tmp_path: Path) -> None:
    shown = invoke("keys", "show", "--key-file", str(tmp_path / "none.keys"))
    assert shown.exit_code == 1
    assert "no key file" in shown.output
    assert list(tmp_path.iterdir()) == []


def test_rotate_then_show_lists_the_new_signing_key_first(tmp_path: Path) -> None:
    key_file = tmp_path / "site.keys"
    old_kid = Keyring.open(key_file).signing[0]
    rotated = invoke("keys", "rotate", "--key-file", str(key_file))
    assert rotated.exit_code == 0, rotated.output
    new_kid = Keyring.open(key_file).signing[0]
    assert new_kid != old_kid and new_kid in rotated.output
    assert "1 older key(s) still accepted, 0 dropped" in rotated.output
    shown = invoke("keys", "show", "--key-file", str(key_file)).output
    assert shown.index(new_kid) < shown.index(old_kid)


def test_rotate_with_keep_seconds_zero_drops_keys_that_stopped_signing(tmp_path: Path) -> None:
    key_file = tmp_path / "site.keys"
    first = Keyring.open(key_file, now=lambda: 0).signing[0]
    second = rotate(key_file, keep_seconds=0, now=lambda: 100).keys[0].kid  # `first` stopped signing at 100
    again = invoke("keys", "rotate", "--key-file", str(key_file), "--keep-seconds", "0")
    assert again.exit_code == 0, again.output
    assert "1 older key(s) still accepted, 1 dropped" in again.output
    assert [key.kid for key in Keyring.open(key_file).keys][1:] == [second]
    assert first not in invoke("keys", "show", "--key-file", str(key_file)).output


def test_rotate_refuses_a_file_others_may_read(tmp_path: Path) -> None:
    key_file = tmp_path / "site.keys"
    Keyring.open(key_file)
    key_file.chmod(0o644)
    refused = invoke("keys", "rotate", "--key-file", str(key_file))
    assert refused.exit_code == 1
    assert "chmod 600" in refused.output


def test_the_key_commands_refuse_while_a_jwt_secret_is_set(tmp_path: Path) -> None:
    for command in ("show", "rotate"):
        refused = invoke("keys", command, "--key-file", str(tmp_path / "k"), SITECOMMS_JWT_SECRET=JWT_SECRET)
        assert refused.exit_code == 1
        assert "SITECOMMS_JWT_SECRET is set" in refused.output
    assert list(tmp_path.iterdir()) == []
