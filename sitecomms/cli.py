"""The `sitecomms` command: serve, migrate, manage orgs and users, mint tokens, make a demo.

The data commands (backup, restore, export) are in cli_ops.py, registered on this `app`."""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sitecomms.config import Settings
from sitecomms.protocol import limits
from sitecomms.protocol.enums import AuditKind, Role
from sitecomms.protocol.models import AuditPage, UserView
from sitecomms.redact import redact_url
from sitecomms.server import keys, logs
from sitecomms.server.app import build_accounts, build_signin, command_publisher, create_app
from sitecomms.server.demo import DEMO_PASSWORD, Demo, ensure_demo
from sitecomms.server.services.accounts import Accounts, NewUser
from sitecomms.server.services.audit_log import AuditLog
from sitecomms.server.services.errors import ServiceError
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.publisher import NoPublisher, Publisher
from sitecomms.server.services.signin import SignIn
from sitecomms.store import migrate
from sitecomms.store.database import Database, normalise_url, open_database
from sitecomms.store.errors import Unavailable

T = TypeVar("T")

app = typer.Typer(help="SiteComms: self-hosted, offline-first messaging for field teams.", no_args_is_help=True)
org_app = typer.Typer(help="Organisations.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
app.add_typer(org_app, name="org")
app.add_typer(user_app, name="user")
console = Console()
err_console = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="Overrides SITECOMMS_DATABASE_URL", show_default=False)
]


def _settings(database_url: str | None = None, **overrides: object) -> Settings:
    settings = Settings()
    updates = {k: v for k, v in {"database_url": database_url, **overrides}.items() if v is not None}
    return settings.model_copy(update=updates) if updates else settings


@contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """An unusable database URL or an unreachable database: one line on stderr and exit 1, no traceback."""
    try:
        normalise_url(url)
        shown = redact_url(url)
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] invalid database URL: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    try:
        yield
    except (OSError, Unavailable, migrate.MigrationError) as exc:
        err_console.print(
            f"[red]error:[/red] cannot use the database {escape(shown)}: {escape(str(exc))}", soft_wrap=True
        )
        raise typer.Exit(1) from exc


@dataclass
class _Operator:
    """The services a command works with, on a database opened for it (`signin` opens the key file)."""

    settings: Settings
    db: Database
    publisher: Publisher

    @property
    def accounts(self) -> Accounts:
        return build_accounts(self.settings, self.db, self.publisher)

    @property
    def messaging(self) -> Messaging:
        return Messaging(self.db, self.publisher)

    @property
    def signin(self) -> SignIn:
        return build_signin(self.settings, self.db, self.publisher)

    @property
    def audit_log(self) -> AuditLog:
        return AuditLog(self.db)


def _operate(settings: Settings, work: Callable[[_Operator], Awaitable[T]], *, publish: bool = True) -> T:
    """Migrate, then run `work` with the services on a database opened for the occasion; a
    refused operation is one line on stderr and exit 1. Changes are published on a shared bus
    (`publish`), so running servers show them live."""

    async def run() -> T:
        db = open_database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous, pool_size=2)
        try:
            if not publish:
                return await work(_Operator(settings, db, NoPublisher()))
            async with command_publisher(settings.bus_url) as publisher:
                return await work(_Operator(settings, db, publisher))
        finally:
            await db.close()

    try:
        with _database_errors(settings.database_url):
            migrate.upgrade(settings.database_url)
            return asyncio.run(run())
    except (ServiceError, keys.KeyFileError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc


def _with_services(settings: Settings, work: Callable[[Accounts, Messaging], Awaitable[T]]) -> T:
    return _operate(settings, lambda operator: work(operator.accounts, operator.messaging))


def _print_demo(demo: Demo, base_url: str) -> None:
    verb = "Created" if demo.created else "Using the existing"
    console.print(f"[bold]{verb} demo organisation[/bold] (password for every account: [cyan]{DEMO_PASSWORD}[/cyan])")
    table = Table("email", "name", "role")
    table.add_column("direct conversation id", overflow="fold")
    for login in demo.logins:
        table.add_row(login.email, login.display_name, login.role.value, login.conversation_id or "")
    console.print(table)
    medic = next(login for login in demo.logins if login.role is Role.MEDIC)
    console.print(f"Broadcast conversation id: {demo.broadcast_id}")
    console.print(
        "\nTry it as a medic with curl:\n"
        f"  TOKEN=$(curl -s -X POST {base_url}/v1/auth/login -H 'content-type: application/json' \\\n"
        f'    -d \'{{"email": "{medic.email}", "password": "{DEMO_PASSWORD}"}}\' | python3 -c '
        "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
        f'  curl -s -X POST {base_url}/v1/messages -H "authorization: Bearer $TOKEN" '
        "-H 'content-type: application/json' \\\n"
        f'    -d \'{{"conversation_id": "{medic.conversation_id}", "content": "Hello from the field", '
        '"idempotency_key": "my-first-message"}\'\n'
        f"API docs: {base_url}/docs\n"
        f"Dashboard: open {base_url}/ in two browsers, sign in as admin@demo.example and as {medic.email}",
        soft_wrap=True,
        highlight=False,
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1]", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000]", show_default=False)] = None,
    database_url: DatabaseOption = None,
    demo: Annotated[bool, typer.Option("--demo", help="Create the demo organisation first if missing")] = False,
) -> None:
    """Run the server (migrations are applied on start)."""
    from sitecomms.server import serving

    settings = _settings(database_url, host=host, port=port)
    logs.configure(settings.log_format, settings.log_level)  # JSON lines from the start, when chosen
    if demo:
        result = _with_services(settings, ensure_demo)
        _print_demo(result, f"http://{settings.host}:{settings.port}")
    with _database_errors(settings.database_url):
        application = create_app(settings)
    shown = redact_url(settings.database_url)
    listening = f"SiteComms listening on http://{settings.host}:{settings.port} ({shown})"
    if settings.log_format == "json":  # every line of the output is JSON
        logging.getLogger("sitecomms.server").info("%s", listening)
    else:
        console.print(listening, highlight=False, soft_wrap=True)
    _tune_gc()
    serving.run(application, settings)


def _tune_gc() -> None:
    """Fewer, cheaper cyclic collections for a long-running server (measured in docs/performance.md).

    Everything allocated while starting (modules, the app, the schema) is moved out of the
    collector's reach (`gc.freeze`), and the youngest generation is collected every 20,000 net
    allocations instead of 700: under load the default made a collection every few requests and
    added tail latency."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


@app.command("migrate")
def migrate_command(database_url: DatabaseOption = None) -> None:
    """Apply database migrations up to the newest."""
    settings = _settings(database_url)
    with _database_errors(settings.database_url):
        migrate.upgrade(settings.database_url)
    console.print(f"Database at revision {migrate.head_revision()}")


@app.command()
def demo(database_url: DatabaseOption = None) -> None:
    """Create the demo organisation (2 admins, 5 medics, a few messages) and print how to log in."""
    settings = _settings(database_url)
    _print_demo(_with_services(settings, ensure_demo), f"http://{settings.host}:{settings.port}")


@org_app.command("create")
def org_create(name: str, database_url: DatabaseOption = None) -> None:
    """Create an organisation (with its broadcast conversation); prints its id."""

    async def work(accounts: Accounts, _messaging: Messaging) -> str:
        return (await accounts.create_org(name)).id

    console.print(_with_services(_settings(database_url), work))


@user_app.command("create")
def user_create(
    org: Annotated[str, typer.Option(help="Organisation id or name")],
    email: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option(help="Display name")],
    role: Annotated[Role, typer.Option()] = Role.MEDIC,
    password: Annotated[
        str | None, typer.Option(help="Read from a prompt (or stdin) when omitted", show_default=False)
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create a user; a medic gets their direct conversation. Prints the user id."""
    if password is None:
        password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    secret = password  # the account rules (protocol.rules, run by Accounts) say whether it will do

    async def work(accounts: Accounts, _messaging: Messaging) -> str:
        found = await accounts.find_org(org)
        return (await accounts.create_user(None, found.id, NewUser(email, name, role, secret))).id

    console.print(_with_services(_settings(database_url), work))


# --- account lifecycle and the audit log (operator) ------------------------------------------

EmailArgument = Annotated[str, typer.Argument(help="The user's email")]
_OPERATOR_KINDS = {
    AuditKind.USER_CREATED,
    AuditKind.USER_RENAMED,
    AuditKind.ROLE_CHANGED,
    AuditKind.USER_DEACTIVATED,
    AuditKind.USER_REACTIVATED,
    AuditKind.PASSWORD_RESET,
}


def _change_user(email: str, database_url: str | None, change: Callable[[Accounts, str], Awaitable[UserView]]) -> None:
    """Apply an operator change (actor None: audited with no actor) to the user with `email`."""

    async def work(accounts: Accounts, _messaging: Messaging) -> UserView:
        return await change(accounts, (await accounts.find_user(email)).id)

    user = _with_services(_settings(database_url), work)
    state = "active" if user.active else "deactivated"
    console.print(f"{user.email}: {user.role.value}, {state}", highlight=False, soft_wrap=True)


@user_app.command("deactivate")
def user_deactivate(email: EmailArgument, database_url: DatabaseOption = None) -> None:
    """Deactivate a user: every device of theirs is signed out at once; their messages stay."""
    _change_user(email, database_url, lambda accounts, user_id: accounts.set_active(None, user_id, False))


@user_app.command("reactivate")
def user_reactivate(email: EmailArgument, database_url: DatabaseOption = None) -> None:
    """Let a deactivated user sign in again."""
    _change_user(email, database_url, lambda accounts, user_id: accounts.set_active(None, user_id, True))


@user_app.command("promote")
def user_promote(email: EmailArgument, database_url: DatabaseOption = None) -> None:
    """Make a medic an admin of their organisation."""
    _change_user(email, database_url, lambda accounts, user_id: accounts.set_role(None, user_id, Role.ADMIN))


@user_app.command("demote")
def user_demote(email: EmailArgument, database_url: DatabaseOption = None) -> None:
    """Make an admin a medic (never the last active admin of the organisation)."""
    _change_user(email, database_url, lambda accounts, user_id: accounts.set_role(None, user_id, Role.MEDIC))


@user_app.command("reset-password")
def user_reset_password(
    email: EmailArgument,
    password: Annotated[
        str | None, typer.Option(help="Read from a prompt (or stdin) when omitted", show_default=False)
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Set a user's password; every device of theirs is signed out."""
    if password is None:
        password = getpass.getpass("New password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    secret = password

    async def reset(accounts: Accounts, user_id: str) -> UserView:
        await accounts.reset_password(None, user_id, secret)
        return await accounts.find_user(email)

    _change_user(email, database_url, reset)


@user_app.command("list")
def user_list(
    org: Annotated[str, typer.Option(help="Organisation id or name")], database_url: DatabaseOption = None
) -> None:
    """Every user of an organisation, deactivated ones included."""

    async def work(accounts: Accounts, _messaging: Messaging) -> list[UserView]:
        return await accounts.members((await accounts.find_org(org)).id)

    table = Table("email", "name", "role", "active")
    table.add_column("id", overflow="fold")
    for user in _with_services(_settings(database_url), work):
        table.add_row(user.email, user.display_name, user.role.value, "yes" if user.active else "no", user.id)
    console.print(table)


@app.command("audit")
def audit_command(
    org: Annotated[str | None, typer.Option(help="Organisation id or name [default: every one]")] = None,
    user: Annotated[str | None, typer.Option(help="Only the events about the user with this email")] = None,
    kind: Annotated[AuditKind | None, typer.Option(help="Only the events of this kind")] = None,
    limit: Annotated[int, typer.Option(min=1, max=limits.AUDIT_PAGE_MAX)] = limits.AUDIT_PAGE_DEFAULT,
    database_url: DatabaseOption = None,
) -> None:
    """The audit log, newest first: sign-ins, revoked sessions and account changes."""

    async def work(operator: _Operator) -> tuple[AuditPage, dict[str, str]]:
        accounts, audit_log = operator.accounts, operator.audit_log
        org_id = (await accounts.find_org(org)).id if org is not None else None
        subject = await accounts.find_user(user) if user is not None else None
        page = await audit_log.operator_page(org_id, user_id=subject.id if subject else None, kind=kind, limit=limit)
        emails = {m.id: m.email for m in await accounts.members(org_id)} if org_id is not None else {}
        if subject is not None:
            emails[subject.id] = subject.email
        return page, emails

    page, emails = _operate(_settings(database_url), work, publish=False)
    table = Table()
    for column in ("id", "at", "kind", "actor", "subject", "address", "detail"):
        table.add_column(column, overflow="fold")
    for event in page.events:
        actor = emails.get(event.actor_id, event.actor_id) if event.actor_id else ""
        if not actor and event.kind in _OPERATOR_KINDS:
            actor = "(operator)"
        subject_shown = emails.get(event.subject_id, event.subject_id) if event.subject_id else ""
        table.add_row(
            str(event.id),
            event.at.strftime("%Y-%m-%d %H:%M:%S"),
            event.kind,
            escape(actor),
            escape(subject_shown),
            escape(event.address or ""),
            escape(orjson.dumps(event.detail).decode()),
        )
    console.print(table)
    if page.has_more:
        console.print(f"(older events: more than {limit}; narrow with --user or --kind, or raise --limit)")


@app.command()
def token(
    email: str,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds [default: settings]")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Mint an access token for a user (operator use; no password needed; a session "operator
    token" is opened, listed in their devices). Prints the JWT."""

    async def work(operator: _Operator) -> str:
        return (await operator.signin.mint_token(email, ttl)).access_token

    print(_operate(_settings(database_url), work))


keys_app = typer.Typer(
    help="The token signing keys in the key file (their secrets are never printed).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
KeyFileOption = Annotated[
    Path | None, typer.Option("--key-file", help="Overrides SITECOMMS_KEY_FILE", show_default=False)
]


def _key_settings(database_url: str | None, key_file: Path | None) -> Settings:
    """The settings naming the key file; exit 1 when SITECOMMS_JWT_SECRET makes the server ignore it."""
    settings = _settings(database_url, key_file=key_file)
    if settings.jwt_secret is not None:
        err_console.print(
            "[red]error:[/red] SITECOMMS_JWT_SECRET is set, so tokens are signed with it and the key file is"
            " not used: unset it to use the key file",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    return settings


def _age(seconds: float) -> str:
    minutes, hours = int(seconds) // 60, int(seconds) // 3600
    return f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h {minutes % 60}m" if hours else f"{minutes}m"


@keys_app.command("show")
def keys_show(database_url: DatabaseOption = None, key_file: KeyFileOption = None) -> None:
    """List the keys accepted (kid and age, newest, the signing one, first); never the secrets."""
    path = keys.key_path(_key_settings(database_url, key_file))
    try:
        found = keys.Keyring.read(path)
    except keys.KeyFileError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    table = Table("kid", "age", "use", title=str(path))
    now = time.time()
    for index, key in enumerate(found.keys):
        table.add_row(key.kid, _age(now - key.created_at), "signing" if index == 0 else "accepted")
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(
    keep_seconds: Annotated[
        int | None,
        typer.Option(min=0, help="Keep older keys this long after they stop signing [default: the token TTL]"),
    ] = None,
    database_url: DatabaseOption = None,
    key_file: KeyFileOption = None,
) -> None:
    """Make a new signing key; older keys are still accepted until their tokens have expired."""
    settings = _key_settings(database_url, key_file)
    path = keys.key_path(settings)
    keep = settings.token_ttl_seconds if keep_seconds is None else keep_seconds
    try:
        rotated = keys.rotate(path, keep_seconds=keep)
    except keys.KeyFileError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(
        f"{path}: now signing with {rotated.keys[0].kid}; {len(rotated.keys) - 1} older key(s) still accepted,"
        f" {len(rotated.dropped)} dropped. Running servers switch within a second.",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def chat(
    email: Annotated[str, typer.Option(help="Your login email")],
    server: Annotated[str, typer.Option(help="The SiteComms server")] = "http://127.0.0.1:8000",
    store: Annotated[
        Path | None, typer.Option(help="Local store file [default: ~/.local/share/sitecomms/EMAIL.db]")
    ] = None,
    password: Annotated[
        str | None, typer.Option(help="Sign in with this password (else prompted when there is no saved session)")
    ] = None,
) -> None:
    """Chat from the terminal, offline-first: reads the local copy and queues sends while offline."""
    from sitecomms import chat as chat_app
    from sitecomms.client import Client, ConnectionState, ServerUnavailable, SiteCommsError

    store_path = store or Path.home() / ".local" / "share" / "sitecomms" / f"{email.lower()}.db"
    store_path.parent.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        client = await Client.open(server, store_path)
        try:
            if client.me is None or password is not None or not client.has_session:
                secret = password
                if secret is None:
                    secret = getpass.getpass(f"Password for {email}: ") if sys.stdin.isatty() else ""
                try:
                    await client.login(email, secret, device=f"sitecomms chat on {socket.gethostname()[:80]}")
                except ServerUnavailable as exc:
                    if client.me is None:
                        raise SiteCommsError(f"the first sign-in needs the server ({exc})") from exc
                    print("server unreachable: working offline from the local copy", flush=True)
            me = client.me
            assert me is not None
            print(f"signed in as {chat_app.shown(me.display_name)} ({me.role}); local store {store_path}", flush=True)
            await client.start()
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            reader = asyncio.create_task(chat_app.stdin_lines(lines))
            try:
                await chat_app.run(client, lines, lambda text: print(text, flush=True))
            finally:
                reader.cancel()
            if client.state is ConnectionState.SIGNED_OUT:
                raise typer.Exit(1)
        finally:
            await client.close()

    try:
        asyncio.run(run())
    except SiteCommsError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="A tiny workload of a few seconds (no 10k phase)")] = False,
    database: Annotated[str, typer.Option(help="sqlite (a fresh file) or postgres (needs --database-url)")] = "sqlite",
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="An EMPTY PostgreSQL database for --database postgres")
    ] = None,
    bus: Annotated[str, typer.Option(help="memory://, redis://127.0.0.1:6379/0 or postgres://...")] = "memory://",
    processes: Annotated[
        int, typer.Option(min=1, max=4, help="Server processes (more than one needs PostgreSQL and a bus)")
    ] = 1,
    out: Annotated[Path, typer.Option(help="Where bench.json, bench.txt and latency.png go")] = Path("bench-results"),
    phases: Annotated[
        str | None, typer.Option(help="Comma-separated: open,closed,fanout,idempotency,catchup,polling,scale,push")
    ] = None,
    sqlite_synchronous: Annotated[
        str, typer.Option(help="The server's SITECOMMS_SQLITE_SYNCHRONOUS (FULL, the default, or NORMAL)")
    ] = "FULL",
    push_process: Annotated[
        bool, typer.Option("--push-process", help="Pushes delivered by one more server process, out of the traffic")
    ] = False,
) -> None:
    """Benchmark delivery: start a server, drive it from 127.0.0.1, print the table (bounded; stops by itself)."""
    from sitecomms.bench.runner import ALL_PHASES, Config, run

    if database not in ("sqlite", "postgres"):
        raise typer.BadParameter("--database is sqlite or postgres")
    if database == "postgres" and not database_url:
        raise typer.BadParameter("--database postgres needs --database-url of an empty database")
    if processes > 1 and (database != "postgres" or bus == "memory://"):
        raise typer.BadParameter("several processes need --database postgres and a --bus (redis:// or postgres://)")
    chosen = tuple(p.strip() for p in phases.split(",")) if phases else None
    if chosen and not set(chosen) <= set(ALL_PHASES):
        raise typer.BadParameter(f"phases are among {', '.join(ALL_PHASES)}")
    options: dict[str, object] = {
        "database": database,
        "database_url": database_url if database == "postgres" else None,
        "bus_url": bus,
        "processes": processes,
        "push_process": push_process,
        "out": out,
        "extra_env": {"SITECOMMS_SQLITE_SYNCHRONOUS": sqlite_synchronous.upper()},
    }
    if chosen:
        options["phases"] = chosen
    config = Config.quick_config(**options) if quick else Config(**options)  # type: ignore[arg-type]
    run(config, lambda text: console.print(text, highlight=False, soft_wrap=True, markup=False))


def main() -> None:
    app()


from sitecomms import cli_ops as _cli_ops  # noqa: E402, F401  (registers backup, restore, export on `app`)
