"""Field types shared by the contract: ids, recipients, times, limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DIGITS_PATTERN = r"^[0-9]{6,15}$"
RECIPIENT_PATTERN = r"^(?:[0-9]{6,15}|[0-9A-Za-z._:-]+@(?:s\.whatsapp\.net|g\.us|lid|broadcast|newsletter))$"
# Media (contracts/sending.py): checked syntactically only; nothing is fetched at intake.
MEDIA_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+(?:[/?#]\S*)?$"
BASE64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"
MIME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(?:;[ ]*[A-Za-z0-9!#$&^_.+-]+=[^;]+)*$"
# Webhook subscriptions (contracts/webhooks.py): ids the gateway gives them, and secrets in
# the Standard Webhooks form (`whsec_` and the base64 of 24 to 64 random bytes).
WEBHOOK_ID_PATTERN = r"^wh_[0-9a-f]{12}$"
WEBHOOK_SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$"

MAX_LABEL = 256
MAX_SEND_ID = 128
MAX_TEXT = 65536
MAX_MEDIA_URL = 8192
MAX_MIME = 255
MAX_FILENAME = 255
MAX_MESSAGE_ID = 128

# What a human should read when a value does not match a pattern (see envelope.explain).
PATTERN_HINTS: dict[str, str] = {
    SESSION_ID_PATTERN: "a session id of 1-64 characters A-Z a-z 0-9 _ -",
    DIGITS_PATTERN: "digits of an E.164 number (6-15 digits)",
    RECIPIENT_PATTERN: "digits of an E.164 number (6-15 digits), or a full JID",
    MEDIA_URL_PATTERN: "an http:// or https:// URL without spaces",
    BASE64_PATTERN: "standard base64 (A-Z a-z 0-9 + /, = padding, no line breaks)",
    MIME_PATTERN: "a MIME type such as image/jpeg or audio/ogg; codecs=opus",
    WEBHOOK_ID_PATTERN: "a webhook id such as wh_0123456789ab",
    WEBHOOK_SECRET_PATTERN: "whsec_ and the base64 of 24 to 64 random bytes",
}

SessionId = Annotated[str, msgspec.Meta(pattern=SESSION_ID_PATTERN, description=PATTERN_HINTS[SESSION_ID_PATTERN])]
Phone = Annotated[str, msgspec.Meta(pattern=DIGITS_PATTERN, description=PATTERN_HINTS[DIGITS_PATTERN])]
Recipient = Annotated[str, msgspec.Meta(pattern=RECIPIENT_PATTERN, description=PATTERN_HINTS[RECIPIENT_PATTERN])]
Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL)]
SendId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SEND_ID)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
MediaUrl = Annotated[
    str, msgspec.Meta(pattern=MEDIA_URL_PATTERN, max_length=MAX_MEDIA_URL, description=PATTERN_HINTS[MEDIA_URL_PATTERN])
]
Base64 = Annotated[str, msgspec.Meta(pattern=BASE64_PATTERN, min_length=1, description=PATTERN_HINTS[BASE64_PATTERN])]
Mime = Annotated[str, msgspec.Meta(pattern=MIME_PATTERN, max_length=MAX_MIME, description=PATTERN_HINTS[MIME_PATTERN])]
Filename = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FILENAME)]
# A WhatsApp message id (WhatsApp assigns them: about 16-32 characters).
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_ID)]
MediaKind = Literal["image", "document", "audio", "video"]
# RFC 3339 with an explicit offset; naive times are refused rather than guessed.
Time = Annotated[datetime, msgspec.Meta(tz=True)]

SessionState = Literal[
    "created",
    "pairing",
    "connecting",
    "connected",
    "disconnected",
    "logged_out",
    "banned",
    "stopped",
    "deleted",
]

OutboundState = Literal["queued", "sent", "delivered", "read", "failed", "expired"]
TERMINAL_OUTBOUND_STATES: frozenset[str] = frozenset({"read", "failed", "expired"})

# States that claim a live WhatsApp connection; only an owner that is alive may claim them.
LIVE_STATES: frozenset[str] = frozenset({"pairing", "connecting", "connected"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_jid(recipient: str) -> str:
    """A bare number becomes a user JID; a JID stays as it is."""
    return recipient if "@" in recipient else f"{recipient}@s.whatsapp.net"
