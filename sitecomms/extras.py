"""Optional dependencies: which extra of the `sitecomms` distribution provides which import.

`pip install sitecomms` installs the client SDK (`sitecomms.client`, `sitecomms.protocol`) and
its few dependencies only. The server and the `sitecomms` command come with the `server` extra,
the Redis bus with `redis`, the benchmark's chart with `bench` (pyproject.toml declares them).
Code that needs an optional package imports it through `require()`, which turns its absence into
`MissingExtra`: an `ImportError` whose message is the `pip install` line that fixes it.
`__main__` prints that line instead of a traceback. Stdlib only, imported by any layer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Top-level import name -> the extra that installs it.
EXTRA_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "fastapi",
            "starlette",
            "uvicorn",
            "sqlalchemy",
            "alembic",
            "asyncpg",
            "pydantic",
            "pydantic_settings",
            "jwt",
            "argon2",
            "email_validator",
            "typer",
            "rich",
            "prometheus_client",
        ),
        "server",
    ),
    "redis": "redis",
    "matplotlib": "bench",
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message says which extra installs it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs {package}, which is not installed: pip install 'sitecomms[{extra}]'")
        self.package = package
        self.extra = extra


def missing_extra(exc: ModuleNotFoundError, purpose: str) -> MissingExtra | None:
    """The `MissingExtra` behind an import failure, or None when the missing module is no extra's."""
    package = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(package)
    return MissingExtra(package, extra, purpose) if extra is not None else None


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` (an optional dependency) for `purpose`, or raise `MissingExtra`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = missing_extra(exc, purpose)
        if missing is None:
            raise
        raise missing from exc
