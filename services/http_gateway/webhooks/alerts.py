"""The alerts of a subscription (contracts/webhooks.py `WebhookAlert`): plain code, callers
publish what these return. A paused subscription belongs to no session, so its alert has a
subject of its own, `<prefix>.webhook.<wid>.alert`, on the events stream; the event id
names the moment, so a moment reported twice is stored once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.webhooks import WEBHOOK_ALERT_KINDS, WebhookAlert
from services.common.urls import shown


def paused_alert(doc: dict[str, Any], at: datetime, reason: str) -> WebhookAlert:
    return WebhookAlert(
        event_id=f"{doc['_id']}:paused:{at.isoformat()}",
        webhook_id=doc["_id"],
        at=at,
        kind="webhook_paused",
        severity="warning",
        message=f"{reason}: {WEBHOOK_ALERT_KINDS['webhook_paused']}",
        url=shown(doc["url"]),
        failing_since=doc.get("failing_since"),
        last_error=doc.get("last_error"),
    )


def resumed_alert(doc: dict[str, Any], at: datetime) -> WebhookAlert:
    return WebhookAlert(
        event_id=f"{doc['_id']}:resumed:{at.isoformat()}",
        webhook_id=doc["_id"],
        at=at,
        kind="webhook_resumed",
        severity="info",
        message=WEBHOOK_ALERT_KINDS["webhook_resumed"],
        url=shown(doc["url"]),
    )
