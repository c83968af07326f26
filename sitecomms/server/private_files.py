"""Files that hold secrets (the token key file, the VAPID key): written and read for their owner only.

`write_private` puts a whole file in place at once: written under an exclusive temporary name
(mode 0600) and synced, then `os.replace`d over the old one, or `os.link`ed, which fails with
FileExistsError when another process was first (two processes starting at once then both read
the winner's file, never half of one). `read_private` reads one, refusing with a
`KeyFileError` a file that group or others may read or change, as ssh does with a private key;
the message names the file, what it holds and the fix (chmod 600).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["KeyFileError", "read_private", "write_private"]


class KeyFileError(Exception):
    """A key file is missing, readable by others, or malformed: the message says which and what to do."""


def write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `data` as the whole file at `path` (0600): `os.replace` when `replace`, else `os.link`
    (FileExistsError if the file exists already)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path.parent)


def read_private(path: Path, *, holds: str) -> tuple[bytes, os.stat_result]:
    """The bytes of the file at `path` and its status; FileNotFoundError when there is none;
    KeyFileError when group or others may read or change it (`holds` says what it holds)."""
    with open(path, "rb") as source:
        status = os.fstat(source.fileno())
        if stat.S_IMODE(status.st_mode) & 0o077:
            raise KeyFileError(
                f"the key file {path} may be read or changed by others (mode {stat.S_IMODE(status.st_mode):04o}); "
                f"it holds {holds}: make it its owner's only (chmod 600 {path})"
            )
        return source.read(), status


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
