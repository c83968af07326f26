"""The readable table, the bar, and the chart of latency against offered load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sitecomms.bench.push_phase import reference_p99

Result = dict[str, Any]
PROBE_SAMPLES = 50  # fewer sends while the pushes flow say nothing of a p99


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Result]) -> str:
    header = [
        "phase",
        "offered/s",
        "deliv/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "p99 sched",
        "cpu s/1k",
        "rss MiB",
        "gen cpu%",
        "lost",
        "dup",
    ]
    rows = [header]
    for r in results:
        lat, sched = r["latency_ms"], r["latency_from_schedule_ms"]
        rows.append(
            [
                r["phase"],
                _num(r.get("offered_per_s"), 0),
                _num(r["delivered_per_s"], 0),
                _ms(lat["p50"]),
                _ms(lat["p95"]),
                _ms(lat["p99"]),
                _ms(lat["max"]),
                _ms(sched["p99"]),
                _num(r["server_cpu_s_per_1000"], 2),
                _num(r["server_rss_mib"], 0),
                _num(r["loadgen_cpu_percent"], 0),
                str(r["lost"]),
                str(r["duplicated"]),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def bar(summary: Result) -> list[tuple[str, str, bool | None]]:
    """(criterion, measured, met) for each point of the bar that this run measured."""
    out: list[tuple[str, str, bool | None]] = []
    results: list[Result] = summary["phases"]

    def find(prefix: str) -> Result | None:
        return next((r for r in results if r["phase"].startswith(prefix)), None)

    base = find("open loop 20/s")
    if base:
        lat = base["latency_ms"]
        out.append(
            (
                "20 msg/s: p50 ≤ 3 ms, p99 ≤ 10 ms",
                f"p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}",
                lat["p50"] is not None and lat["p50"] <= 3 and lat["p99"] <= 10,
            )
        )
    best = summary.get("sustained")
    if best is not None:
        out.append(
            (
                "sustained open loop ≥ 2,000 msg/s with p99 ≤ 100 ms",
                f"{best['offered_per_s']:.0f} msg/s (p99 {_ms(best['latency_ms']['p99'])})",
                best["offered_per_s"] >= 2000,
            )
        )
        cpu = best["server_cpu_s_per_1000"]
        out.append(
            (
                "≤ 1 server CPU-s per 1,000 deliveries (at the sustained rate)",
                f"{_num(cpu, 2)}",
                cpu is not None and cpu <= 1,
            )
        )
    fan = find("fan-out")
    if fan:
        p99 = fan["latency_ms"]["p99"]
        out.append(("fan-out 1→50: p99 ≤ 20 ms", f"p99 {_ms(p99)}", p99 is not None and p99 <= 20))
    catch = find("catch-up")
    if catch:
        worst = catch["catch_up_ms"]["max"]
        out.append(("catch-up of 120: ≤ 100 ms per receiver", f"max {_ms(worst)}", worst is not None and worst <= 100))
    big = find("broadcast to")
    if big:
        kib = big["rss_per_connection_kib"]
        out.append((f"{big['idle_connections']:,} idle connections ≤ 40 KiB each", f"{kib:.1f} KiB", kib <= 40))
        last = big["last_delivery_ms"]
        out.append(
            (
                f"broadcast to {big['deliveries']:,} connected: last ≤ 1 s",
                f"{_ms(last)} ms",
                last is not None and last <= 1000,
            )
        )
    pushed = find("push broadcast")
    if pushed:
        out.extend(_push_bar(pushed))
    lost = sum(r["lost"] for r in results)
    dup = sum(r["duplicated"] for r in results)
    out.append(("zero lost, zero duplicated", f"lost {lost}, duplicated {dup}", lost == 0 and dup == 0))
    return out


def _push_bar(r: Result) -> list[tuple[str, str, bool | None]]:
    last = r["last_push_after_ack_ms"]
    change = r["probe_p99_change_percent"]
    bare, without, during = r["probe_before_subscriptions"], r["probe_without_pushes"], r["probe_during_pushes"]

    delivery, answer = (reference_p99(key, without, bare) for key in ("delivery_ms", "send_response_ms"))
    shown = (
        f"delivery p99 {_ms(delivery)} → {_ms(during['delivery_ms']['p99'])} ms "
        f"({_signed(change['delivery_ms'])}), HTTP answer p99 {_ms(answer)} → "
        f"{_ms(during['send_response_ms']['p99'])} ms ({_signed(change['send_response_ms'])}); "
        f"{during['samples']} sends while pushing"
    )
    within = [c is not None and c <= 10 for c in (change["delivery_ms"], change["send_response_ms"])]
    within.append(during["samples"] >= PROBE_SAMPLES)
    return [
        (
            f"push to {r['push_devices']:,} devices: last accepted ≤ 10 s after the send's answer",
            f"{_num(None if last is None else last / 1000, 2)} s, {_num(r['server_cpu_s_per_1000'], 2)} "
            "server CPU-s per 1,000 pushes",
            last is not None and last <= 10_000 and r["push_devices_reached"][0] == r["push_devices"],
        ),
        ("send path p99 while pushes flow: within 10 % of without", shown, all(within)),
        (
            "(send path p99 before any subscription, for reference)",
            f"delivery p99 {_ms(bare['delivery_ms']['p99'])} ms, HTTP answer p99 "
            f"{_ms(bare['send_response_ms']['p99'])} ms",
            None,
        ),
    ]


def _signed(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:+.0f} %"


def push_line(r: Result) -> str:
    """The push phase's own figures, for the runner's log."""
    return (
        f"push: {r['push_devices']} devices of {r['push_users']} users set up in {r['push_setup_s']:.1f} s; "
        f"last push {_ms(r['last_push_after_ack_ms'])} ms after the send's answer "
        f"({_ms(r['last_push_after_ack_with_probe_ms'])} ms with the probe running); "
        f"server {_num(r['server_cpu_s_per_1000'], 2)} CPU-s per 1,000 pushes, "
        f"double {_num(r['double_cpu_s_per_1000'], 2)}; rejections {r['double_rejections']}"
    )


def bar_table(summary: Result) -> str:
    rows = bar(summary)
    width = max(len(c) for c, _, _ in rows)
    lines = [f"{'    ' if ok is None else 'met ' if ok else 'MISS'}  {c.ljust(width)}  {m}" for c, m, ok in rows]
    if summary["config"].get("quick"):
        lines.insert(0, "(--quick: a tiny workload that proves the tool works; the bar applies to the default run)")
    return "\n".join(lines)


def chart(summary: Result, path: Path) -> str:
    """Latency percentiles against offered load (the open-loop phases) as a PNG; a message either way."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install 'sitecomms[bench]')"
    points = sorted(
        (r for r in summary["phases"] if r["phase"].startswith("open loop")), key=lambda r: r["offered_per_s"]
    )
    if not points:
        return "chart skipped: no open-loop phase"
    rates = [r["offered_per_s"] for r in points]
    fig, ax = plt.subplots(figsize=(8, 5))
    for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-"), ("max", "x--")):
        ax.plot(rates, [r["latency_ms"][q] or float("nan") for r in points], style, label=q)
    ax.plot(
        rates,
        [r["latency_from_schedule_ms"]["p99"] or float("nan") for r in points],
        "v:",
        label="p99 from scheduled send",
    )
    ax.axhline(100, color="red", linewidth=0.8, linestyle=":", label="100 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (messages/s, open loop)")
    ax.set_ylabel("send → receive latency (ms)")
    ax.set_title(
        f"SiteComms delivery latency ({summary['config']['database']}, {summary['config']['processes']} process(es))"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"
