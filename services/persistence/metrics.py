"""Metrics of persistence: events stored, how late, and how many wait."""

from __future__ import annotations

from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

from contracts.subjects import Subjects

EVENTS_STORED = Counter("wa_persistence_events", "Events stored in MongoDB, by kind", ["kind"])
LAG = Histogram(
    "wa_persistence_lag_seconds",
    "From an event's time to its being stored",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
PENDING = Gauge(
    "wa_persistence_pending_events", "Events in the stream not stored yet (not delivered, or delivered and not acked)"
)


async def sample_backlog(js: JetStreamContext, subjects: Subjects, durable: str) -> None:
    info = await js.consumer_info(subjects.events_stream, durable)
    PENDING.set((info.num_pending or 0) + (info.num_ack_pending or 0))
