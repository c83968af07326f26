"""`sitecomms bench --quick` against a real server: every phase runs, nothing is lost or duplicated.

No timing is asserted: this proves the tool works, the figures belong in docs/performance.md.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.servers import run_cli

PHASE_PREFIXES = ("open loop", "closed loop", "fan-out", "idempotency", "catch-up", "polling")


def bare_env() -> dict[str, str]:
    """PATH only, so the run proves `bench` needs no settings; plus coverage's variables, so it is measured."""
    return {"PATH": str(Path(sys.executable).parent)} | {
        k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")
    }


def test_quick_benchmark_runs_every_phase_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = bare_env()
    done = run_cli(["bench", "--quick", "--out", str(out)], env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((out / "bench.json").read_text())
    names = [phase["phase"] for phase in summary["phases"]]
    for prefix in PHASE_PREFIXES:
        assert any(name.startswith(prefix) for name in names), (prefix, names)
    for phase in summary["phases"]:
        assert phase["deliveries"] > 0, phase
        assert phase["lost"] == 0, phase
        assert phase["duplicated"] == 0, phase
        assert phase["unacknowledged_sends"] == 0, phase
    idempotency = next(p for p in summary["phases"] if p["phase"].startswith("idempotency"))
    assert idempotency["answered_201_then_200"] == idempotency["sent_twice"]
    assert idempotency["deliveries"] == idempotency["sent_twice"]
    catch_up = next(p for p in summary["phases"] if p["phase"].startswith("catch-up"))
    assert catch_up["catch_up_ms"]["max"] is not None

    assert "p99 ms" in done.stdout and "cpu s/1k" in done.stdout  # the table was printed
    assert (out / "bench.txt").read_text().startswith("phase")
    assert summary["errors"] == []


def test_quick_scale_phase_spreads_sockets_over_holders_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = bare_env()
    done = run_cli(["bench", "--quick", "--phases", "scale", "--out", str(out)], env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((out / "bench.json").read_text())
    assert summary["errors"] == []
    (broadcast,) = summary["phases"]
    connections = summary["config"]["scale_connections"]
    assert broadcast["idle_connections"] == connections
    assert broadcast["holder_processes"] == 2
    assert broadcast["deliveries"] == connections + summary["config"]["pairs"]  # every socket, once
    assert (broadcast["lost"], broadcast["duplicated"]) == (0, 0)
    assert broadcast["rss_per_connection_kib"] is not None
