"""Packaging: the SDK installs alone; the server, the Redis bus and the chart are extras.

Read from the installed distribution's metadata and proven in fresh interpreters where the
server's packages cannot be imported: the client SDK, the terminal chat's module and the
protocol import without them, and the `sitecomms` command and the Redis bus say in one line
which extra to install.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import sitecomms
from sitecomms.extras import EXTRA_OF

PACKAGE = Path(sitecomms.__file__).parent
ROOT = PACKAGE.parent
CLIENT_DEPENDENCIES = {"httpx", "websockets", "orjson"}  # all an application embedding the SDK installs
CLIENT_SIDE = [PACKAGE / "client", PACKAGE / "protocol", PACKAGE / "chat.py"]
SERVER_SIDE = sorted(set(EXTRA_OF))  # every optional package, by import name
TIMEOUT = 60.0
PIP_DRY_RUN = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--dry-run"]
PIP_DRY_RUN += ["--ignore-installed"]  # resolve as on a machine that has nothing installed


def requirements() -> list[Requirement]:
    return [Requirement(line) for line in importlib.metadata.requires("sitecomms") or []]


def name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("_", "-")


def test_the_sdk_alone_requires_only_the_client_dependencies() -> None:
    base = {name(r) for r in requirements() if r.marker is None}
    assert base == CLIENT_DEPENDENCIES


def test_every_requirement_is_a_range_never_a_pin() -> None:
    for requirement in requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators, f"{requirement} has no version range"
        assert not operators & {"==", "==="}, f"{requirement} is pinned: exact versions belong in the lock"


def test_each_optional_import_is_installed_by_the_extra_that_names_it() -> None:
    extras_of: dict[str, set[str]] = {}
    for requirement in requirements():
        if requirement.marker is not None:
            for extra in ("server", "redis", "bench", "dev"):
                if requirement.marker.evaluate({"extra": extra}):
                    extras_of.setdefault(name(requirement), set()).add(extra)
    distributions = importlib.metadata.packages_distributions()
    for module, extra in EXTRA_OF.items():
        if module not in distributions:  # an optional package not installed here (matplotlib, say)
            continue
        dist = distributions[module][0].lower().replace("_", "-")
        assert extra in extras_of.get(dist, set()), f"import {module} ({dist}) is not in the {extra!r} extra"


def _third_party_imports(paths: list[Path]) -> dict[str, str]:
    """Top-level modules imported anywhere in `paths` that are neither stdlib nor sitecomms."""
    found: dict[str, str] = {}
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*.py")))]
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in ("sitecomms", "__future__"):
                    found.setdefault(top, str(file.relative_to(ROOT)))
    return found


def test_the_client_side_imports_only_what_the_sdk_declares() -> None:
    distributions = importlib.metadata.packages_distributions()
    for module, where in _third_party_imports(CLIENT_SIDE).items():
        dists = {d.lower() for d in distributions.get(module, [])}
        assert dists & CLIENT_DEPENDENCIES, f"{where} imports {module}, which `pip install sitecomms` does not install"


BLOCKER = """
import importlib.abc, sys

BLOCKED = set(sys.argv[1].split(","))

class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by the test)", name=fullname)
        return None

sys.meta_path.insert(0, Uninstalled())
sys.argv = ["sitecomms", *sys.argv[2:]]
"""


def without(
    blocked: list[str], code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter in which the `blocked` packages cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )


def test_the_client_sdk_imports_without_the_server_packages() -> None:
    modules = ["sitecomms.client", "sitecomms.chat", "sitecomms.redact", "sitecomms.extras"]
    modules += sorted(f"sitecomms.protocol.{p.stem}" for p in (PACKAGE / "protocol").glob("*.py"))
    code = f"""
import importlib, json
for module in {modules!r}:
    importlib.import_module(module)
from sitecomms.client import Client
print(json.dumps(sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)))
"""
    result = without(SERVER_SIDE, code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_command_without_the_server_extra_says_what_to_install() -> None:
    result = without(SERVER_SIDE, "from sitecomms.__main__ import main\nmain()", "serve")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    assert "pip install 'sitecomms[server]'" in result.stderr, result.stderr


def test_a_redis_bus_without_the_redis_extra_says_what_to_install() -> None:
    code = """
from sitecomms.bus import open_bus
from sitecomms.extras import MissingExtra
try:
    open_bus("redis://127.0.0.1:6379/0")
except MissingExtra as exc:
    print(exc)
else:
    print("no error")
"""
    result = without(["redis"], code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "the redis:// bus needs redis, which is not installed: pip install 'sitecomms[redis]'"
    )


def test_serve_with_a_redis_bus_without_the_redis_extra_says_what_to_install(tmp_path: Path) -> None:
    env = {"SITECOMMS_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "SITECOMMS_BUS_URL": "redis://127.0.0.1:6379/0"}
    result = without(["redis"], "from sitecomms.__main__ import main\nmain()", "serve", "--port", "0", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "sitecomms: the redis:// bus needs redis, which is not installed: pip install 'sitecomms[redis]'"
    )


def test_pip_resolves_the_sdk_alone_to_no_server_framework(tmp_path: Path) -> None:
    """The real proof: what `pip install sitecomms` (no extra) would install, as pip resolves it."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [*PIP_DRY_RUN, "--report", str(report), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and any(
        sign in result.stderr for sign in ("NewConnectionError", "No matching distribution", "Network is unreachable")
    ):
        pytest.skip(f"no package index reachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    installed = {
        item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]
    }
    assert installed >= CLIENT_DEPENDENCIES
    server = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "asyncpg", "redis", "argon2-cffi"}
    server |= {"typer", "rich", "pydantic", "pydantic-settings", "pyjwt", "matplotlib"}
    assert not installed & server, installed & server
