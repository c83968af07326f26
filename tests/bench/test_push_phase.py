"""`sitecomms bench --quick --phases push` against a real server and the push double in its own
process: every subscribed device gets exactly one push of each broadcast, and the report has the
push figures. No timing is asserted (the figures belong in docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sitecomms.bench.push_phase import p99_changes
from tests.bench.test_smoke import bare_env
from tests.servers import run_cli

DEVICES = 40  # Config.quick_config: two users with PUSH_DEVICES_PER_USER sessions each


def test_quick_push_phase_pushes_every_device_once_and_reports_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = run_cli(["bench", "--quick", "--phases", "push", "--out", str(out)], bare_env(), timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((out / "bench.json").read_text())
    assert summary["errors"] == []
    (result,) = summary["phases"]
    assert result["push_devices"] == DEVICES
    assert result["push_users"] == 2
    assert result["push_devices_reached"] == [DEVICES, DEVICES]  # broadcast A alone, B with the probe
    assert result["push_pushes"] == [DEVICES, DEVICES]  # so no device got two of one message
    assert (result["lost"], result["duplicated"], result["double_rejections"]) == (0, 0, 0)
    assert result["unacknowledged_sends"] == 0
    assert result["last_push_after_ack_ms"] > 0
    assert result["last_push_after_ack_with_probe_ms"] > 0
    assert result["server_cpu_s_per_1000"] > 0
    without, during = result["probe_without_pushes"], result["probe_during_pushes"]
    assert result["probe_before_subscriptions"]["samples"] > 0
    assert without["samples"] > 0
    assert without["delivery_ms"]["p99"] is not None and without["send_response_ms"]["p99"] is not None
    assert during["lost"] == 0
    # 40 pushes take a few ms: the probe may send nothing meanwhile, but the figures are there
    assert set(during["delivery_ms"]) == set(during["send_response_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(result["probe_p99_change_percent"]) == {"delivery_ms", "send_response_ms"}
    text = (out / "bench.txt").read_text()
    assert "push broadcast to 40 devices" in text
    assert "send path p99 while pushes flow" in text


def test_with_a_push_process_of_its_own_every_device_still_gets_one_push_of_each(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = run_cli(
        ["bench", "--quick", "--phases", "push", "--push-process", "--out", str(out)], bare_env(), timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "bench.json").read_text())
    assert summary["errors"] == [] and summary["config"]["push_process"] is True
    (result,) = summary["phases"]
    assert result["push_pushes"] == [DEVICES, DEVICES]
    assert (result["lost"], result["duplicated"]) == (0, 0)
    logs = sorted(p.name for p in (out / "work").glob("server-*.log"))
    assert logs == ["server-0.log", "server-1.log"], "the API server and the push process"


def test_the_no_push_reference_is_the_quieter_probe_so_a_stall_in_one_makes_no_bar_easier() -> None:
    """The bench once printed "met" for 23 ms against a 256 ms reference: its probe without pushes
    had met a WAL flush stall, while the probe before any subscription said 3.2 ms."""
    stalled = {"delivery_ms": {"p99": 256.0}, "send_response_ms": {"p99": None}}
    quiet = {"delivery_ms": {"p99": 3.2}, "send_response_ms": {"p99": None}}
    during = {"delivery_ms": {"p99": 23.0}, "send_response_ms": {"p99": 20.0}}
    change = p99_changes(during, stalled, quiet)
    assert change["delivery_ms"] == pytest.approx(618.75)
    assert change["send_response_ms"] is None  # no reference: no figure, and the bar is not met
