"""HAProxy for tests: Debian's `haproxy` running the committed `deploy/haproxy.cfg` on free ports.

`balancing(servers, log_path)` starts its own haproxy process (never the system service) with
the configuration's variables pointed at free loopback ports and at `servers` ("host:port" of
`sitecomms serve` processes: `app1`, `app2`, ...), waits (bounded) until its stats page answers,
and stops it at the end (SIGTERM, then SIGKILL). `Balancer.servers()` reads the backend's server
states from that page (`/stats;csv`) and `Balancer.until(...)` waits until they are as asked.
HAProxy is mandatory like PostgreSQL: without the binary the test fails (`scripts/services`
installs it), it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers import HOST, free_port

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
BACKEND = "sitecomms"  # the backend's name in the configuration
SERVERS = ("app1", "app2")  # its `server` lines, in order
READY_TIMEOUT = 15.0  # seconds for haproxy to answer on its stats port
STOP_TIMEOUT = 5.0
_POLL = 0.05  # seconds between reads of the stats page (haproxy has no event to wait for)
_PORT_ATTEMPTS = 3  # another process may take a free port before haproxy binds it


def binary() -> str:
    """The haproxy executable (Debian puts it in /usr/sbin, not always on PATH); fails if absent."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("HAProxy is required for the load-balancer tests and is not installed: run scripts/services")
    return found


def check(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`haproxy -c` on the configuration with warnings fatal (`-dW`), under `env` added to ours."""
    return subprocess.run(
        [binary(), "-dW", "-c", "-f", str(CONFIG)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Balancer:
    """A running haproxy in front of `servers`."""

    base_url: str  # the plain HTTP frontend
    stats_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    tls_url: str | None = None  # the TLS frontend, when a certificate was given
    _stats: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self._stats = httpx.AsyncClient(base_url=self.stats_url, timeout=2.0, trust_env=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self) -> str:
        status = self.process.poll()
        state = "running" if status is None else f"exited with {status}"
        return f"haproxy on {self.base_url} ({state}); output:\n{self.log()}"

    async def servers(self) -> dict[str, dict[str, str]]:
        """The backend's servers' rows of the stats CSV (`status`, `stot`, `chkdown`, ...), by name."""
        response = await self._stats.get("/stats;csv")
        response.raise_for_status()
        rows = csv.DictReader(io.StringIO(response.text.removeprefix("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def until(self, states: Mapping[str, str], within: float = READY_TIMEOUT) -> dict[str, dict[str, str]]:
        """Until each named server's status is the one given ("UP", "DOWN"); returns the rows."""
        seen: dict[str, str] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    rows = await self.servers()
                    seen = {name: row["status"] for name, row in rows.items()}
                    if all(seen.get(name) == status for name, status in states.items()):
                        return rows
                    await asyncio.sleep(_POLL)
        except TimeoutError:
            raise AssertionError(f"haproxy: servers {seen}, not {dict(states)}, after {within} s") from None

    async def wait_ready(self, within: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"haproxy exited before it was ready: {self.describe()}")
            with contextlib.suppress(httpx.TransportError):
                if (await self._stats.get("/stats;csv")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy was not ready within {within:.0f} s: {self.describe()}")
            await asyncio.sleep(_POLL)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # hard stop: haproxy closes everything at once
            try:
                return self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=STOP_TIMEOUT)

    async def aclose(self) -> None:
        await self._stats.aclose()
        await asyncio.wait_for(asyncio.to_thread(self.stop), 2 * STOP_TIMEOUT + 5)


def environment(servers: Sequence[str], ports: Mapping[str, int], admin_socket: Path) -> dict[str, str]:
    """The configuration's variables for one test run (ports: `http`, `stats` and maybe `tls`)."""
    if len(servers) != len(SERVERS):
        raise ValueError(f"deploy/haproxy.cfg has {len(SERVERS)} servers, not {len(servers)}")
    env = {
        "SITECOMMS_LB_BIND": f"{HOST}:{ports['http']}",
        "SITECOMMS_LB_STATS_BIND": f"{HOST}:{ports['stats']}",
        "SITECOMMS_LB_ADMIN_SOCKET": str(admin_socket),
        "SITECOMMS_LB_UNPRIVILEGED": "1",
    }
    if "tls" in ports:
        env["SITECOMMS_LB_TLS_BIND"] = f"{HOST}:{ports['tls']}"
    env.update({f"SITECOMMS_LB_SERVER{i}": server for i, server in enumerate(servers, start=1)})
    return env


def _spawn(executable: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [executable, "-db", "-f", str(CONFIG)],  # -db: in the foreground, ours to stop
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )


@asynccontextmanager
async def balancing(servers: Sequence[str], log_path: Path, *, tls_cert: Path | None = None) -> AsyncIterator[Balancer]:
    """haproxy on deploy/haproxy.cfg in front of `servers`, on free ports, until the block ends."""
    executable = binary()
    # The admin socket's path must stay short (a Unix socket's path is at most 107 bytes).
    with tempfile.TemporaryDirectory(prefix="sc-lb-") as run_dir:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            ports = {"http": free_port(), "stats": free_port()}
            if tls_cert is not None:
                ports["tls"] = free_port()
            env = {**os.environ, **environment(servers, ports, Path(run_dir) / "admin.sock")}
            if tls_cert is not None:
                env["SITECOMMS_LB_TLS_CERT"] = str(tls_cert)
            process = _spawn(executable, env, log_path)
            balancer = Balancer(
                f"http://{HOST}:{ports['http']}",
                f"http://{HOST}:{ports['stats']}",
                process,
                log_path,
                f"https://{HOST}:{ports['tls']}" if "tls" in ports else None,
            )
            try:
                await balancer.wait_ready()
            except AssertionError:
                await balancer.aclose()
                if attempt < _PORT_ATTEMPTS and "cannot bind socket" in balancer.log().lower():
                    continue
                raise
            break
        try:
            yield balancer
        finally:
            await balancer.aclose()
