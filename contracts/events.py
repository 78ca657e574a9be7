"""Events on the `<prefix>_EVENTS` stream, subjects `<prefix>.evt.<sid>.<kind>` (contract v1).

Every event carries `event_id` (also its `Nats-Msg-Id`, so a re-published event is stored
once), `session_id` and `at`.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from contracts.alerts import AlertEvent
from contracts.envelope import ErrorBody
from contracts.messages import MediaInfo, MessageParts, MessageType
from contracts.types import OutboundState, SessionState


class StatusEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    event_id: str
    session_id: str
    at: datetime
    state: SessionState
    reason: str | None = None
    node: str | None = None
    jid: str | None = None
    qr: str | None = None
    pair_code: str | None = None
    # Fencing token of the owner that reported this state (addition to v1).
    token: str | None = None


class MessageEvent(MessageParts, omit_defaults=True):
    """An inbound message: its text or file, and the parts its kind carries (quoted,
    mentions, reaction, edit, revoke, location, contact, poll: contracts/messages.py)."""

    event_id: str
    session_id: str
    at: datetime
    message_id: str
    chat: str
    sender: str
    from_me: bool
    type: MessageType
    timestamp: datetime
    # The text, or the caption of a file.
    text: str | None = None
    # An addition to v1, like the parts: the file of an image, video, audio, voice note,
    # document or sticker.
    media: MediaInfo | None = None


class OutboundEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    event_id: str
    session_id: str
    at: datetime
    id: str
    state: OutboundState
    message_id: str | None = None
    error: ErrorBody | None = None
    # The recipient, on the `queued` event (addition to v1).
    to: str | None = None


Event = StatusEvent | MessageEvent | OutboundEvent | AlertEvent
