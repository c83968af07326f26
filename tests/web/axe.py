"""Accessibility checks with axe-core (node_modules/axe-core, installed by `scripts/install --dev`).

`violations(page)` injects axe into the page and returns what it finds, one dict per rule broken
(`id`, `impact`, `help`, `nodes`: the CSS targets); `describe` formats them for an assertion
message. axe goes in through `page.evaluate` (the DevTools protocol), which the page's strict
Content Security Policy does not govern; `add_script_tag` would be an inline script, refused.
"""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
AXE_TIMEOUT = 30.0  # seconds for one axe run (the machine is small and shared)

RUN = """async (context) => {
  const results = await window.axe.run(context ? document.querySelector(context) : document,
                                       {resultTypes: ["violations"]});
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map((n) => ({target: n.target.map(String), summary: n.failureSummary || ""})),
  }));
}"""


@cache
def _source() -> str:
    if not AXE.exists():  # the run must fail, never skip
        pytest.fail(f"axe-core is missing ({AXE}): run ./scripts/install --dev (npm ci)")
    # A trailing expression that is not a function: Playwright then evaluates the source as a
    # script instead of calling what it returns.
    return AXE.read_text(encoding="utf-8") + "\n;void 0;"


async def violations(page: Page, context: str | None = None) -> list[dict[str, Any]]:
    """axe-core's violations on the page (or under the CSS selector `context`)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await asyncio.wait_for(page.evaluate(_source()), AXE_TIMEOUT)
    found = await asyncio.wait_for(page.evaluate(RUN, context), AXE_TIMEOUT)
    return list(found)


def describe(found: list[dict[str, Any]]) -> str:
    """One line per rule broken, then its elements: for a failing assertion's message."""
    lines = [f"{len(found)} accessibility violation(s):"]
    for v in found:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>")
        lines.extend(f"    {' '.join(n['target'])}: {_one_line(n['summary'])}" for n in v["nodes"])
    return "\n".join(lines)


def _one_line(summary: str, limit: int = 240) -> str:
    text = " ".join(line.strip() for line in summary.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"
