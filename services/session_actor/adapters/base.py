"""What an actor needs from a WhatsApp client, whatever library is behind it.

An adapter owns one connection and one credential store (an SQLite file at `store_path`).
It never decides anything: it reports what happened as events (the connection events are
the state machine's own inputs, stamped with `clock()`), and it carries out commands.

Two implementations: `sim.SimClient` (the simulated WhatsApp service, over NATS) and
`neonize.client.NeonizeClient` (real WhatsApp through neonize/whatsmeow).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from services.session_actor import machine


@dataclass(frozen=True)
class InboundMessage:
    message_id: str
    chat: str
    sender: str
    from_me: bool
    type: str
    timestamp: datetime
    text: str | None = None
    # Called once the message is safely published; WhatsApp redelivers unacked messages.
    ack: Callable[[], Awaitable[None]] | None = None


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
    async def send_text(self, to_jid: str, text: str, ref: str) -> SendResult:
        """Send a text; `ref` is our idempotency id (WhatsApp itself never sees it).

        Raises SendError.
        """

    @abc.abstractmethod
    async def send_media(self, to_jid: str, media: OutgoingMedia, ref: str) -> SendResult:
        """Send an image, document, audio or video (uploaded first where WhatsApp needs it);
        `ref` as for send_text. Raises SendError."""

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
