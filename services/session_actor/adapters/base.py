"""What an actor needs from a WhatsApp client, whatever library is behind it.

An adapter owns one connection and one credential store (an SQLite file at `store_path`).
It never decides anything: it reports what happened as events (the connection events are
the state machine's own inputs, stamped with `clock()`), and it carries out commands.

Two implementations: `sim.SimClient` (the simulated WhatsApp service, over NATS) and
`neonize.client.NeonizeClient` (real WhatsApp through neonize/whatsmeow).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from contracts.messages import MessageParts, SendableParts
from services.session_actor import machine


class MediaFetchError(Exception):
    """A file of an inbound message that could not be downloaded. `permanent`: it is not
    there to be had (expired at WhatsApp, no longer on its servers); anything else is worth
    another attempt."""

    def __init__(self, code: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True, kw_only=True)
class InboundMedia:
    """The file of an inbound message as the message describes it; `download()` fetches its
    bytes from WhatsApp (raises MediaFetchError)."""

    mime: str
    download: Callable[[], Awaitable[bytes]] = field(compare=False, repr=False)
    size: int | None = None  # as the sender declared it
    sha256: str | None = None  # as the sender declared it (hex)
    filename: str | None = None
    seconds: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class InboundMessage:
    message_id: str
    chat: str
    sender: str
    from_me: bool
    type: str
    timestamp: datetime
    text: str | None = None  # the text, or a file's caption
    media: InboundMedia | None = None
    # What else it carries: a quote, mentions, or what it is (a reaction, a location, ...).
    parts: MessageParts = field(default_factory=MessageParts)
    # Called once the message is safely published; WhatsApp redelivers unacked messages.
    ack: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Receipt:
    kind: str  # "delivered" | "read" | "played"
    message_ids: tuple[str, ...]
    chat: str
    # Called once the receipt is recorded; WhatsApp redelivers unacked receipts. None where
    # the library acks on its own (whatsmeow, after the event handler returned).
    ack: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Undecryptable:
    message_id: str
    chat: str
    sender: str


@dataclass(frozen=True)
class OfflineSyncCompleted:
    count: int


@dataclass(frozen=True)
class StoreChanged:
    """The credential store was written (keys rotated, device linked, ...)."""


ConnectionEvent = (
    machine.QrShown
    | machine.PairSucceeded
    | machine.Connected
    | machine.Disconnected
    | machine.KeepAliveTimeout
    | machine.KeepAliveRestored
    | machine.LoggedOut
    | machine.StreamReplaced
    | machine.TemporaryBan
    | machine.ConnectFailure
    | machine.ClientOutdated
)
ClientEvent = ConnectionEvent | InboundMessage | Receipt | Undecryptable | OfflineSyncCompleted | StoreChanged

Emit = Callable[[ClientEvent], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class OutgoingMedia:
    """A file ready to send: fetched or decoded, its type settled (session_actor/media.py)."""

    kind: str  # "image" | "document" | "audio" | "video"
    data: bytes = field(repr=False)
    mime: str
    filename: str | None = None
    caption: str | None = None  # never for audio (WhatsApp's audio messages have none)


@dataclass(frozen=True)
class MessageRef:
    """A message a send points at (the one a reply quotes, or a reaction's, edit's or
    revoke's target): whose it is, as far as the actor knows."""

    message_id: str
    from_me: bool
    sender: str | None = None  # its author, where known (a group's messages need it)


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """One message to send: exactly one body (a text, a file with its caption, or one of the
    parts); `reply_to` with a text or a file, `target` with a reaction, edit or revoke."""

    text: str | None = None
    media: OutgoingMedia | None = None
    parts: SendableParts = field(default_factory=SendableParts)
    reply_to: MessageRef | None = None
    target: MessageRef | None = None


@dataclass(frozen=True)
class SendResult:
    message_id: str
    timestamp: datetime


class SendError(Exception):
    """A send that did not go out.

    `permanent`: retrying cannot help (bad recipient, not on WhatsApp, logged out).
    `ambiguous`: the request may have reached WhatsApp (e.g. timed out waiting for the
    server's answer); resending could deliver twice.
    """

    def __init__(self, code: str, message: str, *, permanent: bool = False, ambiguous: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent
        self.ambiguous = ambiguous


class WhatsAppClient(abc.ABC):
    # Table that holds the linked device in this adapter's SQLite store (see vault validation).
    device_table: ClassVar[str]

    def __init__(self, session_id: str, store_path: Path, emit: Emit, clock: Clock) -> None:
        self.session_id = session_id
        self.store_path = store_path
        self._emit = emit
        self._clock = clock

    @abc.abstractmethod
    async def connect(self) -> None:
        """Start connecting (with the stored device, or unpaired to show QR codes).

        Returns once the attempt is under way; the outcome arrives as events. Never raises
        for network trouble: that is a Disconnected/ConnectFailure event.
        """

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close the connection if any; keep the store. Idempotent."""

    @abc.abstractmethod
    async def logout(self) -> None:
        """Unlink this device at WhatsApp (best effort when not connected)."""

    @abc.abstractmethod
    async def pair_phone(self, phone: str) -> str:
        """Ask for a phone pairing code (after the first QR); returns it, e.g. `ABCD-EFGH`."""

    @abc.abstractmethod
    async def send(self, to_jid: str, message: Outgoing, ref: str) -> SendResult:
        """Send a message (a file is uploaded first where WhatsApp needs it); `ref` is our
        idempotency id (WhatsApp itself never sees it). Raises SendError."""

    @abc.abstractmethod
    async def mark_read(self, chat: str, message_ids: Sequence[str], sender: str | None) -> None:
        """Send read receipts for messages of `chat` (`sender`: their author, in a group).
        Raises SendError."""

    @abc.abstractmethod
    async def show_typing(self, to_jid: str) -> None:
        """Show "typing..." in the chat with `to_jid` (sending the message ends it)."""

    @abc.abstractmethod
    async def snapshot(self) -> bytes:
        """A consistent copy of the credential store, safe while the client writes to it."""

    async def close(self) -> None:
        """Release everything for good (end of the actor's life)."""
        await self.disconnect()


class ClientFactory(abc.ABC):
    """Creates clients of one kind and holds what they share in a process."""

    device_table: ClassVar[str]

    async def start(self, may_act: Callable[[], bool] = lambda: True) -> None:  # noqa: B027 - optional hook
        """Acquire shared resources (threads, transport); called once per node.

        `may_act` says whether the node may still act as an owner (its lease is valid). A
        factory that keeps connections alive on the node's behalf must stop as soon as it
        says no: a node that wakes from a long stall must not refresh connections that
        other nodes are about to replace.
        """

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release shared resources; every client is closed before this is called."""

    @abc.abstractmethod
    def create(self, session_id: str, store_path: Path, emit: Emit, clock: Clock) -> WhatsAppClient: ...
