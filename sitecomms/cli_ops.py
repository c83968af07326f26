"""The operator's data commands of `sitecomms`: `backup`, `restore` and `export`.

They are registered on `cli.app` (cli.py imports this module at its end), and stay thin: the
copying and its checks are `store/backup.py`'s, the export's reads and records
`server/services/export.py`'s. A refusal is one line on stderr and exit 1. Files these commands
write (a backup, an export) are the owner's only (0600), written under a temporary name beside
the target and moved there when complete, never over an existing file without `--force`, and
never, even with it, over the database's own files, a directory or a device
(`backups.refuse_overwriting`). An export that cannot be written (a full disk, a closed pipe)
is one line naming the output, not the database.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.markup import escape

from sitecomms.cli import DatabaseOption, _database_errors, _operate, _Operator, _settings, app, console, err_console
from sitecomms.server.services.export import Export, Exported
from sitecomms.store import backup as backups
from sitecomms.store import migrate

PathArgument = Annotated[Path, typer.Argument(help="The backup file", show_default=False)]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace the file if it exists")]


def _refused(exc: Exception) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(1)


@app.command("backup")
def backup_command(path: PathArgument, force: ForceOption = False, database_url: DatabaseOption = None) -> None:
    """Copy the SQLite database to PATH while servers keep serving (one consistent snapshot),
    then check the copy (PRAGMA integrity_check). PostgreSQL: use pg_dump (docs/deployment.md)."""
    settings = _settings(database_url)
    with _database_errors(settings.database_url):
        try:
            copied = backups.backup(settings.database_url, path, force=force)
        except backups.BackupError as exc:
            raise _refused(exc) from exc
    console.print(
        f"{copied.path}: {copied.pages} pages ({copied.checked.size:,} bytes) copied in {copied.steps} steps,"
        f" {copied.seconds:.2f} s; migration revision {copied.checked.revision}; integrity_check: ok",
        highlight=False,
        soft_wrap=True,
    )


@app.command("restore")
def restore_command(path: PathArgument, database_url: DatabaseOption = None) -> None:
    """Put the backup PATH in place of the SQLite database (stop every server using it first); the
    replaced file is kept beside it as <db>.before-restore-<time>."""
    settings = _settings(database_url)
    with _database_errors(settings.database_url):
        try:
            restored = backups.restore(settings.database_url, path, known_revisions=migrate.known_revisions())
        except backups.BackupError as exc:
            raise _refused(exc) from exc
    kept = f"; the replaced database is kept as {restored.replaced}" if restored.replaced else ""
    console.print(
        f"Restored {path} to {restored.path} (migration revision {restored.checked.revision},"
        f" integrity_check: ok){kept}. Start the server: clients that hold a later cursor get"
        " cursor_ahead and take a fresh snapshot.",
        highlight=False,
        soft_wrap=True,
    )


class _OutputFailed(Exception):
    """Writing the export failed (a full disk, a closed pipe): the output's fault, not the database's.

    Not an OSError, so that the store passes it through as it is rather than as `Unavailable`."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


def _writer(out: IO[bytes]) -> Callable[[bytes], object]:
    def write(data: bytes) -> object:
        try:
            return out.write(data)
        except OSError as exc:
            raise _OutputFailed(exc) from exc

    return write


@contextlib.contextmanager
def _private_output(path: Path | None, url: str, *, force: bool) -> Iterator[IO[bytes]]:
    """stdout, or a new 0600 file that becomes `path` only once everything was written (never one
    of the database's files, a directory or a device: `backups.refuse_overwriting`)."""
    if path is None:
        yield sys.stdout.buffer
        try:
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise _OutputFailed(exc) from exc
        return
    try:
        backups.refuse_overwriting(path, url, force=force, what="the export")
        partial = backups.private_temporary(path, "partial")  # mode 0600
    except backups.BackupError as exc:
        raise _refused(exc) from exc
    out = partial.open("wb")
    try:
        try:
            yield out
            try:
                out.flush()
                os.fsync(out.fileno())
                out.close()
            except OSError as exc:
                raise _OutputFailed(exc) from exc
        finally:
            with contextlib.suppress(OSError):  # failing already: the buffer's second flush fails too
                out.close()
        try:
            backups.put_in_place(partial, path, force=force)
        except backups.BackupError as exc:
            raise _refused(exc) from exc
    finally:
        partial.unlink(missing_ok=True)


def _output_failed(exc: _OutputFailed, out: Path | None) -> typer.Exit:
    """The one line for an export that could not be written; a closed stdout is closed for good."""
    if out is None and isinstance(exc.error, BrokenPipeError):
        devnull = os.open(os.devnull, os.O_WRONLY)  # so that the exit's flush of stdout finds no pipe
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return _refused(OSError(f"cannot write the export to {out if out is not None else 'stdout'}: {exc}"))


@app.command("export")
def export_command(
    org: Annotated[str, typer.Option(help="Organisation id or name")],
    out: Annotated[Path | None, typer.Option(help="Write to this file (mode 0600) [default: stdout]")] = None,
    force: ForceOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Export an organisation for compliance, as JSON lines (one object per line, each with a
    "kind"): its users (no password hashes), conversations, messages, read statuses and audit events."""
    settings = _settings(database_url)
    try:
        with _private_output(out, settings.database_url, force=force) as sink:
            write = _writer(sink)

            async def work(operator: _Operator) -> Exported:
                found = await operator.accounts.find_org(org)
                return await Export(operator.db).write_org(found.id, write)

            exported = _operate(settings, work, publish=False)
    except _OutputFailed as exc:
        raise _output_failed(exc, out) from exc
    counts = ", ".join(f"{n} {kind}" for kind, n in exported.counts.items())
    err_console.print(
        f"Exported {counts} (stream position {exported.position}){f' to {out}' if out else ''}",
        highlight=False,
        soft_wrap=True,
    )
