"""Capped exponential backoff with equal jitter, the one shape of every retry that waits:
never zero (a storm of instant retries), never above the cap, and spread out so that many
retries started by one failure do not come back at the same moment."""

from __future__ import annotations

import random


def equal_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before retry number `attempt` (1-based): half of min(cap, base * 2^(attempt-1)),
    plus a random part of up to the other half."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
