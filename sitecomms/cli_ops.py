"""The operator's data commands of `sitecomms`: `backup`, `restore` and `export`.

They are registered on `cli.app` (cli.py imports this module at its end), and stay thin: the
copying and its checks are `store/backup.py`'s, the export's reads and records
`server/services/export.py`'s. A refusal is one line on stderr and exit 1. Files these commands
write (a backup, an export) are the owner's only (0600), written under a temporary name beside
the target and moved there when complete, never over an existing file without `--force`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def _private_output(path: Path | None, *, force: bool) -> Iterator[IO[bytes]]:
    """stdout, or a new 0600 file that becomes `path` only once everything was written."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if path.exists() and not force:
        raise _refused(FileExistsError(f"{path} exists: choose another name, or pass --force to replace it"))
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")  # mode 0600
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if force:
            os.replace(partial, path)
        else:
            try:
                os.link(partial, path)
            except FileExistsError as exc:
                raise _refused(exc) from exc
    finally:
        partial.unlink(missing_ok=True)


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
    if out is not None and not out.parent.is_dir():
        raise _refused(FileNotFoundError(f"no directory {out.parent}"))
    with _private_output(out, force=force) as sink:

        async def work(operator: _Operator) -> Exported:
            found = await operator.accounts.find_org(org)
            return await Export(operator.db).write_org(found.id, sink.write)

        exported = _operate(settings, work, publish=False)
    counts = ", ".join(f"{n} {kind}" for kind, n in exported.counts.items())
    err_console.print(
        f"Exported {counts} (stream position {exported.position}){f' to {out}' if out else ''}",
        highlight=False,
        soft_wrap=True,
    )
