from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sitecomms.protocol.cursors import Cursor, InvalidCursor

ORG = "6f1c2b7e-0000-4000-8000-000000000001"
OTHER = "6f1c2b7e-0000-4000-8000-000000000002"


@given(st.integers(min_value=0, max_value=10**17))
def test_round_trip(position: int) -> None:
    cursor = Cursor(position, ORG)
    assert Cursor.parse(str(cursor), ORG) == cursor


def test_format_is_versioned_and_opaque() -> None:
    assert str(Cursor(42, ORG)).startswith("v1.42.")


@pytest.mark.parametrize("text", ["", "42", "v1", "v1.42", "v2.42.abc", "v1.-1.x", "v1.４２.x", "v1.1e3.x", "v1..x"])
def test_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.parse(text, ORG)


def test_rejects_another_orgs_cursor() -> None:
    with pytest.raises(InvalidCursor, match="another organisation"):
        Cursor.parse(str(Cursor(5, OTHER)), ORG)
