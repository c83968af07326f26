"""Real `sitecomms` processes for tests: CLI commands, and `sitecomms serve` on a free port.

`serving(env, log_path)` starts the console script next to the running interpreter on a free
port (or on `port=`, to restart a server where its clients left it), waits (bounded) until
`/healthz` answers, and stops it at the end with SIGTERM, then SIGKILL. The server's output
goes to `log_path`; `Served.log()` returns it for failure messages.
`aserving` is the same for async tests (the blocking start and stop run on a thread).

`fresh_database(backend, directory)` gives a new, empty database URL on SQLite or on the real
PostgreSQL (which must be reachable: the test fails, it never skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import (
    JWT_SECRET,
    PUSH_KEY_FILE,
    create_postgres_database,
    drop_postgres_database,
    small_disk,
)

SITECOMMS = Path(sys.executable).with_name("sitecomms")
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0  # seconds for a server to answer /healthz
STOP_TIMEOUT = 10.0  # seconds for a graceful exit after SIGTERM
CLI_TIMEOUT = 120.0  # seconds for one CLI command
_POLL = 0.05  # seconds between readiness probes (the wait ends early if the child exits)
_PORT_ATTEMPTS = 3  # another process may take the free port before the server binds it

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def base_env(database_url: str, *, jwt_secret: str | None = JWT_SECRET, **extra: str) -> dict[str, str]:
    """The caller's environment without any SITECOMMS_* setting, plus a database and cheap hashing.

    `jwt_secret=None` leaves the secret unset, so the server generates one and keeps it in the
    database (the operator's default).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITECOMMS_")}
    env.update(
        SITECOMMS_DATABASE_URL=database_url,
        SITECOMMS_ARGON2_TIME_COST="1",
        SITECOMMS_ARGON2_MEMORY_KIB="64",
        SITECOMMS_ARGON2_PARALLELISM="1",
        SITECOMMS_SQLITE_SYNCHRONOUS="NORMAL",
        SITECOMMS_PUSH_KEY_FILE=str(PUSH_KEY_FILE),
        PYTHONUNBUFFERED="1",
    )
    if jwt_secret is not None:
        env["SITECOMMS_JWT_SECRET"] = jwt_secret
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], env: Mapping[str, str], *, input: str | None = None, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run `sitecomms ARGS` to completion and capture its output (text)."""
    return subprocess.run(
        [str(SITECOMMS), *args],
        env=dict(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerFailed(AssertionError):
    """The server exited or did not become ready in time; the message carries its output."""


@dataclass
class Served:
    """A running `sitecomms serve` process."""

    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self) -> str:
        """For assertion messages: the exit status, if any, and the server's output."""
        status = self.process.poll()
        state = "running" if status is None else f"exited with {status}"
        return f"sitecomms serve on {self.base_url} ({state}); output:\n{self.log()}"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until this process says it is listening and `/healthz` answers.

        The log line matters: between `free_port()` and the bind, another process may take the
        port, and its `/healthz` must not pass for ours. Only the process that bound the port
        logs it (so the server's log level must be info or debug, the default).
        """
        deadline = time.monotonic() + timeout
        listening = f"Uvicorn running on {self.base_url} "
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise ServerFailed(f"the server exited before it was ready: {self.describe()}")
                if listening in self.log():
                    try:
                        if client.get("/healthz").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServerFailed(f"the server was not ready within {timeout:.0f} s: {self.describe()}")
                with contextlib.suppress(subprocess.TimeoutExpired):  # returns at once if the child exits
                    self.process.wait(timeout=min(_POLL, remaining))

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=STOP_TIMEOUT)


def start(
    env: Mapping[str, str],
    log_path: Path,
    args: Sequence[str] = (),
    *,
    ready_timeout: float = READY_TIMEOUT,
    port: int | None = None,
) -> Served:
    """Start `sitecomms serve ARGS` on 127.0.0.1 and a free port; returns once /healthz answers.

    `port` asks for that port instead (to restart a server where its clients reconnect); it is
    retried like a free one while another process (say the server just stopped) still holds it.
    """
    if env.get("SITECOMMS_LOG_LEVEL", "info") not in ("info", "debug"):
        raise ValueError("readiness is read from the server's info log: use SITECOMMS_LOG_LEVEL info or debug")
    requested = port
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        port = requested if requested is not None else free_port()
        server_env = {**env, "SITECOMMS_HOST": HOST, "SITECOMMS_PORT": str(port)}
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [str(SITECOMMS), "serve", "--host", HOST, "--port", str(port), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env,
            )
        served = Served(f"http://{HOST}:{port}", port, process, log_path)
        try:
            served.wait_ready(ready_timeout)
        except ServerFailed:
            served.stop()
            if attempt < _PORT_ATTEMPTS and "address already in use" in served.log().lower():
                if requested is not None:
                    time.sleep(0.5 * attempt)  # the previous holder of the port may still be exiting
                continue
            raise
        return served
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def serving(
    env: Mapping[str, str],
    log_path: Path,
    args: Sequence[str] = (),
    *,
    ready_timeout: float = READY_TIMEOUT,
    port: int | None = None,
) -> Iterator[Served]:
    served = start(env, log_path, args, ready_timeout=ready_timeout, port=port)
    try:
        yield served
    finally:
        served.stop()


@asynccontextmanager
async def aserving(
    env: Mapping[str, str],
    log_path: Path,
    args: Sequence[str] = (),
    *,
    ready_timeout: float = READY_TIMEOUT,
    port: int | None = None,
) -> AsyncIterator[Served]:
    served = await asyncio.wait_for(
        asyncio.to_thread(start, env, log_path, args, ready_timeout=ready_timeout, port=port),
        ready_timeout * _PORT_ATTEMPTS + 30,
    )
    try:
        yield served
    finally:
        await asyncio.wait_for(asyncio.to_thread(served.stop), 2 * STOP_TIMEOUT + 5)


@asynccontextmanager
async def fresh_database(backend: str, directory: Path) -> AsyncIterator[str]:
    """A new empty database: a file under `directory`, or a database on the real PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'sitecomms-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"sitecomms_test_{uuid.uuid4().hex[:10]}"
    try:
        url = await asyncio.wait_for(create_postgres_database(name), 30)
    except OSError as exc:  # the run must fail, never skip
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable: {exc}")
    try:
        yield url
    finally:
        await asyncio.wait_for(drop_postgres_database(name), 30)


@asynccontextmanager
async def refusable_database(backend: str, directory: Path) -> AsyncIterator[str]:
    """`fresh_database`, with SQLite's file on a disk of its own that `support.write_refusal` can fill."""
    if backend == "sqlite":
        with small_disk(directory) as disk:
            yield f"sqlite:///{disk / 'sitecomms.db'}"
        return
    async with fresh_database(backend, directory) as url:
        yield url
