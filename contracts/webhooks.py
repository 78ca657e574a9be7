"""Webhook subscriptions (additions to contract v1, answered by the http-gateway):

    <prefix>.webhook.create           WebhookCreate  -> Webhook (with its `secret`, shown once)
    <prefix>.webhook.list             {}             -> WebhookList
    <prefix>.webhook.<wid>.get        {}             -> Webhook
    <prefix>.webhook.<wid>.pause      {}             -> Webhook
    <prefix>.webhook.<wid>.resume     {}             -> Webhook
    <prefix>.webhook.<wid>.delete     {}             -> WebhookDeleted

A subscription posts every event of the events stream that passes its filter to its URL,
signed the Standard Webhooks way (see docs/contract-v1.md). When it pauses or resumes, a
WebhookAlert is published on `<prefix>.webhook.<wid>.alert`, on the events stream too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from contracts.alerts import AlertSeverity
from contracts.types import (
    MAX_LABEL,
    MEDIA_URL_PATTERN,
    PATTERN_HINTS,
    WEBHOOK_SECRET_PATTERN,
    SessionId,
)

MAX_WEBHOOK_URL = 2048
MAX_FILTER_SESSIONS = 100

WebhookUrl = Annotated[
    str,
    msgspec.Meta(pattern=MEDIA_URL_PATTERN, max_length=MAX_WEBHOOK_URL, description=PATTERN_HINTS[MEDIA_URL_PATTERN]),
]
WebhookSecret = Annotated[
    str, msgspec.Meta(pattern=WEBHOOK_SECRET_PATTERN, description=PATTERN_HINTS[WEBHOOK_SECRET_PATTERN])
]
# The kinds of `<prefix>.evt.<sid>.<kind>` a subscription can ask for.
EventKind = Literal["status", "message", "outbound", "alert"]
WebhookState = Literal["active", "paused"]


class WebhookCreate(msgspec.Struct, omit_defaults=True):
    url: WebhookUrl
    # Generated when left out (and answered once, in the reply).
    secret: WebhookSecret | None = None
    # Only these sessions' events; empty: every session's.
    sessions: Annotated[list[SessionId], msgspec.Meta(max_length=MAX_FILTER_SESSIONS)] = []
    # Only these kinds of event; empty: every kind (kinds added later too).
    kinds: list[EventKind] = []
    description: Annotated[str, msgspec.Meta(max_length=MAX_LABEL)] = ""


class Webhook(msgspec.Struct, omit_defaults=True, kw_only=True):
    webhook_id: str
    url: str
    sessions: list[str]
    kinds: list[str]
    description: str
    state: WebhookState
    created_at: datetime
    # Events not delivered yet (waiting, or being delivered), as the stream counts them.
    backlog: int | None = None
    # Since when the receiver has been failing (cleared by a delivery that succeeds).
    failing_since: datetime | None = None
    last_error: str | None = None
    paused_at: datetime | None = None
    paused_reason: str | None = None
    # Only in the reply to `create`: keep it, it is not shown again.
    secret: str | None = None


class WebhookList(msgspec.Struct):
    webhooks: list[Webhook]


class WebhookDeleted(msgspec.Struct):
    webhook_id: str


WEBHOOK_ALERT_KINDS: dict[str, str] = {
    "webhook_paused": "the receiver kept failing: deliveries stopped, the backlog waits; resume once it is fixed",
    "webhook_resumed": "deliveries go on, from the first event not delivered",
}


class WebhookAlert(msgspec.Struct, omit_defaults=True, kw_only=True):
    """`<prefix>.webhook.<wid>.alert`: a subscription paused (after failing for
    `WA_WEBHOOK_PAUSE_AFTER`, or by request) or resumed."""

    event_id: str
    webhook_id: str
    at: datetime
    kind: Annotated[str, msgspec.Meta(description="One of: " + ", ".join(WEBHOOK_ALERT_KINDS))]
    severity: AlertSeverity
    message: str
    url: str  # without user info or query
    failing_since: datetime | None = None
    last_error: str | None = None
