"""The one backoff formula: doubling from `base`, capped, with a jitter factor in [0.5, 1)."""

from __future__ import annotations

import random

import pytest

from sitecomms.protocol import backoff
from sitecomms.protocol.backoff import RECONNECT, RETRY_SEND, Backoff, delay


def test_the_delay_doubles_from_base_until_the_cap() -> None:
    highest = [delay(attempt, 0.5, 10.0, rng=lambda: 1.0) for attempt in range(8)]
    assert highest == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_the_jitter_keeps_at_least_half_the_nominal_delay() -> None:
    assert delay(3, 0.5, 10.0, rng=lambda: 0.0) == 2.0
    assert delay(3, 0.5, 10.0, rng=lambda: 0.5) == 3.0
    seeded = random.Random(7)
    for attempt in range(40):
        nominal = min(10.0, 0.5 * 2**attempt)
        assert nominal / 2 <= delay(attempt, 0.5, 10.0, rng=seeded.random) < nominal


def test_huge_and_negative_attempts_stay_finite_and_bounded() -> None:
    assert delay(10**6, 0.05, 5.0, rng=lambda: 1.0) == 5.0
    assert delay(-3, 0.05, 5.0, rng=lambda: 1.0) == 0.05  # treated as the first retry


def test_the_default_randomness_spreads_retries() -> None:
    delays = {delay(4, 0.5, 30.0) for _ in range(50)}
    assert len(delays) > 40 and all(4.0 <= d < 8.0 for d in delays)


@pytest.mark.parametrize("policy", [RECONNECT, RETRY_SEND], ids=["reconnect", "retry-send"])
def test_a_policy_is_the_formula_with_its_base_and_cap(policy: Backoff) -> None:
    for attempt in range(12):
        assert policy.delay(attempt, rng=lambda: 0.25) == backoff.delay(attempt, policy.base, policy.cap, lambda: 0.25)
    assert policy.base < policy.cap
