"""Pacing, retry and expiry rules, driven without servers."""

from __future__ import annotations

import itertools
import random
import statistics
from datetime import UTC, date, datetime, timedelta

import pytest

from contracts.queue import PacingPolicy
from services.sending.policy import Pacer, RetryPolicy, expired

DAY = date(2026, 11, 21)


def simulate(policy: PacingPolicy, messages: int, seed: int = 1) -> list[float]:
    """Send as fast as the pacer allows; returns the send times."""
    pacer = Pacer(policy, random.Random(seed))
    now, times = 0.0, []
    for _ in range(messages):
        now += pacer.delay(now, DAY, 1e9)
        assert pacer.delay(now, DAY, 1e9) == pytest.approx(0.0, abs=1e-9)
        pacer.sent(now)
        times.append(now)
    return times


def test_defaults_never_exceed_the_bucket_and_keep_jittered_gaps() -> None:
    policy = PacingPolicy()
    times = simulate(policy, 200)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= policy.min_gap - policy.jitter - 1e-9
    # In any window of 60 s, at most per_minute sends plus the burst.
    for i, start in enumerate(times):
        inside = sum(1 for t in times[i:] if t < start + 60)
        assert inside <= policy.per_minute + policy.burst
    # Steady state: at most 10 a minute, and not much less.
    assert 8.5 <= (len(times) - 1) / (times[-1] - times[0]) * 60 <= 10
    # The rhythm is jittered, not a fixed clock.
    assert statistics.pstdev(gaps) > 0.2


def test_an_idle_session_earns_its_burst_and_no_more() -> None:
    policy = PacingPolicy()  # 10/min, burst 5, gap 2 s ± 1 s
    pacer = Pacer(policy, random.Random(3), started=0.0)
    now = 0.0
    assert pacer.delay(now, DAY, 1e9) == 0.0  # one token from the start
    now = 600.0  # ten idle minutes: the bucket is full, not fuller
    times = []
    for _ in range(8):
        now += pacer.delay(now, DAY, 1e9)
        pacer.sent(now)
        times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(
        policy.min_gap - policy.jitter - 1e-9 <= g <= policy.min_gap + policy.jitter + 1e-9 for g in gaps[:4]
    )
    assert gaps[-1] >= 60 / policy.per_minute - 1e-9  # then the bucket sets the pace


def test_fast_policy_is_paced_by_the_gap_alone() -> None:
    times = simulate(PacingPolicy(per_minute=6000, burst=100, min_gap=0.2, jitter=0.1), 50)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.1 - 1e-9 <= g <= 0.3 + 1e-9 for g in gaps)


def test_disabled_pacing_sends_at_once() -> None:
    assert simulate(PacingPolicy(enabled=False), 20) == [0.0] * 20


def test_daily_cap_waits_for_the_next_day() -> None:
    pacer = Pacer(PacingPolicy(min_gap=0, jitter=0, per_minute=6000, burst=10, daily_cap=3))
    for t in range(3):
        assert pacer.delay(float(t), DAY, 500.0) == 0.0
        pacer.sent(float(t))
    assert pacer.delay(3.0, DAY, 500.0) == 500.0
    assert pacer.delay(3.0, DAY + timedelta(days=1), 86400.0) == 0.0


def test_policy_validation() -> None:
    import msgspec

    for bad in (
        b'{"per_minute": 0}',
        b'{"burst": 0}',
        b'{"min_gap": 1, "jitter": 2}',
        b'{"daily_cap": 0}',
        b'{"nope": 1}',
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=PacingPolicy)


def test_retry_backoff_is_capped_and_jittered() -> None:
    policy, rng = RetryPolicy(base=1, cap=8), random.Random(3)
    for attempt in range(1, 10):
        ceiling = min(8, 2 ** (attempt - 1))
        assert ceiling / 2 <= policy.delay(attempt, rng) <= ceiling


def test_expiry() -> None:
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert not expired(None, now)
    assert expired(now, now) and expired(now - timedelta(seconds=1), now)
    assert not expired(now + timedelta(seconds=1), now)
