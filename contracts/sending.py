"""Send commands (contract v1, `<prefix>.send.<sid>`)."""

from __future__ import annotations

from typing import Literal

import msgspec

from contracts.types import Recipient, SendId, Text, Time


class SendText(msgspec.Struct, omit_defaults=True):
    id: SendId
    to: Recipient
    text: Text
    send_at: Time | None = None
    expires_at: Time | None = None


class SendAccepted(msgspec.Struct):
    id: str
    duplicate: bool
    state: Literal["queued"] = "queued"
