"""Alerts: the moments an operator must act on, as events (addition to contract v1).

Published on the events stream like every event, subject `<prefix>.evt.<sid>.alert`, so a
pager, a chat bot or the dashboard subscribes to `wa.evt.*.alert` and sees each one once
(its `event_id` is its `Nats-Msg-Id`; where the same moment can be reported twice, by two
monitor replicas or a retry, the id is derived from it and the copy is dropped).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from contracts.types import SessionState

AlertSeverity = Literal["critical", "warning", "info"]

# The kinds this version raises and what each asks of the operator. The set may grow:
# a consumer should show an unknown kind by its `message` rather than reject it.
ALERT_KINDS: dict[str, str] = {
    "logged_out": "WhatsApp unlinked the device (not by a request of ours): pair the number again",
    "banned": "WhatsApp banned the number for a while; sending resumes by itself when the ban lifts",
    "credentials_unusable": "the stored credentials cannot be decrypted or read: check the vault keys",
    "credentials_fallback": "the newest credential version was damaged; an older one was restored",
    "client_outdated": "WhatsApp refuses this client version: upgrade the gateway",
    "stream_replaced": "another client keeps using this session's credentials: find and stop it",
    "owner_lost": "the node running the session died; another node takes it over",
    "flapping": "the connection keeps dropping; reconnects are spaced out",
    "pairing_timeout": "nobody scanned the QR code (or entered the code) in time: pair again",
    "daily_cap": "the session reached its daily send cap; sends wait until midnight UTC",
    "send_dead_lettered": "a send failed for good and went to the dead-letter queue",
}

AlertKind = Annotated[
    str, msgspec.Meta(description="One of: " + ", ".join(ALERT_KINDS) + " (more may be added)")
]


class AlertEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    event_id: str
    session_id: str
    at: datetime
    kind: AlertKind
    severity: AlertSeverity
    message: str
    # The node that saw it, when one did.
    node: str | None = None
    # Alerts raised by a status change: that state.
    state: SessionState | None = None
    # Alerts about one send (send_dead_lettered): its id and error code.
    send_id: str | None = None
    code: str | None = None
