"""Metrics of the send lifecycle, counted where the ledger records each step (so in the
outbound-queue for intake, expiry and clean-up, and in the session-actor for sends)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SENDS = Counter(
    "wa_sends",
    "Sends that reached an outcome: sent, failed, expired, or rejected (never accepted); "
    "`code` is the error code of the last three",
    ["outcome", "code"],
)
SENDS_ACCEPTED = Counter("wa_sends_accepted", "Sends accepted into a session's queue (duplicates not counted)")
SEND_LATENCY = Histogram(
    "wa_send_latency_seconds",
    "From acceptance to `sent` (queue wait, pacing and the send itself)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
DEAD_LETTERS = Counter("wa_dead_letters", "Sends moved to the dead-letter queue")
