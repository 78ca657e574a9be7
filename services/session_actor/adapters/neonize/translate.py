"""Translation between whatsmeow's protobuf messages (as neonize ships them) and ours.

Pure: no Go library (`protobufs` reaches the classes without it), no clock, no I/O. Inbound:
events and WhatsApp messages become the machine's inputs and the adapter's own events.
Outbound: our recipients, texts and files become the protobufs Go takes. And Go's error
texts become SendErrors.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

from services.session_actor import machine as m
from services.session_actor.adapters.base import (
    InboundMessage,
    OutgoingMedia,
    Receipt,
    SendError,
    Undecryptable,
)
from services.session_actor.adapters.neonize.protobufs import e2e, pb

# whatsmeow's numeric codes for neonize's enum names; an unmapped code arrives unset.
CONNECT_FAILURE_CODES = {
    "GENERIC": 400,
    "LOGGED_OUT": 401,
    "TEMP_BANNED": 402,
    "MAIN_DEVICE_GONE": 403,
    "CLIENT_OUTDATED": 405,
    "UNKNOWN_LOGOUT": 406,
    "BAD_USER_AGENT": 409,
    "INTERNAL_SERVER_ERROR": 500,
    "EXPERIMENTAL": 501,
    "SERVICE_UNAVAILABLE": 503,
}
TEMP_BAN_CODES = {
    "SEND_TO_TOO_MANY_PEOPLE": 101,
    "BLOCKED_BY_USERS": 102,
    "CREATED_TOO_MANY_GROUPS": 103,
    "SENT_TOO_MANY_SAME_MESSAGE": 104,
    "BROADCAST_LIST": 106,
}
RECEIPT_KINDS = {"DELIVERED": "delivered", "READ": "read", "PLAYED": "played"}
# Media kinds: neonize's MediaType values (what goneonize's Upload takes) and Message fields.
MEDIA_TYPES = {"image": 0, "video": 1, "audio": 2, "document": 3}
MEDIA_FIELDS = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage", "document": "documentMessage"}
PAIR_CLIENT_CHROME = 1  # goneonize's pairClientTypeFromInt
PAIR_CLIENT_NAME = "Chrome (Linux)"  # WhatsApp requires "Browser (OS)"

# Recipients we accept, by server (user part pattern).
RECIPIENT_PATTERNS = {
    "s.whatsapp.net": re.compile(r"\d{5,20}"),
    "g.us": re.compile(r"\d[\d-]{4,40}"),
    "lid": re.compile(r"\d{5,30}"),
    "newsletter": re.compile(r"\d{5,30}"),
}

# Message wrappers whose inner message is the content.
MESSAGE_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)
# (field, type, its text attribute: "" for the field itself, None for no text), checked in order.
MESSAGE_KINDS: tuple[tuple[str, str, str | None], ...] = (
    ("conversation", "text", ""),
    ("extendedTextMessage", "text", "text"),
    ("imageMessage", "image", "caption"),
    ("videoMessage", "video", "caption"),
    ("ptvMessage", "video", "caption"),
    ("audioMessage", "audio", None),
    ("documentMessage", "document", "caption"),
    ("stickerMessage", "sticker", None),
    ("locationMessage", "location", "name"),
    ("liveLocationMessage", "location", "caption"),
    ("contactMessage", "contact", "displayName"),
    ("contactsArrayMessage", "contact", "displayName"),
    ("reactionMessage", "reaction", "text"),
    ("pollCreationMessage", "poll", "name"),
    ("pollCreationMessageV2", "poll", "name"),
    ("pollCreationMessageV3", "poll", "name"),
    ("pollUpdateMessage", "poll_vote", None),
)
# Protocol plumbing (revokes, key shares, history sync notices), not user content.
PLUMBING_FIELDS = ("protocolMessage", "senderKeyDistributionMessage", "messageContextInfo")


# ------------------------------------------------------------------------ whatsmeow to ours


def jid_string(jid: Any) -> str:
    """A JID as whatsmeow writes it; neonize's `Jid2String`, which cannot be imported
    without loading the Go library."""
    if jid.RawAgent > 0:
        return f"{jid.User}.{jid.RawAgent}:{jid.Device}@{jid.Server}"
    if jid.Device > 0:
        return f"{jid.User}:{jid.Device}@{jid.Server}"
    if jid.User:
        return f"{jid.User}@{jid.Server}"
    return jid.Server


def epoch_datetime(value: int) -> datetime:
    """neonize stamps times in s, ms or ns depending on the field and the build; tell by size."""
    seconds = value / 1e9 if value > 10**17 else value / 1e3 if value > 10**11 else float(value)
    return datetime.fromtimestamp(seconds, UTC)


def device_jid(device: Any) -> str | None:
    """The linked device's JID from a Device event (sent unasked after connecting)."""
    if device.HasField("JID") and device.JID.User:
        return jid_string(device.JID)
    return None


def paired_jid(status: Any) -> str | None:
    """The new device's JID from a PairStatus event, or None when pairing failed."""
    if status.HasField("Status") and status.Status == pb.PairStatus.SUCCESS:
        return jid_string(status.ID)
    return None


def failure_reason(event: Any) -> tuple[str, int]:
    """Name and whatsmeow code of a LoggedOut/ConnectFailure reason."""
    # Trap: an unmapped code reads as the enum's first value; only HasField tells.
    if event.HasField("Reason"):
        name = pb.ConnectFailureReason.Name(event.Reason)
        return name.lower(), CONNECT_FAILURE_CODES[name]
    # ConnectFailure keeps the raw <failure reason="..."> node for codes neonize does not map.
    raw_attrs = event.Raw.Attrs if "Raw" in event.DESCRIPTOR.fields_by_name else ()
    for attr in raw_attrs:
        if attr.name == "reason":
            with contextlib.suppress(ValueError):
                return "unmapped", int(attr.integer if attr.HasField("integer") else attr.text)
    return "unmapped", 0


def logged_out(event: Any, now: float) -> m.LoggedOut:
    name, code = failure_reason(event)
    when = " while connecting" if event.OnConnect else ""
    return m.LoggedOut(now, f"{name} ({code}){when}")


def connect_failure(event: Any, now: float) -> m.ConnectFailure:
    _, code = failure_reason(event)
    return m.ConnectFailure(now, code, event.Message)


def temporary_ban(event: Any, now: float) -> m.TemporaryBan:
    reason = event.TempBanReason.Name(event.Code) if event.HasField("Code") else ""
    expires = float(event.Expire) if event.HasField("Expire") else 0.0
    return m.TemporaryBan(now, TEMP_BAN_CODES.get(reason, 0), expires)


def stream_error(event: Any, now: float) -> m.Disconnected:
    return m.Disconnected(now, f"stream error {event.Code or 'without code'}")


def message_content(message: Any) -> tuple[str, str | None] | None:
    """(type, text) of a WhatsApp message; None for protocol plumbing nobody should see."""
    unwrapped = True
    while unwrapped:
        unwrapped = False
        for wrapper in MESSAGE_WRAPPERS:
            if message.HasField(wrapper) and getattr(message, wrapper).HasField("message"):
                message, unwrapped = getattr(message, wrapper).message, True
                break
    for name, kind, text_field in MESSAGE_KINDS:
        if message.HasField(name):
            if text_field is None:
                return kind, None
            value = (
                getattr(message, name)
                if text_field == ""
                else getattr(getattr(message, name), text_field, "")
            )
            return kind, value or None
    if {descriptor.name for descriptor, _ in message.ListFields()} <= set(PLUMBING_FIELDS):
        return None
    return "other", None


def inbound_message(event: Any) -> InboundMessage | None:
    """A Message event as ours; None for protocol plumbing."""
    content = message_content(event.Message)
    if content is None:
        return None
    kind, text = content
    info, source = event.Info, event.Info.MessageSource
    return InboundMessage(
        message_id=info.ID,
        chat=jid_string(source.Chat),
        sender=jid_string(source.Sender),
        from_me=source.IsFromMe,
        type=kind,
        timestamp=epoch_datetime(info.Timestamp),
        text=text,
        # whatsmeow acknowledges messages itself; neonize offers no manual ack.
        ack=None,
    )


def receipt(event: Any) -> Receipt | None:
    """A Receipt event as ours; None for the kinds we do not report (READ_SELF, ...)."""
    if not event.HasField("Type"):
        return None
    kind = RECEIPT_KINDS.get(event.ReceiptType.Name(event.Type))
    if kind is None:
        return None
    return Receipt(kind, tuple(event.MessageIDs), jid_string(event.MessageSource.Chat))


def undecryptable(event: Any) -> Undecryptable:
    source = event.Info.MessageSource
    return Undecryptable(event.Info.ID, jid_string(source.Chat), jid_string(source.Sender))


# ------------------------------------------------------------------------ ours to whatsmeow


def recipient_jid(to_jid: str) -> Any:
    """The JID protobuf of a recipient we accept, or SendError."""
    user, _, server = to_jid.partition("@")
    pattern = RECIPIENT_PATTERNS.get(server)
    if pattern is None or not pattern.fullmatch(user):
        raise SendError("invalid_recipient", f"{to_jid!r} is not a JID WhatsApp can deliver to", permanent=True)
    # Every JID field is `required` in neonize's proto2 schema.
    return pb.JID(User=user, Server=server, RawAgent=0, Device=0, Integrator=0, IsEmpty=False)


def text_message(text: str) -> Any:
    # A plain Message: neonize's str path would parse mentions and look up groups first.
    return e2e.Message(conversation=text)


def media_message(media: OutgoingMedia, upload: Any, now: int) -> Any:
    """The Message for an uploaded file (`upload`: goneonize's UploadResponse), as in
    whatsmeow's documented example: URL, direct path, media key, both hashes, length, type."""
    message = e2e.Message()
    part = getattr(message, MEDIA_FIELDS[media.kind])
    if media.kind == "document" and media.caption:
        # How WhatsApp's own clients send a captioned document (a plain documentMessage's
        # caption is not shown everywhere).
        message.documentWithCaptionMessage.message.documentMessage.SetInParent()
        part = message.documentWithCaptionMessage.message.documentMessage
    part.URL = upload.url
    part.directPath = upload.DirectPath
    part.mediaKey = upload.MediaKey
    part.fileEncSHA256 = upload.FileEncSHA256
    part.fileSHA256 = upload.FileSHA256
    part.fileLength = upload.FileLength
    part.mediaKeyTimestamp = now
    part.mimetype = media.mime
    if media.kind == "audio":
        part.PTT = False  # a voice note needs Ogg/Opus and a waveform: sent as an audio file
    elif media.caption:
        part.caption = media.caption
    if media.kind == "document":
        name = media.filename or "document"
        part.fileName = name
        part.title = name
    return message


def pair_phone_params(phone: str) -> Any:
    """What PairPhone takes to ask for a pair code for `phone` (digits of it kept)."""
    return pb.PairPhoneParams(
        phone="".join(ch for ch in phone if ch.isdigit()),
        showPushNotification=True,
        clientType=PAIR_CLIENT_CHROME,
        clientDisplayName=PAIR_CLIENT_NAME,
    )  # all four set: Go dereferences each without checking


# --------------------------------------------------------------------------- Go's errors


def send_error(text: str) -> SendError:
    lowered = text.lower()
    # Trap: after ~75 s without WhatsApp's answer the message may or may not have gone out.
    if "timed out waiting for message send response" in lowered:
        return SendError("ambiguous", text, ambiguous=True)
    if "not connected" in lowered or "client is nil" in lowered:
        return SendError("not_connected", text)
    if "doesn't contain a device jid" in lowered or "not logged in" in lowered:
        return SendError("not_logged_in", text, permanent=True)
    if "unknown server" in lowered or "invalid jid" in lowered:
        return SendError("invalid_recipient", text, permanent=True)
    return SendError("send_failed", text)


def upload_error(text: str) -> SendError:
    """An upload that failed never reached a recipient: permanent only when the session
    itself cannot send; otherwise (offline, media servers busy) retried."""
    error = send_error(text)
    if error.permanent:
        return error
    return SendError("media_upload_failed", f"uploading the file to WhatsApp failed: {text}")
