"""The token signing keys, kept in a key file outside the database (`Keyring`).

The key file is JSON readable by its owner only (mode 0600): a list of HS256 keys, newest
first, each `{kid, secret (base64url of 48 random bytes), created_at (Unix seconds)}`, and a
separate `refresh_key` that `rotate` never changes. The first process to start creates it
(complete, then linked into place, so a process starting at the same moment reads the
winner's file, never half of it); a file that others may read, or that does not parse, stops
the start with a `KeyFileError` saying how to fix it, as ssh does with a private key. Every
process (and host) serving one database must share the same file. `rotate` (`sitecomms keys
rotate`) prepends a new key, atomically (a temporary file and `os.replace`), and drops keys no
token still alive can have been signed with. A running `Keyring` looks at the file at most once
per second (from `signing` and `find`) and re-reads it when it changed, so it signs with a new
key soon after a rotation; a kid it does not know makes it re-read the file, also at most once
per second, so a flood of made-up kids cannot make it read the disk on every request.
`Keyring.fixed(secret)` is the one key of an operator's `SITECOMMS_JWT_SECRET`, with no file.

How `Tokens` uses it::

    kid, secret = keyring.signing
    token = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})

    kid = jwt.get_unverified_header(token).get("kid")
    secret = keyring.find(kid) if isinstance(kid, str) else None
    if secret is None:
        raise Unauthenticated("invalid access token")
    claims = jwt.decode(token, secret, algorithms=["HS256"], options=...)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitecomms.config import Settings
from sitecomms.server.private_files import KeyFileError, read_private, write_private
from sitecomms.store.database import sqlite_file

__all__ = ["KeyFileError", "Keyring", "Rotated", "SigningKey", "key_path", "keyring_for", "push_key_path", "rotate"]

log = logging.getLogger("sitecomms.server.keys")

KEY_BYTES = 48
MIN_KEY_BYTES = 32
RECHECK_SECONDS = 1.0  # the key file is looked at (or re-read for an unknown kid) at most this often
DEFAULT_KEY_FILE = Path("sitecomms.keys")
_VERSION = 1

Clock = Callable[[], float]


@dataclass(frozen=True, repr=False)
class SigningKey:
    kid: str
    secret: bytes
    created_at: int  # Unix seconds

    def __repr__(self) -> str:  # never the secret
        return f"SigningKey(kid={self.kid!r}, created_at={self.created_at})"


@dataclass(frozen=True)
class Rotated:
    """What `rotate` did: the keys now in the file (newest, signing, first) and the kids dropped."""

    keys: tuple[SigningKey, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class _Contents:
    keys: tuple[SigningKey, ...]
    refresh_key: bytes
    stamp: tuple[int, int, int] | None  # (inode, mtime_ns, size) of the file read; None without a file

    def find(self, kid: str) -> bytes | None:
        return next((key.secret for key in self.keys if key.kid == kid), None)


class Keyring:
    """The signing keys of one process. Make one with `open(path)` or `fixed(secret)`."""

    def __init__(self, contents: _Contents, path: Path | None, clock: Clock) -> None:
        self._contents = contents  # replaced whole on a re-read: readers on other threads see old or new
        self._path = path
        self._clock = clock
        self._looked_at = clock()
        self._seen_stamp = contents.stamp
        self._reread_for_kid_at = float("-inf")

    @classmethod
    def open(cls, path: Path, *, clock: Clock = time.monotonic, now: Clock = time.time) -> Keyring:
        """The keys in the file at `path`, which is created (0600) if there is none yet.

        KeyFileError when the file may be read by group or others, or does not parse."""
        try:
            contents = _read(path)
        except FileNotFoundError:
            contents = _create(path, int(now()))
        return cls(contents, path, clock)

    @classmethod
    def read(cls, path: Path, *, clock: Clock = time.monotonic) -> Keyring:
        """The keys in the file at `path`, which must exist (KeyFileError otherwise); for `keys show`."""
        return cls(_read(path, missing_ok=False), path, clock)

    @classmethod
    def fixed(cls, secret: str) -> Keyring:
        """One key, the operator's `SITECOMMS_JWT_SECRET`; no file. The kid is derived from a hash
        of the secret and the refresh key from the secret with HMAC, so every process agrees."""
        key = secret.encode()
        refresh_key = hmac.new(key, b"sitecomms refresh key", hashlib.sha256).digest()
        return cls(_Contents((SigningKey(_kid(key), key, 0),), refresh_key, None), None, time.monotonic)

    @property
    def signing(self) -> tuple[str, bytes]:
        """(kid, secret) of the newest key: sign new tokens with it."""
        self._look_at_file()
        newest = self._contents.keys[0]
        return newest.kid, newest.secret

    def find(self, kid: str) -> bytes | None:
        """The secret of key `kid`, or None when no key has that kid (the token is not ours)."""
        self._look_at_file()
        found = self._contents.find(kid)
        if found is not None or self._path is None:
            return found
        now = self._clock()
        if now - self._reread_for_kid_at < RECHECK_SECONDS:
            return None
        self._reread_for_kid_at = now
        self._reread()  # perhaps rotated by another process since we last looked
        return self._contents.find(kid)

    @property
    def refresh_key(self) -> bytes:
        """The key the sessions service derives refresh tokens with; never rotated."""
        return self._contents.refresh_key

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key accepted, newest (the signing one) first."""
        return self._contents.keys

    def _look_at_file(self) -> None:
        """At most once a second: re-read the file if it changed (a new inode, mtime or size)."""
        if self._path is None:
            return
        now = self._clock()
        if now - self._looked_at < RECHECK_SECONDS:
            return
        self._looked_at = now
        try:
            stamp: tuple[int, int, int] | None = _stamp(os.stat(self._path))
        except OSError as exc:
            stamp, problem = None, exc
        if stamp == self._seen_stamp:  # unchanged (or still as unusable as before: warned once already)
            return
        self._seen_stamp = stamp
        if stamp is None:
            log.warning("cannot look at the key file %s (keeping the keys read before): %s", self._path, problem)
            return
        self._reread()

    def _reread(self) -> None:
        assert self._path is not None
        try:
            self._contents = _read(self._path)
        except (OSError, KeyFileError) as exc:  # a running server keeps its keys rather than stopping
            log.warning("cannot re-read the key file %s (keeping the keys read before): %s", self._path, exc)


def key_path(settings: Settings) -> Path:
    """Where the key file is: `key_file` if set; else next to the SQLite database file
    (`./sitecomms.db` → `./sitecomms.keys`); else (PostgreSQL, in-memory SQLite) `./sitecomms.keys`."""
    if settings.key_file is not None:
        return settings.key_file
    database = sqlite_file(settings.database_url)
    return DEFAULT_KEY_FILE if database is None else database.with_suffix(".keys")


def push_key_path(settings: Settings) -> Path:
    """Where the VAPID key is: `push_key_file` if set; else beside the key file (`sitecomms.vapid`)."""
    return settings.push_key_file if settings.push_key_file is not None else key_path(settings).with_suffix(".vapid")


def keyring_for(settings: Settings) -> Keyring:
    """The keyring a server or command uses: `SITECOMMS_JWT_SECRET`'s one key when set, else the key file."""
    if settings.jwt_secret is not None:
        return Keyring.fixed(settings.jwt_secret.get_secret_value())
    return Keyring.open(key_path(settings))


def rotate(path: Path, *, keep_seconds: int, now: Clock = time.time) -> Rotated:
    """Prepend a new signing key to the file at `path` and drop the keys no longer needed.

    A key stops signing when the next newer one is made; tokens it signed live until
    `keep_seconds` (the longest token lifetime) after that. So a key is kept while the key made
    after it is at most `keep_seconds` old; the key that was signing until now is always kept.
    Run one rotation at a time (two at once may each drop the other's new key)."""
    current = _read(path, missing_ok=False)
    at = int(now())
    fresh = SigningKey(_kid_new(), secrets.token_bytes(KEY_BYTES), at)
    kept = [fresh]
    for older in current.keys:
        if len(kept) == 1 or at - kept[-1].created_at <= keep_seconds:
            kept.append(older)
        else:
            break
    dropped = tuple(key.kid for key in current.keys[len(kept) - 1 :])
    _write(path, _Contents(tuple(kept), current.refresh_key, None), replace=True)
    return Rotated(tuple(kept), dropped)


def _kid(secret: bytes) -> str:
    return _b64(hashlib.sha256(b"sitecomms kid " + secret).digest())[:16]


def _kid_new() -> str:
    return secrets.token_urlsafe(12)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _stamp(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_ino, status.st_mtime_ns, status.st_size


def _create(path: Path, at: int) -> _Contents:
    """A new file with one key; if another process created one first, that one."""
    contents = _Contents(
        (SigningKey(_kid_new(), secrets.token_bytes(KEY_BYTES), at),), secrets.token_bytes(KEY_BYTES), None
    )
    with contextlib.suppress(FileExistsError):  # lost the race: read the winner's
        _write(path, contents, replace=False)
    return _read(path, missing_ok=False)


def _write(path: Path, contents: _Contents, *, replace: bool) -> None:
    """Write the whole file, then put it in place: `os.replace` (rotation) or `os.link`, which
    fails with FileExistsError if another process was first (`private_files.write_private`)."""
    document = {
        "version": _VERSION,
        "keys": [{"kid": k.kid, "secret": _b64(k.secret), "created_at": k.created_at} for k in contents.keys],
        "refresh_key": _b64(contents.refresh_key),
    }
    write_private(path, (json.dumps(document, indent=2) + "\n").encode(), replace=replace)


def _read(path: Path, *, missing_ok: bool = True) -> _Contents:
    try:
        raw, status = read_private(path, holds="the token signing keys")
    except FileNotFoundError:
        if missing_ok:
            raise
        raise KeyFileError(f"there is no key file at {path} (`sitecomms serve` creates it on first start)") from None
    try:
        return _parse(json.loads(raw), _stamp(status))
    except (ValueError, TypeError, KeyError) as exc:
        raise KeyFileError(f"the key file {path} is malformed ({exc}); restore it from a backup") from exc


def _parse(document: Any, stamp: tuple[int, int, int]) -> _Contents:
    if not isinstance(document, dict) or document.get("version") != _VERSION:
        raise ValueError(f"not a version {_VERSION} key file")
    entries = document["keys"]
    if not isinstance(entries, list) or not entries:
        raise ValueError("no keys")
    keys = tuple(_parse_key(entry) for entry in entries)
    if len({key.kid for key in keys}) != len(keys):
        raise ValueError("two keys have the same kid")
    return _Contents(keys, _secret(document["refresh_key"]), stamp)


def _parse_key(entry: Any) -> SigningKey:
    if not isinstance(entry, dict):
        raise TypeError("a key is not an object")
    kid, created_at = entry["kid"], entry["created_at"]
    if not isinstance(kid, str) or not kid or not isinstance(created_at, int) or isinstance(created_at, bool):
        raise TypeError("a key needs a kid (text) and created_at (Unix seconds)")
    return SigningKey(kid, _secret(entry["secret"]), created_at)


def _secret(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("a secret is not text")
    try:
        raw = _unb64(text)
    except binascii.Error as exc:
        raise ValueError("a secret is not base64url") from exc
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"a secret is shorter than {MIN_KEY_BYTES} bytes")
    return raw
