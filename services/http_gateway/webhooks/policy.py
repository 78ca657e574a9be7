"""When a delivery counts as done, how long to wait before trying it again, and when a
subscription whose receiver keeps failing is paused. Plain code, no I/O: the clock and the
random source are arguments.

One event of a subscription is in flight at a time (see deliverer.py), so a failing
receiver gets one request per retry delay: capped, jittered exponential backoff on the
event's delivery count, never a storm. Failing since `failing_since` for `pause_after`
pauses the subscription; its events wait in the stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from services.common.backoff import equal_jitter
from services.common.config import Settings

# Room between the POST's timeout and the consumer's ack wait: the server redelivers an
# event only when the replica holding it is gone, never while its POST may still answer.
ACK_WAIT_MARGIN = 10.0


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout: float = 10.0
    retry_base: float = 1.0
    retry_cap: float = 300.0
    pause_after: float = 86400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            timeout=settings.webhook_timeout,
            retry_base=settings.webhook_retry_base,
            retry_cap=settings.webhook_retry_cap,
            pause_after=settings.webhook_pause_after,
        )

    @property
    def ack_wait(self) -> float:
        return self.timeout + ACK_WAIT_MARGIN

    @staticmethod
    def delivered(status: int) -> bool:
        """Only a 2xx answer takes an event off the backlog (a redirect is not followed)."""
        return 200 <= status < 300

    def retry_delay(self, deliveries: int, rng: random.Random) -> float:
        """Seconds before the next try of an event delivered `deliveries` times, all failed."""
        return equal_jitter(deliveries, self.retry_base, self.retry_cap, rng)

    def should_pause(self, failing_since: datetime, now: datetime) -> bool:
        return (now - failing_since).total_seconds() >= self.pause_after
