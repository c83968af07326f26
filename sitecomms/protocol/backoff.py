"""Jittered exponential backoff: the one formula every SiteComms retry waits by.

A retry after `attempt` earlier failures (0 for the first retry) waits `base · 2^attempt`
seconds, at most `cap`, times a random factor in [0.5, 1) ("equal jitter"): never less than half
the nominal delay, so retries still back off, and spread out, so clients that lost the same
server do not come back in step. `web/static/protocol.js` carries the same function for the
web client (generated from this module by `sitecomms.protocol.js`).

The policies clients use are named here too, so every client backs off alike: `RECONNECT` for
the realtime socket after a drop, `RETRY_SEND` for an outbox message the server could not take.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_DOUBLINGS = 30  # 2^30 · any sane base is past any sane cap; keeps the float finite


def delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (0-based); `rng()` is uniform in [0, 1)."""
    return min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS)) * (0.5 + 0.5 * rng())


@dataclass(frozen=True, slots=True)
class Backoff:
    """A named policy: `delay(attempt)` with its base and cap (seconds)."""

    base: float
    cap: float

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return delay(attempt, self.base, self.cap, rng)


RECONNECT = Backoff(base=0.5, cap=10.0)
RETRY_SEND = Backoff(base=0.5, cap=30.0)
RETRY_PUSH = Backoff(base=2.0, cap=600.0)  # the server, to a push service that failed or asked to slow down
