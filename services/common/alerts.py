"""Which moments are alerts, and the alert events that say so (contracts/alerts.py), as
plain code: callers publish what these return.

Event ids are derived from the moment, so a moment reported twice (two monitor replicas,
a retried publish) is stored once by JetStream's dedupe.
"""

from __future__ import annotations

from datetime import date, datetime

from contracts.alerts import AlertEvent, AlertSeverity
from contracts.envelope import ErrorBody
from contracts.events import StatusEvent
from services.common.reasons import LOGOUT_REQUESTED, reason_kind

# Status changes that are alerts: (state or None for any, reason kind) -> (kind, severity).
_STATUS_ALERTS: dict[tuple[str | None, str], tuple[str, AlertSeverity]] = {
    ("logged_out", "logged_out"): ("logged_out", "critical"),
    ("banned", "temporary_ban"): ("banned", "critical"),
    ("stopped", "credentials_unusable"): ("credentials_unusable", "critical"),
    ("stopped", "client_outdated"): ("client_outdated", "critical"),
    ("stopped", "stream_replaced"): ("stream_replaced", "critical"),
    ("stopped", "pairing_timeout"): ("pairing_timeout", "warning"),
    (None, "credentials_fallback"): ("credentials_fallback", "warning"),
    (None, "flapping"): ("flapping", "warning"),
}


def status_alert(
    *,
    event_id: str,
    session_id: str,
    at: datetime,
    state: str,
    reason: str | None,
    previous_drop: str | None,
    node: str | None,
) -> AlertEvent | None:
    """The alert a status report raises, if any (`event_id`: the status event's).

    A logout the user asked for is no alert, and flapping alerts once when it starts
    (`previous_drop`: the reason of the session's previous `disconnected` report), not on
    every reconnect that follows.
    """
    kind = reason_kind(reason)
    found = _STATUS_ALERTS.get((state, kind)) or _STATUS_ALERTS.get((None, kind))
    if found is None or reason == LOGOUT_REQUESTED:
        return None
    if kind == "flapping" and reason_kind(previous_drop) == "flapping":
        return None
    alert_kind, severity = found
    return AlertEvent(
        event_id=f"{event_id}:alert",
        session_id=session_id,
        at=at,
        kind=alert_kind,
        severity=severity,
        message=reason or state,
        node=node,
        state=state,  # type: ignore[arg-type]
    )


def owner_lost_alert(status: StatusEvent, node: str) -> AlertEvent:
    """The owner of the session (`node`) died; `status` reports it (its id names the owner's
    claim, so this alert's id does too)."""
    return AlertEvent(
        event_id=f"{status.event_id}:alert",
        session_id=status.session_id,
        at=status.at,
        kind="owner_lost",
        severity="warning",
        message=f"node {node} stopped renewing its lease; another node takes the session over",
        state="disconnected",
    )


def dead_letter_alert(session_id: str, send_id: str, error: ErrorBody, at: datetime, node: str | None) -> AlertEvent:
    return AlertEvent(
        event_id=f"{session_id}:dead_letter:{send_id}",
        session_id=session_id,
        at=at,
        kind="send_dead_lettered",
        severity="warning",
        message=f"send {send_id!r} failed for good ({error.code}: {error.message}); it is in the dead-letter queue",
        node=node,
        send_id=send_id,
        code=error.code,
    )


def daily_cap_alert(session_id: str, day: date, cap: int, at: datetime, node: str | None) -> AlertEvent:
    return AlertEvent(
        event_id=f"{session_id}:daily_cap:{day.isoformat()}",
        session_id=session_id,
        at=at,
        kind="daily_cap",
        severity="info",
        message=f"{cap} sends today, the session's daily cap: the rest wait until midnight UTC",
        node=node,
    )
