"""The pairing rate limit of a session: a sliding window, as plain code."""

from __future__ import annotations

from services.session_actor.pair_limit import PairLimit, PairWindow


def test_three_pair_requests_in_two_minutes_then_the_wait_until_the_oldest_leaves_the_window() -> None:
    window = PairWindow(PairLimit(limit=3, window=120.0))
    assert [window.admit(t) for t in (0.0, 10.0, 20.0)] == [0.0, 0.0, 0.0]
    assert window.admit(30.0) == 90.0  # refused: the request at 0 leaves the window at 120
    assert abs(window.admit(119.9) - 0.1) < 1e-9
    assert window.admit(120.0) == 0.0  # admitted; the window now holds 10, 20, 120
    assert window.admit(125.0) == 5.0


def test_refused_requests_do_not_count() -> None:
    window = PairWindow(PairLimit(limit=1, window=60.0))
    assert window.admit(0.0) == 0.0
    for t in range(1, 60):
        assert window.admit(float(t)) > 0
    assert window.admit(60.0) == 0.0
