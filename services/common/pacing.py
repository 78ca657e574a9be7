"""Token buckets: how long to wait before the next action so a rate is never exceeded.

Plain code over a caller-supplied clock; the caller sleeps for the returned delay.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # most tokens held at once
    tokens: float = 0.0
    updated: float | None = None

    @classmethod
    def full(cls, rate: float, burst: float) -> TokenBucket:
        return cls(rate, burst, tokens=burst)

    def available_in(self, now: float) -> float:
        """How long until a token is available, without taking it."""
        tokens = self.tokens
        if self.updated is not None:
            tokens = min(self.burst, tokens + (now - self.updated) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def reserve(self, now: float) -> float:
        """Take one token; returns how long to wait until it is really available (0 if now).

        Reservations queue up: the caller that gets a delay owns that future token, so
        concurrent callers are spread out instead of all waking at the same instant.
        """
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
