"""Start `sitecomms serve`, set up the workload over the API, run the phases, write JSON, table and chart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sitecomms.bench import phases, push_phase, report, scale
from sitecomms.bench.loadgen import HttpConnection, HttpPool, Receiver, quiet_gc, run_async
from sitecomms.bench.phases import Pair, World
from sitecomms.bench.push_host import PushHost
from sitecomms.protocol.enums import ConversationType, Role
from sitecomms.redact import redact_url

HOST = "127.0.0.1"
PASSWORD = "bench-password"
ALL_PHASES = ("open", "closed", "fanout", "idempotency", "catchup", "polling", "scale", "push")
# push: 10,000 sessions and subscriptions to set up, then two broadcasts of 10,000 pushes each;
# minutes, not seconds, so it runs only when asked for (`--phases push`); docs/performance.md
DEFAULT_PHASES = tuple(p for p in ALL_PHASES if p != "push")


@dataclass
class Config:
    quick: bool = False
    database: str = "sqlite"  # or postgres
    database_url: str | None = None  # for postgres: an empty database
    bus_url: str = "memory://"
    processes: int = 1
    push_process: bool = False  # one more server, out of the traffic, delivers the pushes alone
    out: Path = Path("bench-results")
    phases: tuple[str, ...] = DEFAULT_PHASES
    pairs: int = 50
    phase_seconds: float = 12.0
    warmup_seconds: float = 3.0
    rates: tuple[float, ...] = (20, 40, 80, 160, 320, 640, 1280, 2560, 5120)
    refine_steps: int = 3  # rates tried between the last passing and the first failing one
    closed_in_flight: int = 32
    fanout_rate: float = 5.0
    idempotent: int = 20
    catchup_receivers: int = 5
    catchup_messages: int = 120
    poll_interval: float = 10.0
    poll_seconds: float = 20.0
    scale_connections: int = 10_000
    push_devices: int = 10_000
    push_probe_rate: float = 100.0  # the pairs' sends per second, with and without pushes flowing
    push_probe_seconds: float = 6.0
    push_within: float = 120.0  # for a broadcast's pushes, before the missing ones count as lost
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def quick_config(cls, **kw: Any) -> Config:
        base: dict[str, Any] = dict(
            quick=True,
            pairs=4,
            phase_seconds=1.0,
            warmup_seconds=0.5,
            rates=(20, 40),
            refine_steps=0,
            closed_in_flight=4,
            fanout_rate=5.0,
            idempotent=3,
            catchup_receivers=2,
            catchup_messages=5,
            poll_interval=0.5,
            poll_seconds=1.0,
            scale_connections=200,
            push_devices=40,
            push_probe_rate=20.0,
            push_probe_seconds=1.0,
            push_within=60.0,
            phases=tuple(p for p in ALL_PHASES if p not in ("scale", "push")),
        )
        base.update(kw)
        return cls(**base)


def _sitecomms() -> str:
    return str(Path(sys.executable).with_name("sitecomms"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Servers:
    def __init__(self, config: Config, workdir: Path, push_host: PushHost | None = None) -> None:
        self.config = config
        self.workdir = workdir
        url = config.database_url or f"sqlite:///{workdir / 'bench.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SITECOMMS_")}
        self.env.update(
            SITECOMMS_DATABASE_URL=url,
            SITECOMMS_BUS_URL=config.bus_url,
            SITECOMMS_JWT_SECRET=secrets.token_hex(32),
            # cheap password hashing: setup logs in 100 users; it does not change delivery
            SITECOMMS_ARGON2_TIME_COST="1",
            SITECOMMS_ARGON2_MEMORY_KIB="64",
            SITECOMMS_ARGON2_PARALLELISM="1",
            SITECOMMS_LOG_LEVEL="warning",  # no log line per connection at 10,000 sockets
            # the idle and broadcast phases hold thousands of sockets for a few accounts (one per
            # simulated device); the per-user cap is a policy for real users, not a load limit
            SITECOMMS_WS_SOCKETS_PER_USER="1000000",
            PYTHONUNBUFFERED="1",
            SITECOMMS_PUSH_KEY_FILE=str(workdir / "bench.vapid"),  # one VAPID key for every process
            **config.extra_env,
        )
        if push_host is not None:  # the push double's endpoints: https on 127.0.0.1, its own CA
            self.env.update(SITECOMMS_PUSH_ALLOWED_HOSTS=HOST, SITECOMMS_PUSH_CA_FILE=str(push_host.ca_file))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [_sitecomms(), *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"sitecomms {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout.strip()

    def start(self) -> None:
        api_env = {**self.env, "SITECOMMS_PUSH_WORKER": "false"} if self.config.push_process else self.env
        for index in range(self.config.processes):
            self.ports.append(self._start(index, api_env))
        if self.config.push_process:  # its port takes no traffic; its CPU counts as the servers'
            self._start(self.config.processes, {**self.env, "SITECOMMS_PUSH_WORKER": "true"})

    def _start(self, index: int, env: dict[str, str]) -> int:
        port = _free_port()
        log = (self.workdir / f"server-{index}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [_sitecomms(), "serve", "--host", HOST, "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        self._wait_ready(index, port)
        return port

    def _wait_ready(self, index: int, port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.processes[index].poll() is not None:
                raise RuntimeError(f"server exited: {(self.workdir / f'server-{index}.log').read_text()}")
            try:
                with socket.create_connection((HOST, port), timeout=1) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready within 60 s")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def _setup(config: Config, servers: Servers, log: Any) -> World:
    pools = [HttpPool(HOST, port) for port in servers.ports]
    http = await HttpConnection.open(HOST, servers.ports[0])

    async def call(method: str, path: str, body: Any = None, token: str | None = None, ok: int = 200) -> Any:
        status, data = await http.request(method, path, body, token)
        if status != ok:
            raise RuntimeError(f"{method} {path} answered {status}: {data}")
        return data

    async def login(email: str) -> str:
        return str((await call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD}))["access_token"])

    admin_token = await login("admin0@bench.example")
    admin_tokens = [admin_token]
    medic_tokens: list[str] = []
    medic_ids: list[str] = []
    for i in range(config.pairs):
        if i > 0:
            await call(
                "POST",
                "/v1/users",
                {
                    "email": f"admin{i}@bench.example",
                    "display_name": f"Admin {i}",
                    "role": Role.ADMIN.value,
                    "password": PASSWORD,
                },
                admin_token,
                ok=201,
            )
            admin_tokens.append(await login(f"admin{i}@bench.example"))
        user = await call(
            "POST",
            "/v1/users",
            {
                "email": f"medic{i}@bench.example",
                "display_name": f"Medic {i}",
                "role": Role.MEDIC.value,
                "password": PASSWORD,
            },
            admin_token,
            ok=201,
        )
        medic_ids.append(user["id"])
        medic_tokens.append(await login(f"medic{i}@bench.example"))
    conversations = (await call("GET", "/v1/conversations", token=admin_token))["conversations"]
    await http.close()
    by_medic = {c["medic_id"]: c["id"] for c in conversations if c["type"] == ConversationType.DIRECT}
    broadcast_id = next(c["id"] for c in conversations if c["type"] == ConversationType.BROADCAST)
    ws_urls = [f"ws://{HOST}:{port}/v1/realtime" for port in servers.ports]
    world = World(
        pools=pools,
        pairs=[],
        broadcast_id=broadcast_id,
        admin_token=admin_token,
        medic_tokens=medic_tokens,
        receivers=[],
        server_pids=[p.pid for p in servers.processes],
        ws_urls=ws_urls,
        host=HOST,
        ports=list(servers.ports),
    )
    for i in range(config.pairs):
        # sockets alternate over the processes and sends go round robin: about half the deliveries cross the bus
        receiver = Receiver(ws_urls[(i + 1) % len(ws_urls)], f"medic{i}", medic_tokens[i], world.receipts)
        world.receivers.append(receiver)
        world.pairs.append(Pair(admin_tokens[i], by_medic[medic_ids[i]], receiver))
    await asyncio.gather(*(r.connect(None) for r in world.receivers))
    await asyncio.wait_for(asyncio.gather(*(r.live.wait() for r in world.receivers)), 30)
    log(f"setup: 1 org, {config.pairs} admins, {config.pairs} medics with live sockets")
    return world


async def _find_sustained(
    config: Config, world: World, done: Callable[[dict[str, Any]], None]
) -> dict[str, Any] | None:
    """Double the rate until p99 reaches 100 ms (or anything is lost), then try three steps between
    the last rate that passed and the first that failed; the highest passing phase is the result."""

    async def attempt(rate: float) -> dict[str, Any] | None:
        result = await phases.open_loop(world, f"open loop {rate:g}/s", rate, config.phase_seconds)
        done(result)
        p99 = result["latency_ms"]["p99"]
        ok = p99 is not None and p99 < 100 and result["lost"] == 0 and result["unacknowledged_sends"] == 0
        return result if ok else None

    sustained: dict[str, Any] | None = None
    passed, failed = 0.0, None
    for rate in config.rates:
        result = await attempt(rate)
        if result is None:
            failed = rate
            break
        sustained, passed = result, rate
    if failed is not None and passed > 0 and config.refine_steps:
        step = (failed - passed) / (config.refine_steps + 1)
        for k in range(1, config.refine_steps + 1):
            await asyncio.sleep(1)
            result = await attempt(round(passed + k * step))
            if result is None:
                break
            sustained = result
    return sustained


async def _run_phases(config: Config, world: World, log: Any, push_host: PushHost | None) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    sustained: dict[str, Any] | None = None

    def done(result: dict[str, Any]) -> None:
        results.append(result)
        quiet_gc()  # what this phase recorded is kept to the end: out of the collector's way
        lat = result["latency_ms"]
        log(
            f"  {result['phase']}: {result['delivered_per_s']:.0f} deliveries/s, p50 {report._ms(lat['p50'])} ms, "
            f"p99 {report._ms(lat['p99'])} ms (HTTP answer p50 {report._ms(result['send_response_ms']['p50'])} ms), "
            f"lost {result['lost']}, dup {result['duplicated']}"
        )

    quiet_gc()
    await phases.warm_up(world, 20, config.warmup_seconds)
    if "open" in config.phases:
        sustained = await _find_sustained(config, world, done)
        await asyncio.sleep(1)
    if "closed" in config.phases:
        done(await phases.closed_loop(world, config.closed_in_flight, config.phase_seconds))
    if "fanout" in config.phases:
        done(await phases.fan_out(world, config.fanout_rate, config.phase_seconds))
    if "idempotency" in config.phases:
        done(await phases.idempotency(world, config.idempotent))
    if "catchup" in config.phases:
        done(await phases.catch_up(world, config.catchup_receivers, config.catchup_messages))
    if "polling" in config.phases:
        done(await phases.polling(world, config.poll_interval, 20, config.poll_seconds))
    errors: list[str] = []
    if "scale" in config.phases and config.scale_connections:
        try:  # the one phase that can hit machine limits (open files, ports): keep what was measured before it
            done(await scale.scale(world, config.scale_connections))
        except (OSError, TimeoutError, RuntimeError) as exc:
            errors.append(f"scale: {type(exc).__name__}: {exc}")
            log(f"  the scale phase failed: {errors[-1]}")
    if "push" in config.phases and push_host is not None:
        try:  # its setup makes 10,000 sessions: keep what was measured before it
            result = await push_phase.push(
                world,
                push_host,
                devices=config.push_devices,
                probe_rate=config.push_probe_rate,
                probe_seconds=config.push_probe_seconds,
                within=config.push_within,
            )
            done(result)
            log(f"  {report.push_line(result)}")
        except (OSError, TimeoutError, RuntimeError) as exc:
            errors.append(f"push: {type(exc).__name__}: {exc}")
            log(f"  the push phase failed: {errors[-1]}")
    return {"phases": results, "sustained": sustained, "errors": errors}


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
    }


def _shown(value: object) -> object:
    """A configuration value as recorded in bench.json: paths as text, URLs without their passwords."""
    if isinstance(value, Path):
        return str(value)
    return redact_url(value) if isinstance(value, str) and "://" in value else value


def run(config: Config, log: Any = print) -> dict[str, Any]:
    """The whole benchmark; returns the summary (also written to config.out)."""
    config.out.mkdir(parents=True, exist_ok=True)
    workdir = config.out / "work"
    workdir.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (workdir / "bench.db").unlink()
    with contextlib.ExitStack() as stack:  # the push double first: the servers' settings name its CA
        push_host = stack.enter_context(PushHost()) if "push" in config.phases else None
        return _run_with(config, workdir, push_host, log)


def _run_with(config: Config, workdir: Path, push_host: PushHost | None, log: Any) -> dict[str, Any]:
    servers = Servers(config, workdir, push_host)
    servers.cli("migrate")
    servers.cli("org", "create", "Bench")
    servers.cli(
        "user",
        "create",
        "--org",
        "Bench",
        "--email",
        "admin0@bench.example",
        "--name",
        "Admin 0",
        "--role",
        Role.ADMIN.value,
        "--password",
        PASSWORD,
    )
    started = time.time()
    servers.start()
    log(f"server(s) on {', '.join(map(str, servers.ports))} ({config.database}, bus {redact_url(config.bus_url)})")

    async def main() -> dict[str, Any]:
        world = await _setup(config, servers, log)
        # spawned: a fresh interpreter, none of this process's sockets
        world.sender = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await _run_phases(config, world, log, push_host)
        finally:
            if world.sender is not None:
                world.sender.shutdown(wait=True, cancel_futures=True)
            for receiver in world.receivers:
                await receiver.close()
            for pool in world.pools:
                await pool.close()

    try:
        outcome = run_async(main)
    finally:
        servers.stop()
    summary: dict[str, Any] = {
        "config": {k: _shown(v) for k, v in asdict(config).items()},
        "machine": _machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
        "server_env_notes": "argon2 time_cost=1 memory=64 KiB parallelism=1 (setup only); "
        f"SQLITE_SYNCHRONOUS {config.extra_env.get('SITECOMMS_SQLITE_SYNCHRONOUS', 'FULL')}; log level warning",
        **outcome,
    }
    (config.out / "bench.json").write_text(json.dumps(summary, indent=2))
    text = report.table(summary["phases"]) + "\n\n" + report.bar_table(summary)
    if summary["errors"]:
        text += "\n\nerrors:\n" + "\n".join(summary["errors"])
    (config.out / "bench.txt").write_text(text + "\n")
    log("\n" + text)
    log(report.chart(summary, config.out / "latency.png"))
    log(f"results: {config.out / 'bench.json'}, {config.out / 'bench.txt'}")
    return summary
