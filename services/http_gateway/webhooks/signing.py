"""What a webhook POST carries, signed the Standard Webhooks way (standardwebhooks.com,
with its reference library): plain code, no I/O.

Body: `{"type": <event kind>, "timestamp": <the event's time>, "data": <the event as on the
stream, byte for byte>}`. Headers: `webhook-id` (the event's `event_id`: the same on every
retry, so receivers deduplicate by it), `webhook-timestamp` (Unix seconds of this attempt)
and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, the key
being the base64 part of the subscription's `whsec_` secret).
"""

from __future__ import annotations

import math
from datetime import datetime

import msgspec
from standardwebhooks import Webhook


class _Head(msgspec.Struct):
    """The parts of any event the envelope needs (msgspec skips the rest unread)."""

    event_id: str
    at: str


_head = msgspec.json.Decoder(_Head)
_encoder = msgspec.json.Encoder()


def envelope(kind: str, event: bytes) -> tuple[str, bytes]:
    """(event id, body) of the POST that carries `event`, an event of `kind`."""
    head = _head.decode(event)
    return head.event_id, _encoder.encode({"type": kind, "timestamp": head.at, "data": msgspec.Raw(event)})


class Signer:
    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, event_id: str, body: bytes, now: datetime) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(math.floor(now.timestamp())),
            "webhook-signature": self._webhook.sign(event_id, now, body.decode()),
        }
