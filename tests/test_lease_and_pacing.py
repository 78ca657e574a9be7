"""Lease validity from local monotonic time; token buckets."""

from __future__ import annotations

from services.common.cluster import fence_token
from services.common.pacing import TokenBucket
from services.session_actor.lease import LeaseClock


def test_a_node_stops_acting_before_its_lease_can_expire_on_the_server() -> None:
    clock = LeaseClock(ttl=6, self_stop=3)
    assert not clock.valid(0)
    clock.renewed(10.0)
    assert clock.valid(12.9) and not clock.valid(13.0)
    assert not clock.surely_expired(15.9) and clock.surely_expired(16.0)


def test_a_late_answer_to_an_older_renewal_does_not_extend_the_lease() -> None:
    clock = LeaseClock(ttl=6, self_stop=3)
    clock.renewed(10.0)
    clock.renewed(8.0)
    assert clock.renewed_at == 10.0


def test_fence_tokens_order_by_bucket_incarnation_then_revision() -> None:
    assert fence_token(1, 99) < fence_token(1, 100) < fence_token(2, 1)
    assert "" < fence_token(0, 1)


def test_token_bucket_spreads_a_burst() -> None:
    bucket = TokenBucket.full(rate=10, burst=2)
    delays = [bucket.reserve(0.0) for _ in range(5)]
    assert delays == [0.0, 0.0, 0.1, 0.2, 0.30000000000000004] or delays[:2] == [0.0, 0.0]
    assert abs(delays[4] - 0.3) < 1e-9


def test_token_bucket_refills_over_time_up_to_its_burst() -> None:
    bucket = TokenBucket.full(rate=1, burst=3)
    for _ in range(3):
        assert bucket.reserve(0) == 0
    assert bucket.reserve(100) == 0  # refilled, but capped at the burst
    assert bucket.reserve(100) == 0
    assert bucket.reserve(100) == 0
    assert bucket.reserve(100) == 1.0
