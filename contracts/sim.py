"""The simulated WhatsApp service: control requests (`wasim.*`) and its wire protocol.

Control requests act like the phone and WhatsApp's servers (see contract-v1.md, last
section); they answer with the v1 envelope.

The wire protocol stands in for WhatsApp's websocket between a session's client
(services/session_actor/adapters/sim.py) and the simulator (services/wa_sim):

- client to server: requests on `wasim._wire.<op>` (connect, pair_phone, send, send_media,
  mark_read, download, ack, keepalive, disconnect, logout), answered with the v1 envelope;
- server to client: frames published on `wasim._conn.<conn_id>`, in the order the server
  produced them. The client subscribes to that subject before it sends `connect`;
- files contacts send sit in the object store `<SIMPREFIX>_MEDIA` (WhatsApp's media
  servers), an object per direct path; a client asks `download` first (where faults are
  injected), then reads the object.

Not part of the public promise; may change freely.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from contracts.messages import MessageParts, MessageType, Poll, SendableParts
from contracts.types import (
    Base64,
    Filename,
    MediaKind,
    MessageId,
    Mime,
    Phone,
    Recipient,
    SendId,
    SessionId,
    Text,
)

CONN_ID_PATTERN = r"^[0-9a-f]{8,64}$"
ConnId = Annotated[str, msgspec.Meta(pattern=CONN_ID_PATTERN)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
GROUP_PATTERN = r"^[0-9][0-9-]{4,40}@g\.us$"
Group = Annotated[str, msgspec.Meta(pattern=GROUP_PATTERN, description="a group JID such as 120363000000000001@g.us")]
# The name of a file's object in the simulator's media bucket.
DirectPath = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]

# Wire error codes of `send` and `ack`, besides the v1 codes.
NOT_CONNECTED = "not_connected"
NOT_ON_WHATSAPP = "not_on_whatsapp"
MEDIA_TOO_LARGE = "media_too_large"


class DeviceCredentials(msgspec.Struct):
    """A linked device as the client stores it and presents it at connect."""

    jid: Token
    device_id: Token
    secret: Token
    key_generation: int


# ------------------------------------------------------------------- client -> server


class ConnectRequest(msgspec.Struct):
    """Open connection `conn_id` for a session; without a device it is a pairing connection."""

    conn_id: ConnId
    session_id: SessionId
    device: DeviceCredentials | None = None


class PairPhoneRequest(msgspec.Struct):
    conn_id: ConnId
    phone: Phone


class PairPhoneReply(msgspec.Struct):
    code: str


class SendRequest(SendableParts, kw_only=True, omit_defaults=True):
    """A message without a file: a text or one of the parts (the simulator checks it is
    exactly one)."""

    conn_id: ConnId
    to: Recipient
    # The gateway's idempotency id: WhatsApp never sees it, the simulator counts it.
    ref: SendId
    text: Text | None = None
    reply_to: MessageId | None = None


class SendMediaRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A media message. Like WhatsApp's, it carries what describes the uploaded file (its
    length and hash), not the file: the simulator has no media server to upload to."""

    conn_id: ConnId
    to: Recipient
    ref: SendId
    kind: MediaKind
    mime: Mime
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Sha256
    filename: Filename | None = None
    caption: Text | None = None
    reply_to: MessageId | None = None


class SendReply(msgspec.Struct):
    message_id: str
    timestamp: datetime


class MarkReadRequest(msgspec.Struct, omit_defaults=True):
    """Read receipts for messages a contact sent (`sender`: their author, in a group)."""

    conn_id: ConnId
    chat: Recipient
    message_ids: Annotated[list[MessageId], msgspec.Meta(min_length=1, max_length=1000)]
    sender: Recipient | None = None


class DownloadRequest(msgspec.Struct):
    """May this connection fetch the file at `direct_path`? (The bytes then come from the
    media bucket, as WhatsApp's come from its media servers once a client holds their key.)"""

    conn_id: ConnId
    direct_path: DirectPath


class PresenceRequest(msgspec.Struct):
    """The account shows "typing..." in a chat (sent before a message, when paced so)."""

    conn_id: ConnId
    to: Recipient


class AckRequest(msgspec.Struct):
    """Inbound messages and receipts (by `receipt_id`) the client has safely handed on; the
    server stops redelivering them."""

    conn_id: ConnId
    message_ids: Annotated[list[MessageId], msgspec.Meta(min_length=1, max_length=1000)]


class KeepaliveRequest(msgspec.Struct):
    """One per node and interval, for every connection the node has open."""

    conn_ids: Annotated[list[ConnId], msgspec.Meta(max_length=100_000)]


class KeepaliveReply(msgspec.Struct):
    # Connections the server does not know (closed or expired): the client treats them as lost.
    unknown: list[str]


class DisconnectRequest(msgspec.Struct):
    conn_id: ConnId


class LogoutRequest(msgspec.Struct):
    """Unlink a device; authenticated by its credentials, so it works without a connection."""

    device: DeviceCredentials


# ------------------------------------------------------------------- server -> client


class Frame(msgspec.Struct, tag_field="frame", omit_defaults=True):
    pass


class QrFrame(Frame, tag="qr"):
    code: str


class PairSuccessFrame(Frame, tag="pair_success"):
    device: DeviceCredentials


class ConnectedFrame(Frame, tag="connected"):
    jid: str


class ConnectFailureFrame(Frame, tag="connect_failure"):
    """The server refused the connection and closed it (401 logged out, 402 banned)."""

    code: int
    message: str
    expires_in: int | None = None  # seconds until a ban lifts (402)


class StreamReplacedFrame(Frame, tag="stream_replaced"):
    """Another connection with the same device took over; this one is closed."""


class LoggedOutFrame(Frame, tag="logged_out"):
    reason: str


class TemporaryBanFrame(Frame, tag="temporary_ban"):
    code: int
    expires_in: int


class DisconnectedFrame(Frame, tag="disconnected"):
    """The server closed the connection abruptly (the socket dropped)."""

    reason: str


class CredsUpdateFrame(Frame, tag="creds_update"):
    key_generation: int
    keys: str


class SimMedia(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A file in a message, as WhatsApp's messages describe one: where it is, its type,
    length and hash (the client downloads it from the media bucket)."""

    direct_path: str
    mime: str
    size: int
    sha256: str
    filename: str | None = None
    seconds: int | None = None
    width: int | None = None
    height: int | None = None


class MessageFrame(Frame, MessageParts, tag="message"):
    message_id: str
    chat: str
    sender: str
    timestamp: datetime
    type: str = "text"
    text: str | None = None
    media: SimMedia | None = None


class ReceiptFrame(Frame, tag="receipt"):
    kind: Literal["delivered", "read"]
    message_ids: list[str]
    chat: str
    # Like WhatsApp's receipt stanzas, a receipt comes again on every connect until the
    # client acks it (`ack` with this id): one lost with a dead connection is not lost.
    receipt_id: str


class OfflineSyncCompletedFrame(Frame, tag="offline_sync_completed"):
    count: int


AnyFrame = (
    QrFrame
    | PairSuccessFrame
    | ConnectedFrame
    | ConnectFailureFrame
    | StreamReplacedFrame
    | LoggedOutFrame
    | TemporaryBanFrame
    | DisconnectedFrame
    | CredsUpdateFrame
    | MessageFrame
    | ReceiptFrame
    | OfflineSyncCompletedFrame
)

# ------------------------------------------------------------------- control (wasim.*)


class InboundFile(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The file of an inbound image, video, audio, voice note, document or sticker: inline
    (`base64`, within NATS' max payload), or `object`, the name of an object put into the
    simulator's media bucket beforehand (larger files; the same object may be sent often)."""

    base64: Base64 | None = None
    object: DirectPath | None = None
    mime: Mime
    filename: Filename | None = None
    seconds: Count | None = None
    width: Count | None = None
    height: Count | None = None

    def __post_init__(self) -> None:
        if (self.base64 is None) == (self.object is None):
            raise ValueError("give exactly one of base64 or object")


class InboundRequest(SendableParts, omit_defaults=True):
    """A contact sends a message: a text (with `quoted_id` a reply, with `group` in a group),
    a file (`type` says which kind, `text` is its caption), or one of reaction, edit,
    revoke, location, contact, poll. `type` defaults to what the body is."""

    sender: Phone = msgspec.field(name="from")
    text: Text | None = None
    type: MessageType | None = None
    media: InboundFile | None = None
    quoted_id: MessageId | None = None
    group: Group | None = None
    mentions: Annotated[list[Recipient], msgspec.Meta(max_length=1000)] = []
    poll: Poll | None = None


class InboundReply(msgspec.Struct):
    message_id: str


class ReadRequest(msgspec.Struct):
    message_id: MessageId


class ReadReply(msgspec.Struct):
    message_id: str


class BanRequest(msgspec.Struct):
    seconds: Annotated[int, msgspec.Meta(gt=0)]


class FaultsRequest(msgspec.Struct):
    """`wasim.<sid>.faults`: WhatsApp's servers answer the next `send_errors` sends of the
    session with a server error (try again later), like the 5xx real WhatsApp sometimes gives;
    its media servers fail the next `download_errors` downloads the same way. A count not
    given stays as it was."""

    send_errors: Count | None = None
    download_errors: Count | None = None


class ScanReply(msgspec.Struct):
    jid: str


class ConnectionReply(msgspec.Struct):
    """Answer of unlink, drop and ban: whether a live connection was closed."""

    closed: bool


class StatsRequest(msgspec.Struct):
    """`{}` for every session; the per-ref counts can be left out or narrowed to one session
    (a full dump of a long benchmark can exceed NATS' maximum payload)."""

    session_id: SessionId | None = None
    refs: bool = True


class SessionStats(msgspec.Struct):
    # How many times each `ref` (the gateway's send id) reached WhatsApp.
    received: dict[str, int] = {}
    messages: int = 0  # sends accepted
    duplicates: int = 0  # sends whose ref had been received before
    overlaps: int = 0  # connections replaced while still live (two clients with one device)
    connects: int = 0  # successful connections
    inbound: int = 0  # messages from contacts
    presences: int = 0  # "typing..." indications shown
    # Media sends (also counted in `messages` and `received`) by kind, and their bytes.
    media: dict[str, int] = {}
    media_bytes: int = 0
    # The sha256 of the file each media `ref` carried (left out with `refs: false`).
    media_sha256: dict[str, str] = {}
    # Sends by kind: text, media, reply (a text or file that quotes; also counted as one),
    # reaction, edit, revoke, location, contact; and read, the messages marked read.
    kinds: dict[str, int] = {}
    # The message each reply, reaction, edit and revoke `ref` pointed at (left out with
    # `refs: false`).
    targets: dict[str, str] = {}
    downloads: int = 0  # file downloads asked for (failed ones included)


class StatsTotals(msgspec.Struct):
    sessions: int
    messages: int
    duplicates: int
    overlaps: int
    connects: int
    inbound: int
    presences: int
    media: int = 0


class SimStats(msgspec.Struct):
    sessions: dict[str, SessionStats]
    totals: StatsTotals
