"""Settings, read from the environment (prefix `SITECOMMS_`) and passed in; never global.

See `docs/configuration.md` for the reference table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sitecomms.redact import redact_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SITECOMMS_", extra="ignore")

    database_url: str = Field(
        "sqlite:///./sitecomms.db",
        description="sqlite:///path.db (embedded default) or postgresql://user@host:port/db",
    )
    host: str = Field("127.0.0.1", description="Address `sitecomms serve` binds")
    port: int = Field(8000, ge=0, le=65535, description="Port `sitecomms serve` binds")
    jwt_secret: SecretStr | None = Field(
        None,
        description="A fixed HS256 signing secret (32+ chars) instead of the key file (no rotation)",
    )
    key_file: Path | None = Field(
        None,
        description=(
            "The key file (token signing keys, mode 0600) when jwt_secret is unset; every process and host"
            " serving one database must share it. Unset: next to the SQLite file (sitecomms.db -> sitecomms.keys),"
            " or ./sitecomms.keys with PostgreSQL (sitecomms.server.keys.key_path)"
        ),
    )
    token_ttl_seconds: int = Field(
        15 * 60, ge=60, le=24 * 3600, description="Lifetime of an access token (clients refresh it silently)"
    )
    refresh_idle_seconds: int = Field(
        30 * 24 * 3600, ge=300, description="A session unused (not refreshed) this long expires: sign in again"
    )
    refresh_retry_grace_seconds: int = Field(
        60,
        ge=0,
        le=600,
        description="A refresh retried this soon with the token just rotated (its answer lost) is answered again",
    )
    access_poll_seconds: float = Field(
        0.5, gt=0, le=5, description="Each process reads the access-change log at least this often"
    )
    login_failures_allowed: int = Field(
        5, ge=1, description="Failed sign-ins per account or address before delays (429) start"
    )
    password_hash_concurrency: int = Field(
        1, ge=1, le=64, description="Password hashes computed at once per process (the rest wait)"
    )
    audit_retention_days: int = Field(365, ge=1, description="Audit events older than this are deleted")
    argon2_time_cost: int = Field(3, ge=1, description="argon2id passes per password hash")
    argon2_memory_kib: int = Field(65536, ge=8, description="argon2id memory per hash, KiB")
    argon2_parallelism: int = Field(4, ge=1, description="argon2id lanes")
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = Field(
        "FULL", description="SQLite durability: FULL survives power loss; NORMAL only process crashes"
    )
    db_pool_size: int = Field(10, ge=1, le=200, description="Database connections per process")
    migrate_on_start: bool = Field(True, description="Apply migrations when `serve` starts")
    bus_url: str = Field(
        "memory://",
        description="memory:// (one process), redis://host:6379/0 or postgres://user@host/db (LISTEN/NOTIFY)",
    )
    ws_heartbeat_seconds: float = Field(15.0, gt=0, description="Server pings an idle socket this often")
    ws_idle_timeout_seconds: float = Field(45.0, gt=0, description="A socket silent this long is dropped")
    failpoints: str = Field(
        "",
        description="Tests only: failpoints to arm, comma-separated (`send.committed`: SIGKILL the process "
        "right after a send's commit, before its notice); never set in production",
    )
    ws_head_check_seconds: float = Field(
        1.0, gt=0, le=60, description="Each process checks its orgs' stream heads this often (a lost notice)"
    )
    ws_hello_timeout_seconds: float = Field(10.0, gt=0, description="Time for a socket's first (hello) frame")
    ws_queue_frames: int = Field(1024, ge=1, description="Frames queued per socket before it must resync")
    ws_replay_limit: int = Field(
        10_000, ge=0, description="A reconnecting client further behind than this is told to resync"
    )
    ws_sockets_per_user: int = Field(
        20, ge=1, description="Open sockets per user and process; a new one closes the oldest (4429)"
    )
    max_request_line_bytes: int = Field(
        8 * 1024, ge=256, description="Longest request target (URL) accepted; longer ones get 414 and are closed"
    )
    max_request_head_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Most bytes of request line plus headers; over it: 431 and the connection closed",
    )
    max_request_headers: int = Field(
        100, ge=8, description="Most header fields in one request; over it: 431 and closed"
    )
    request_head_timeout_seconds: float = Field(
        10.0, gt=0, description="Time for a connection to complete a request's line and headers; then 408 and closed"
    )
    hsts_seconds: int = Field(
        0, ge=0, description="Strict-Transport-Security max-age on every response (only if served over HTTPS); 0: none"
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Comma-separated proxy addresses (or *) whose X-Forwarded-For/-Proto are trusted",
    )
    web_dir: Path = Field(
        Path(__file__).resolve().parent / "web",
        description="The web client's files (index.html, sw.js, static/); default: the installed package's",
    )
    push_ttl_seconds: int = Field(
        24 * 3600, ge=60, le=28 * 24 * 3600, description="Web Push TTL: a push not delivered by then is dropped"
    )
    push_include_content: bool = Field(
        False,
        description=(
            "Put the sender and the first words of a message into its (end-to-end encrypted) push; off: the push"
            " names the message only and the device fetches the text with its own session (docs/push.md)"
        ),
    )
    push_allowed_hosts: str = Field(
        "",
        description="Comma-separated push endpoint hosts exempt from the public-address check (a LAN push service)",
    )
    push_ca_file: Path | None = Field(None, description="Extra CA certificates (PEM) trusted for push endpoints")
    push_subject: str = Field(
        "mailto:push@sitecomms.invalid",
        pattern=r"^(mailto:|https://)\S+$",
        description="The VAPID contact (mailto: or https: URL) push services see with every push",
    )
    push_concurrency: int = Field(64, ge=1, le=1024, description="Pushes in flight per process")
    push_key_file: Path | None = Field(
        None,
        description=(
            "The VAPID key (P-256, mode 0600), shared by every process and host of one database (subscriptions are"
            " bound to it); unset: next to the key file (sitecomms.keys -> sitecomms.vapid)"
        ),
    )
    push_worker: bool = Field(True, description="This process delivers pushes (every process may)")
    metrics_token: SecretStr | None = Field(
        None,
        description=(
            "Serve Prometheus metrics at GET /metrics to `Authorization: Bearer <this>` (16+ chars); unset: no"
            " /metrics (404). Each process serves its own"
        ),
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="Server log level")
    log_format: Literal["text", "json"] = Field(
        "text",
        description=(
            "Server log lines: text (uvicorn's) or json (one object a line: time, level, logger, message,"
            " request_id, user_id, org_id; one access line per request; docs/deployment.md)"
        ),
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The repr (and str) show URLs without their passwords."""
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name in ("database_url", "bus_url") and isinstance(value, str) else value

    @field_validator("metrics_token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("SITECOMMS_METRICS_TOKEN must be at least 16 characters")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("SITECOMMS_JWT_SECRET must be at least 32 characters")
        return value
