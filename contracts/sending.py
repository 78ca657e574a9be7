"""Send commands (contract v1, `<prefix>.send.<sid>`)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from contracts.types import Base64, Filename, MediaKind, MediaUrl, Mime, Recipient, SendId, Text, Time


class Media(msgspec.Struct, omit_defaults=True):
    """A file to send: fetched from `url` when the send leaves, or inline `base64` (small files)."""

    # An addition to v1. Inline files travel inside NATS messages: see services/common/media.py.

    kind: MediaKind
    url: MediaUrl | None = None
    base64: Base64 | None = None
    # Guessed from the content (then the server's Content-Type, then the file name) if absent.
    mime: Mime | None = None
    # Shown for documents; taken from the URL's last path segment if absent.
    filename: Filename | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("give exactly one of url or base64")


class SendText(msgspec.Struct, omit_defaults=True):
    id: SendId
    to: Recipient
    # Required without `media`; with it, the caption (optional).
    text: Text | None = None
    send_at: Time | None = None
    expires_at: Time | None = None
    media: Media | None = None

    def __post_init__(self) -> None:
        if self.text is None and self.media is None:
            # msgspec's own wording, so the reply reads `text: required field is missing`
            # exactly as it did when `text` was a required field.
            raise ValueError("Object missing required field `text`")


class SendAccepted(msgspec.Struct):
    id: str
    duplicate: bool
    state: Literal["queued"] = "queued"


# What msgspec cannot say in a Struct's JSON Schema; both schema generators add it.
SCHEMA_EXTRAS: dict[str, dict[str, Any]] = {
    "SendText": {"anyOf": [{"required": ["text"]}, {"required": ["media"]}]},
    "Media": {"oneOf": [{"required": ["url"]}, {"required": ["base64"]}]},
}
