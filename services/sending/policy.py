"""Send policy, as plain code: pacing against bans, retries, expiry.

The owning session actor applies them at the moment it sends, because pacing is only
meaningful where the messages actually leave; the outbound-queue applies expiry to sends
still waiting.

Pacing (seed report 001: numbers banned for sending too fast) combines, per session:

- a token bucket: at most `per_minute` sends per minute on average, `burst` at once;
- a minimum gap between two sends with random jitter (`min_gap` +- `jitter` seconds), so
  the rhythm does not look like a machine's;
- an optional daily cap (`daily_cap` sends per UTC day);
- optionally, "typing..." shown for `typing_seconds` before each send.

Pacing delays sends, it never drops them. A session that changes owner starts with one
token: after a move it sends a little slower, never in a burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime

from contracts.queue import PacingPolicy
from services.common.backoff import equal_jitter
from services.common.config import Settings
from services.common.pacing import TokenBucket


def default_pacing(settings: Settings) -> PacingPolicy:
    """The deployment's pacing, for sessions without a policy of their own."""
    return PacingPolicy(
        enabled=settings.pacing_enabled,
        per_minute=settings.pacing_per_minute,
        burst=settings.pacing_burst,
        min_gap=settings.pacing_min_gap,
        jitter=min(settings.pacing_jitter, settings.pacing_min_gap),
        daily_cap=settings.pacing_daily_cap,
        typing_seconds=settings.pacing_typing_seconds,
    )


@dataclass
class Pacer:
    """When may the next send of one session leave? Time comes in; nothing is slept here."""

    policy: PacingPolicy
    rng: random.Random = field(default_factory=random.Random)
    bucket: TokenBucket = field(init=False)
    last_send: float | None = None
    gap: float = 0.0  # the jittered gap chosen after the last send
    extra: float = 0.0  # jitter added when the bucket, not the gap, holds the next send
    day: date | None = None
    sent_today: int = 0

    started: float | None = None  # when the session came here: the bucket fills from then

    def __post_init__(self) -> None:
        # One token at first: a session that just moved here may have sent a moment ago.
        # It refills while the session is idle, so a burst is earned, not granted.
        self.bucket = TokenBucket(
            self.policy.per_minute / 60.0, float(self.policy.burst), tokens=1.0, updated=self.started
        )

    def delay(self, now: float, today: date, seconds_to_midnight: float) -> float:
        """Seconds to wait before the next send (0: now); call `sent` once it has left."""
        if not self.policy.enabled:
            return 0.0
        if self.day != today:
            self.day, self.sent_today = today, 0
        if self.policy.daily_cap is not None and self.sent_today >= self.policy.daily_cap:
            return seconds_to_midnight
        after_gap = 0.0 if self.last_send is None else max(0.0, self.last_send + self.gap - now)
        for_token = self.bucket.available_in(now)
        # Waiting longer never breaks the rate; it keeps a bucket-bound rhythm irregular.
        return max(after_gap, for_token + self.extra if for_token > 0 else 0.0)

    def capped(self, today: date) -> bool:
        """The daily cap is used up for `today` (sends wait until the next day)."""
        cap = self.policy.daily_cap
        return self.policy.enabled and cap is not None and self.day == today and self.sent_today >= cap

    def sent(self, now: float) -> None:
        if not self.policy.enabled:
            return
        self.bucket.reserve(now)
        self.last_send = now
        self.gap = self.policy.min_gap + self.rng.uniform(-self.policy.jitter, self.policy.jitter)
        self.extra = self.rng.uniform(0, self.policy.jitter)
        self.sent_today += 1


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Capped exponential backoff with equal jitter for retry number `attempt` (1-based)."""
        return equal_jitter(attempt, self.base, self.cap, rng)


def expired(expires_at: datetime | None, now: datetime) -> bool:
    """A stale one-time code is worse than none: past `expires_at` a send is never sent."""
    return expires_at is not None and now >= expires_at
