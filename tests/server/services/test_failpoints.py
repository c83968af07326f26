"""Failpoints are armed only by name, and an unknown name is refused (a typo must not pass silently)."""

from __future__ import annotations

import pytest

from sitecomms.server.services.failpoints import Failpoint, parse, reached


def test_names_arm_their_points_and_nothing_is_armed_by_default() -> None:
    assert parse("") == frozenset()
    assert parse(" send.committed , ") == {Failpoint.SEND_COMMITTED}


def test_an_unknown_failpoint_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(ValueError, match=r"unknown failpoint\(s\) send\.comitted; known: send\.committed"):
        parse("send.comitted")


def test_a_point_not_armed_is_passed_by() -> None:
    reached(frozenset(), Failpoint.SEND_COMMITTED)  # still here: the process was not killed
