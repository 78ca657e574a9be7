"""What a WhatsApp message can be (additions to contract v1): the kinds of message, and the
shapes inbound events, sends and the simulator share.

The shapes are lax on purpose: an inbound event carries whatever WhatsApp delivered, and an
event that failed to decode (in persistence, in a client) would be lost to it. Sends are
held to WhatsApp's limits where they are accepted (`check_body` in contracts/sending.py).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from contracts.envelope import ErrorBody

MessageType = Literal[
    "text",
    "image",
    "video",
    "audio",
    "voice",  # push-to-talk: a voice note
    "document",
    "sticker",
    "location",
    "contact",
    "reaction",
    "poll",
    "edit",
    "revoke",
    "unknown",
]
# Kinds whose file the gateway downloads into the media bucket (`media` on the event).
MEDIA_TYPES: frozenset[str] = frozenset({"image", "video", "audio", "voice", "document", "sticker"})
# The headers of each object in the media bucket (besides Content-Type): the session and
# the message the file came with.
SESSION_HEADER = "Wa-Session"
MESSAGE_HEADER = "Wa-Message-Id"


class Quoted(msgspec.Struct, omit_defaults=True):
    """The message a reply quotes."""

    message_id: str
    sender: str | None = None


class Reaction(msgspec.Struct):
    """An emoji on another message; an empty `emoji` removes the reaction."""

    target_id: str
    emoji: str


class Edit(msgspec.Struct):
    """New text for a message sent earlier."""

    target_id: str
    text: str


class Revoke(msgspec.Struct):
    """A message deleted for everyone."""

    target_id: str


class Location(msgspec.Struct, omit_defaults=True):
    lat: float
    lon: float
    name: str | None = None
    address: str | None = None


class Contact(msgspec.Struct):
    """A contact card; several cards are one vCard text holding each of them."""

    name: str
    vcard: str


class Poll(msgspec.Struct):
    name: str
    options: list[str]


class SendableParts(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a message can be besides a text or a file, as sends and events carry it: at
    most one of these, each a message of its own kind."""

    reaction: Reaction | None = None
    edit: Edit | None = None
    revoke: Revoke | None = None
    location: Location | None = None
    contact: Contact | None = None

    @property
    def target_id(self) -> str | None:
        """The message a reaction, an edit or a revoke points at."""
        return next((part.target_id for part in (self.reaction, self.edit, self.revoke) if part is not None), None)


class MessageParts(SendableParts, kw_only=True, omit_defaults=True):
    """All an inbound message may carry besides its text and its file."""

    quoted: Quoted | None = None
    mentions: list[str] = []
    poll: Poll | None = None


def parts(message: Any, kind: type[SendableParts] = SendableParts) -> dict[str, Any]:
    """The parts of `message` (of any struct or object that has them), as keyword arguments
    for another struct that has them."""
    return {name: getattr(message, name) for name in kind.__struct_fields__}


class MediaInfo(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The file of an inbound image, video, audio, voice note, document or sticker.

    Stored under `media_id` in the media bucket (`WA_MEDIA`), whose bytes have `sha256`
    (hex). A file that could not be fetched has `error` instead of `media_id` and `sha256`;
    `size` is then what the sender declared, if anything.
    """

    media_id: str | None = None
    mime: str
    size: int | None = None
    sha256: str | None = None
    filename: str | None = None
    seconds: int | None = None
    width: int | None = None
    height: int | None = None
    error: ErrorBody | None = None
