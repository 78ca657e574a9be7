"""Fencing tokens read from the bus or the database: numbers, or nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.common.cluster import fence_token, parse_token, token_happened

epochs = st.integers(min_value=0, max_value=10**14 - 1)
revisions = st.integers(min_value=0, max_value=10**16 - 1)


@given(epochs, revisions, epochs, revisions)
def test_tokens_read_back_as_the_numbers_they_were_made_of_and_order_alike(e1, r1, e2, r2) -> None:
    a, b = parse_token(fence_token(e1, r1)), parse_token(fence_token(e2, r2))
    assert a == (e1, r1) and b == (e2, r2)
    assert (a < b) == ((e1, r1) < (e2, r2))


def test_anything_else_is_no_token() -> None:
    for text in ("", "zzzz", "1", "1.", ".1", "1.2.3", "-1.2", "1.-2", " 1.2", "1.2 ", "\u0661.\u0662", "1" * 20 + ".1"):
        assert parse_token(text) is None, text


def test_a_token_happened_if_no_newer_than_the_buckets_latest_revision() -> None:
    assert token_happened((100, 7), epoch_ms=100, latest_revision=7)
    assert not token_happened((100, 8), epoch_ms=100, latest_revision=7)
    assert token_happened((99, 10**15), epoch_ms=100, latest_revision=7)  # an earlier bucket's
    assert not token_happened((101, 1), epoch_ms=100, latest_revision=7)  # a bucket not made yet
