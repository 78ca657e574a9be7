"""Translation between whatsmeow's protobuf messages (as neonize ships them) and ours.

Pure: no Go library (`protobufs` reaches the classes without it), no clock, no I/O. Inbound:
events and WhatsApp messages (every kind: texts, files, quotes, mentions, reactions, edits,
revokes, locations, contacts, polls) become the machine's inputs and the adapter's own
events. Outbound: our recipients and messages become the protobufs Go takes. And Go's error
texts become SendErrors (MediaFetchErrors for downloads).

One job, hence one file over 500 lines: each message kind's two directions sit side by side.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec

from contracts.messages import (
    MEDIA_TYPES,
    Contact,
    Edit,
    Location,
    MessageParts,
    Poll,
    Quoted,
    Reaction,
    Revoke,
    SendableParts,
)
from services.session_actor import machine as m
from services.session_actor.adapters.base import (
    InboundMedia,
    InboundMessage,
    MediaFetchError,
    MessageRef,
    Outgoing,
    OutgoingMedia,
    Receipt,
    SendError,
    Undecryptable,
)
from services.session_actor.adapters.neonize.protobufs import e2e, pb
from services.session_actor.inbound_media import MEDIA_DOWNLOAD_FAILED, MEDIA_UNAVAILABLE

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
UPLOAD_TYPES = {"image": 0, "video": 1, "audio": 2, "document": 3}
MEDIA_FIELDS = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage", "document": "documentMessage"}
# whatsmeow's download errors for a file that is not to be had (404 and 410 from its media
# servers: expired or deleted; a message with nothing to download).
FILE_GONE = ("status code 404", "status code 410", "no url present", "didn't find any attachments")
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
# Protocol plumbing (key shares, history sync notices; protocol messages other than edits
# and revokes), not user content.
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


@dataclass(frozen=True)
class Content:
    """What a WhatsApp message says, in our terms. `part` is the field of the message that
    holds it (`field`), where a file's description and the quote's context are read."""

    type: str
    text: str | None = None
    field: str | None = None
    part: Any = None
    parts: MessageParts = dataclass_field(default_factory=MessageParts)


def _plain(kind: str, text_attribute: str | None = None) -> Callable[[str, Any], Content]:
    def read(field: str, part: Any) -> Content:
        text = getattr(part, text_attribute) if text_attribute else None
        return Content(kind, text or None, field, part)

    return read


def _audio(field: str, part: Any) -> Content:
    return Content("voice" if part.PTT else "audio", None, field, part)


def _location(field: str, part: Any) -> Content:
    place = Location(
        lat=part.degreesLatitude,
        lon=part.degreesLongitude,
        name=getattr(part, "name", "") or None,
        address=getattr(part, "address", "") or None,
    )
    return Content("location", getattr(part, "caption", "") or None, field, part, MessageParts(location=place))


def _contact(field: str, part: Any) -> Content:
    return Content("contact", None, field, part, MessageParts(contact=Contact(part.displayName, part.vcard)))


def _contacts(field: str, part: Any) -> Content:
    # Several cards are one vCard text holding each of them, as in a .vcf file.
    name = part.displayName or (part.contacts[0].displayName if part.contacts else "")
    vcard = "\n".join(card.vcard.strip() for card in part.contacts)
    return Content("contact", None, field, part, MessageParts(contact=Contact(name, vcard)))


def _reaction(field: str, part: Any) -> Content:
    return Content("reaction", None, field, part, MessageParts(reaction=Reaction(part.key.ID, part.text)))


def _poll(field: str, part: Any) -> Content:
    poll = Poll(part.name, [option.optionName for option in part.options])
    return Content("poll", None, field, part, MessageParts(poll=poll))


# Message fields we read, in the order they are checked, and how.
MESSAGE_READERS: dict[str, Callable[[str, Any], Content]] = {
    "conversation": lambda field, text: Content("text", text or None),
    "extendedTextMessage": _plain("text", "text"),
    "imageMessage": _plain("image", "caption"),
    "videoMessage": _plain("video", "caption"),
    "ptvMessage": _plain("video", "caption"),
    "audioMessage": _audio,
    "documentMessage": _plain("document", "caption"),
    "stickerMessage": _plain("sticker"),
    "locationMessage": _location,
    "liveLocationMessage": _location,
    "contactMessage": _contact,
    "contactsArrayMessage": _contacts,
    "reactionMessage": _reaction,
    "pollCreationMessage": _poll,
    "pollCreationMessageV2": _poll,
    "pollCreationMessageV3": _poll,
    # Votes arrive encrypted for the poll's creator: what they say is not known here.
    "pollUpdateMessage": _plain("unknown"),
}
# The field DownloadAny looks in for each field holding a file (it knows no ptvMessage).
DOWNLOAD_FIELDS = {
    "imageMessage": "imageMessage",
    "videoMessage": "videoMessage",
    "ptvMessage": "videoMessage",
    "audioMessage": "audioMessage",
    "documentMessage": "documentMessage",
    "stickerMessage": "stickerMessage",
}
# What a file is when its message does not say.
DEFAULT_MIME = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "voice": "audio/ogg; codecs=opus",
    "document": "application/octet-stream",
    "sticker": "image/webp",
}


def unwrapped(message: Any) -> Any:
    """The message inside however many wrappers (ephemeral, view once, edited, ...)."""
    unwrapping = True
    while unwrapping:
        unwrapping = False
        for wrapper in MESSAGE_WRAPPERS:
            if message.HasField(wrapper) and getattr(message, wrapper).HasField("message"):
                message, unwrapping = getattr(message, wrapper).message, True
                break
    return message


def message_content(message: Any) -> Content | None:
    """What a WhatsApp message says; None for protocol plumbing nobody should see."""
    message = unwrapped(message)
    for field, read in MESSAGE_READERS.items():
        if message.HasField(field):
            return read(field, getattr(message, field))
    if message.HasField("protocolMessage"):
        return _protocol(message.protocolMessage)
    if {descriptor.name for descriptor, _ in message.ListFields()} <= set(PLUMBING_FIELDS):
        return None
    return Content("unknown")


def _protocol(part: Any) -> Content | None:
    """Edits and deletes for everyone; every other protocol message is plumbing."""
    # Trap: REVOKE is the enum's first value, which an unset `type` reads as.
    if not part.HasField("type"):
        return None
    if part.type == e2e.ProtocolMessage.REVOKE:
        return Content("revoke", parts=MessageParts(revoke=Revoke(part.key.ID)))
    if part.type == e2e.ProtocolMessage.MESSAGE_EDIT:
        edited = message_content(part.editedMessage)
        return Content("edit", parts=MessageParts(edit=Edit(part.key.ID, (edited.text if edited else None) or "")))
    return None


def with_context(content: Content) -> MessageParts:
    """The content's parts with the message a reply quotes and the JIDs it mentions (read
    from the part's contextInfo)."""
    part = content.part
    if part is None or "contextInfo" not in part.DESCRIPTOR.fields_by_name or not part.HasField("contextInfo"):
        return content.parts
    context = part.contextInfo
    quoted = Quoted(context.stanzaID, context.participant or None) if context.stanzaID else None
    return msgspec.structs.replace(content.parts, quoted=quoted, mentions=list(context.mentionedJID))


def download_message(content: Content) -> Any:
    """The Message DownloadAny takes for a file: its part alone, where DownloadAny looks."""
    assert content.field is not None
    message = e2e.Message()
    getattr(message, DOWNLOAD_FIELDS[content.field]).CopyFrom(content.part)
    return message


def inbound_media(content: Content, download: Callable[[Any], Awaitable[bytes]]) -> InboundMedia:
    """A file's description from its message part; `download(message)` fetches it."""
    part = content.part

    def given(name: str) -> Any:
        return getattr(part, name) if name in part.DESCRIPTOR.fields_by_name and part.HasField(name) else None

    sha256 = given("fileSHA256")
    return InboundMedia(
        mime=given("mimetype") or DEFAULT_MIME[content.type],
        download=partial(download, download_message(content)),
        size=given("fileLength"),
        sha256=sha256.hex() if sha256 else None,
        filename=given("fileName"),
        seconds=given("seconds"),
        width=given("width"),
        height=given("height"),
    )


def inbound_message(event: Any, download: Callable[[Any], Awaitable[bytes]]) -> InboundMessage | None:
    """A Message event as ours (its file fetched by `download`); None for protocol plumbing."""
    content = message_content(event.Message)
    if content is None:
        return None
    info, source = event.Info, event.Info.MessageSource
    return InboundMessage(
        message_id=info.ID,
        chat=jid_string(source.Chat),
        sender=jid_string(source.Sender),
        from_me=source.IsFromMe,
        type=content.type,
        timestamp=epoch_datetime(info.Timestamp),
        text=content.text,
        media=inbound_media(content, download) if content.type in MEDIA_TYPES and content.part is not None else None,
        parts=with_context(content),
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


def non_ad(jid: str) -> str:
    """A JID without agent and device (`15550001111:7@s.whatsapp.net` -> `15550001111@...`):
    how message keys and quotes name a person."""
    user, _, server = jid.partition("@")
    return f"{user.split(':')[0].split('.')[0]}@{server}"


def fill_key(key: Any, chat: str, target: MessageRef) -> None:
    """A message key as whatsmeow's BuildMessageKey makes it: our own, or a contact's (in a
    group, with its author)."""
    key.remoteJID = chat
    key.ID = target.message_id
    key.fromMe = target.from_me
    if not target.from_me and target.sender and chat.endswith("@g.us"):
        key.participant = non_ad(target.sender)


def fill_quote(context: Any, chat: str, quoted: MessageRef, own_jid: str | None) -> None:
    """The context of a reply: the quoted message's id and author. Its content is left out
    (WhatsApp's clients show the quote from their own copy of the message)."""
    context.stanzaID = quoted.message_id
    if quoted.from_me:
        author = own_jid
    else:
        author = quoted.sender or (None if chat.endswith("@g.us") else chat)  # in a chat of two, the other
    if author:
        context.participant = non_ad(author)


def content_part(message: Any) -> Any:
    """The field of a built message that holds its content (where a quote's context goes)."""
    inner = unwrapped(message)
    ((_, part),) = inner.ListFields()
    return part


def outgoing_message(chat: str, message: Outgoing, *, own_jid: str | None, now_ms: int, upload: Any = None) -> Any:
    """The Message of a send (`upload`: a file's UploadResponse), a quote in its content's
    context where it replies."""
    if message.media is not None:
        built = media_message(message.media, upload, now_ms // 1000)
    elif message.text is not None:
        if message.reply_to is None:
            return text_message(message.text)
        # A conversation has no context for the quote; an extended text has.
        built = e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(text=message.text))
    else:
        built = part_message(chat, message.parts, message.target, now_ms)
    if message.reply_to is not None:
        fill_quote(content_part(built).contextInfo, chat, message.reply_to, own_jid)
    return built


def part_message(chat: str, parts: SendableParts, target: MessageRef | None, now_ms: int) -> Any:
    """A location, a contact, or a reaction, edit or revoke of `target`, as whatsmeow's
    builders make them: a reaction keyed to its target, an edit and a revoke as protocol
    messages about it."""
    built = e2e.Message()
    if parts.location is not None:
        place = built.locationMessage
        place.degreesLatitude, place.degreesLongitude = parts.location.lat, parts.location.lon
        if parts.location.name is not None:
            place.name = parts.location.name
        if parts.location.address is not None:
            place.address = parts.location.address
    elif parts.contact is not None:
        built.contactMessage.displayName = parts.contact.name
        built.contactMessage.vcard = parts.contact.vcard
    elif target is None:
        raise SendError("invalid_request", "nothing to send (a reaction, edit or revoke without its target)", permanent=True)
    elif parts.reaction is not None:
        fill_key(built.reactionMessage.key, chat, target)
        built.reactionMessage.text = parts.reaction.emoji
        built.reactionMessage.senderTimestampMS = now_ms
    elif parts.edit is not None:
        protocol = built.editedMessage.message.protocolMessage
        fill_key(protocol.key, chat, MessageRef(target.message_id, from_me=True))  # only one's own
        protocol.type = e2e.ProtocolMessage.MESSAGE_EDIT
        protocol.editedMessage.conversation = parts.edit.text
        protocol.timestampMS = now_ms
    elif parts.revoke is not None:
        fill_key(built.protocolMessage.key, chat, target)  # a contact's: a group admin's delete
        built.protocolMessage.type = e2e.ProtocolMessage.REVOKE
    return built


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


def download_error(text: str) -> MediaFetchError:
    """A file WhatsApp no longer has (expired, deleted) is not to be had; anything else
    (offline, a checksum that did not match) is tried again."""
    lowered = text.lower()
    if any(gone in lowered for gone in FILE_GONE):
        return MediaFetchError(MEDIA_UNAVAILABLE, f"WhatsApp no longer has the file: {text}", permanent=True)
    return MediaFetchError(MEDIA_DOWNLOAD_FAILED, text)


def upload_error(text: str) -> SendError:
    """An upload that failed never reached a recipient: permanent only when the session
    itself cannot send; otherwise (offline, media servers busy) retried."""
    error = send_error(text)
    if error.permanent:
        return error
    return SendError("media_upload_failed", f"uploading the file to WhatsApp failed: {text}")
