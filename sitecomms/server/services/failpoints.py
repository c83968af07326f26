"""Failpoints: named places where a test has the process die on purpose, at an exact instruction.

A crash between two steps (a send's commit and its bus notice) can only be tested for real by
killing the process right there; a timer or an outside `kill` lands anywhere. `SITECOMMS_FAILPOINTS`
names the points to arm (comma-separated `Failpoint` values); an armed point SIGKILLs its own
process when reached: no cleanup, no flush, as a power cut or the OOM killer would. Nothing is
armed unless that setting says so, and production configurations never set it (docs/configuration.md).
"""

from __future__ import annotations

import enum
import logging
import os
import signal

log = logging.getLogger("sitecomms.failpoints")


class Failpoint(enum.Enum):
    SEND_COMMITTED = "send.committed"  # a send's transaction has committed; its notice is not yet published


def parse(text: str) -> frozenset[Failpoint]:
    """The failpoints `text` arms; ValueError naming any it does not know."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {point.value: point for point in Failpoint}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown failpoint(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return frozenset(known[name] for name in names)


def reached(armed: frozenset[Failpoint], point: Failpoint) -> None:
    """Die at once by SIGKILL if `point` is armed."""
    if point in armed:
        log.warning("failpoint %s reached: killing this process", point.value)
        os.kill(os.getpid(), signal.SIGKILL)
