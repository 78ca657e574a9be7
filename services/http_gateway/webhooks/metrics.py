"""Metrics of webhook deliveries. The gauges describe every subscription of the tenant and
are sampled by every replica alike: aggregate them with `max`, not `sum`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "wa_webhook_deliveries", "Webhook POSTs, by outcome (delivered: a 2xx answer; failed: tried again later)", ["outcome"]
)
for _outcome in ("delivered", "failed"):
    DELIVERIES.labels(_outcome)
POST_SECONDS = Histogram(
    "wa_webhook_post_seconds",
    "How long receivers took to answer a webhook POST",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SUBSCRIPTIONS = Gauge("wa_webhook_subscriptions", "Webhook subscriptions, by state", ["state"])
for _state in ("active", "paused"):
    SUBSCRIPTIONS.labels(_state)
BACKLOG = Gauge("wa_webhook_backlog_events", "Events not delivered yet, all subscriptions together")
