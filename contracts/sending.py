"""Send commands (contract v1, `<prefix>.send.<sid>`)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from contracts.envelope import invalid
from contracts.messages import Location, SendableParts
from contracts.types import (
    MAX_MESSAGE_ID,
    MAX_TEXT,
    Base64,
    Filename,
    MediaKind,
    MediaUrl,
    MessageId,
    Mime,
    Recipient,
    SendId,
    Text,
    Time,
)

# WhatsApp's own limits for what the new bodies carry (checked by `check_body`).
MAX_EMOJI = 32  # one emoji, however many code points it takes (flags, skin tones, families)
MAX_PLACE_TEXT = 1024  # a location's name or address
MAX_CONTACT_NAME = 256


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


# What a send can be besides a text; with `media`, `text` is its caption.
BODIES = ("media", "reaction", "edit", "revoke", "location", "contact")


def bodies(send: Any) -> list[str]:
    """What a send (a SendText, or the QueuedSend made of it) carries as its message."""
    found = [name for name in BODIES if getattr(send, name) is not None]
    return ["text", *found] if send.text is not None and send.media is None else found


class SendText(SendableParts, omit_defaults=True):
    """A send: a text, a file (`media`, `text` its caption) or one of the parts (reaction,
    edit, revoke, location, contact: additions to v1)."""

    id: SendId
    to: Recipient
    # Required without another body; with `media`, the caption (optional).
    text: Text | None = None
    send_at: Time | None = None
    expires_at: Time | None = None
    media: Media | None = None
    # An addition to v1: the message a text or a file quotes.
    reply_to: MessageId | None = None

    def __post_init__(self) -> None:
        found = bodies(self)
        if not found:
            # msgspec's own wording, so the reply reads `text: required field is missing`
            # exactly as it did when `text` was a required field.
            raise ValueError("Object missing required field `text`")
        if len(found) > 1:
            raise ValueError(
                f"give exactly one of text, {', '.join(BODIES)} (got {' and '.join(found)}); "
                "`text` goes with `media` as its caption"
            )
        if self.reply_to is not None and found[0] not in ("text", "media"):
            raise ValueError(f"reply_to goes with a text or a file, not with a {found[0]}")


def check_body(req: SendText) -> None:
    """Raise `invalid_request` for a reaction, edit, revoke, location or contact WhatsApp
    would not take (the shapes are shared with inbound events, which carry anything)."""
    for name, target in (("reaction", req.reaction), ("edit", req.edit), ("revoke", req.revoke)):
        if target is not None and not 0 < len(target.target_id) <= MAX_MESSAGE_ID:
            raise invalid(f"{name}.target_id: expected a WhatsApp message id of 1-{MAX_MESSAGE_ID} characters")
    if req.reaction is not None and len(req.reaction.emoji) > MAX_EMOJI:
        raise invalid(f"reaction.emoji: one emoji, at most {MAX_EMOJI} characters (empty removes the reaction)")
    if req.edit is not None and not 0 < len(req.edit.text) <= MAX_TEXT:
        raise invalid(f"edit.text: expected 1-{MAX_TEXT} characters")
    if req.location is not None:
        _check_location(req.location)
    if req.contact is not None:
        if not 0 < len(req.contact.name) <= MAX_CONTACT_NAME:
            raise invalid(f"contact.name: expected 1-{MAX_CONTACT_NAME} characters")
        if len(req.contact.vcard) > MAX_TEXT or not req.contact.vcard.lstrip().upper().startswith("BEGIN:VCARD"):
            raise invalid(f"contact.vcard: expected a vCard (BEGIN:VCARD ... END:VCARD) of at most {MAX_TEXT} characters")


def _check_location(place: Location) -> None:
    for name, value, bound in (("lat", place.lat, 90), ("lon", place.lon, 180)):
        if abs(value) > bound:
            raise invalid(f"location.{name}: expected degrees between -{bound} and {bound}, got {value!r}")
    for name, text in (("name", place.name), ("address", place.address)):
        if text is not None and not 0 < len(text) <= MAX_PLACE_TEXT:
            raise invalid(f"location.{name}: expected 1-{MAX_PLACE_TEXT} characters")


class SendAccepted(msgspec.Struct):
    id: str
    duplicate: bool
    state: Literal["queued"] = "queued"


# What msgspec cannot say in a Struct's JSON Schema; both schema generators add it.
SCHEMA_EXTRAS: dict[str, dict[str, Any]] = {
    "SendText": {"anyOf": [{"required": [name]} for name in ("text", *BODIES)]},
    "Media": {"oneOf": [{"required": ["url"]}, {"required": ["base64"]}]},
}
