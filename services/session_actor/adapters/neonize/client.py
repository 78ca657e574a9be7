"""`NeonizeClient`: one session's WhatsApp connection through neonize.

Each connection attempt runs a fresh Go client, an `Incarnation`; the factory starts and
stops them. The client carries out the actor's commands through the library's exports,
and turns what Go sends (routed here by `callbacks`) into events, through `EVENT_HANDLERS`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from contracts.types import utcnow
from services.credentials import DEVICE_TABLES
from services.session_actor import machine as m
from services.session_actor.adapters.base import (
    Clock,
    Emit,
    MediaFetchError,
    OfflineSyncCompleted,
    Outgoing,
    OutgoingMedia,
    SendError,
    SendResult,
    StoreChanged,
    WhatsAppClient,
)
from services.session_actor.adapters.neonize import translate
from services.session_actor.adapters.neonize.callbacks import routes
from services.session_actor.adapters.neonize.guard import GoMapGuard
from services.session_actor.adapters.neonize.library import Library
from services.session_actor.adapters.neonize.protobufs import pb
from services.session_actor.adapters.neonize.snapshot import serialize_store
from services.session_actor.inbound_media import MEDIA_DOWNLOAD_FAILED

log = structlog.get_logger(__name__)

DEVICE_TABLE = DEVICE_TABLES["neonize"]
# disconnect()/close() return after this even if Go is still busy (a hanging dial can hold
# whatsmeow's socket lock for minutes); the stop finishes in the background.
STOP_TIMEOUT = 10.0
KNOWN_RECIPIENTS_LIMIT = 10_000
CHAT_PRESENCE_COMPOSING = 0  # neonize.utils.enum.ChatPresence
CHAT_PRESENCE_MEDIA_TEXT = 0  # neonize.utils.enum.ChatPresenceMedia
RECEIPT_READ = b"read"  # neonize.utils.enum.ReceiptType.READ

_incarnation_numbers = itertools.count(1)


@dataclass(eq=False)
class Incarnation:
    """One Go client: one Neonize() call under one process-unique uuid."""

    uuid: bytes
    # Set once Neonize() no longer touches the client map on its own: it returned, delivered
    # an event, or waits in its QR loop.
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    release_prologue: Callable[[], None] = lambda: None
    thread: threading.Thread | None = None
    jid: str | None = None
    showed_qr: bool = False
    retired: bool = False
    starting: asyncio.Task[None] | None = None
    stopping: asyncio.Task[None] | None = None

    def settle(self) -> None:
        self.settled.set()
        self.release_prologue()


class PairingError(Exception):
    """WhatsApp did not hand out a pair code."""


class GoRuntime(Protocol):
    """What a client uses of its factory: the Go library and the machinery one process shares
    (factory.NeonizeClientFactory)."""

    library: Library
    loop: asyncio.AbstractEventLoop | None
    guard: GoMapGuard
    event_types: dict[int, type]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    async def whatsapp_unreachable(self) -> str | None: ...

    async def start_incarnation(self, client: NeonizeClient, incarnation: Incarnation) -> None: ...

    async def stop_go_client(self, incarnation: Incarnation) -> None: ...

    def incarnation_ended(self, incarnation: Incarnation) -> None: ...

    def forget(self, client: NeonizeClient) -> None: ...


class NeonizeClient(WhatsAppClient):
    device_table = DEVICE_TABLE

    def __init__(
        self, session_id: str, store_path: Path, emit: Emit, clock: Clock, *, factory: GoRuntime
    ) -> None:
        super().__init__(session_id, store_path, emit, clock)
        self._factory = factory
        self._lib = factory.library
        self._current: Incarnation | None = None
        # Trap: neonize's is_connected/is_logged_in are coroutines (truthy unless awaited);
        # connection state comes from the events instead.
        self._connected = False
        self._closed = False
        self._store_signature: tuple[int, int] | None = None
        self._known_recipients: set[str] = set()
        self.log = log.bind(session=session_id)

    # -- commands -------------------------------------------------------------------------
    async def connect(self) -> None:
        if self._closed:
            raise RuntimeError("client is closed")
        if asyncio.get_running_loop() is not self._factory.loop:
            # Trap: neonize supports one event loop per process; ours is the factory's.
            raise RuntimeError("NeonizeClient used outside the loop its factory started on")
        # Every attempt runs a fresh Go client: the actor alone decides when to reconnect.
        await self.disconnect()
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        self._store_signature = self._stat_store()
        incarnation = Incarnation(uuid=f"{self.session_id}#{next(_incarnation_numbers)}".encode())
        self._current = incarnation
        # Under way in the background: the probe or the queue for the Go maps must not hold
        # up the actor's inbox.
        incarnation.starting = self._factory.spawn(self._start(incarnation))

    async def _start(self, incarnation: Incarnation) -> None:
        problem = await self._factory.whatsapp_unreachable()
        if incarnation.retired:
            return
        if problem:
            # Trap: every Neonize() call leaks a store handle; do not spend one on a dead network.
            self._end(
                incarnation,
                m.Disconnected(self._clock(), f"failed to dial whatsapp web websocket: {problem}"),
            )
            return
        try:
            await self._factory.start_incarnation(self, incarnation)
        except Exception as exc:  # e.g. "can't start new thread": still an event, not a crash
            self._end(
                incarnation, m.Disconnected(self._clock(), f"could not start the WhatsApp client: {exc}")
            )

    async def disconnect(self) -> None:
        incarnation = self._current
        if incarnation is not None:
            await asyncio.wait({self._retire(incarnation)}, timeout=STOP_TIMEOUT)

    async def close(self) -> None:
        await self.disconnect()
        self._closed = True
        self._factory.forget(self)

    async def logout(self) -> None:
        incarnation = self._current
        if incarnation is None or not self._connected:
            self.log.info(
                "logout without a connection: the phone keeps listing this device until removed there"
            )
            return
        error = (await self._factory.guard.read(self._lib.gocode.Logout, incarnation.uuid)).decode()
        await self.disconnect()
        if error:
            raise RuntimeError(f"logout failed: {error}")

    async def pair_phone(self, phone: str) -> str:
        incarnation = self._current
        if incarnation is None or not incarnation.showed_qr:
            raise PairingError("a pair code needs a connection that is showing QR codes")
        params = translate.pair_phone_params(phone).SerializeToString()
        raw = await self._factory.guard.read(
            self._lib.gocode.PairPhone, incarnation.uuid, params, len(params)
        )
        result = pb.PairPhoneReturnFunction.FromString(raw)
        if result.Error:
            raise PairingError(result.Error)
        return result.Code

    async def send(self, to_jid: str, message: Outgoing, ref: str) -> SendResult:
        incarnation, recipient = await self._sendable(to_jid)
        upload = None if message.media is None else await self._upload(incarnation, message.media)
        built = translate.outgoing_message(
            to_jid, message, own_jid=incarnation.jid, now_ms=int(time.time() * 1000), upload=upload
        )
        # `ref` stays ours: neonize cannot set custom message ids, WhatsApp assigns one.
        return await self._send_message(incarnation, recipient, built)

    async def _upload(self, incarnation: Incarnation, media: OutgoingMedia) -> Any:
        # whatsmeow encrypts the file with a fresh media key and uploads it to WhatsApp's
        # media servers; the message then carries the key, hashes and path. neonize's own
        # build_*_message helpers are not used: they sniff with libmagic and run ffmpeg/PIL
        # for thumbnails and durations (optional fields, left out here).
        raw = await self._factory.guard.read(
            self._lib.gocode.Upload, incarnation.uuid, media.data, len(media.data), translate.UPLOAD_TYPES[media.kind]
        )
        result = pb.UploadReturnFunction.FromString(raw)
        if result.Error:
            raise translate.upload_error(result.Error)
        return result.UploadResponse

    async def mark_read(self, chat: str, message_ids: Sequence[str], sender: str | None) -> None:
        incarnation = self._current
        if incarnation is None or not self._connected:
            raise SendError("not_connected", "the session is not connected")
        chat_jid = translate.recipient_jid(chat).SerializeToString()
        # In a chat of two the sender is the chat; whatsmeow names a group's by its user JID.
        author = translate.recipient_jid(translate.non_ad(sender) if sender else chat).SerializeToString()
        error = (
            await self._factory.guard.read(
                self._lib.gocode.MarkRead, incarnation.uuid, " ".join(message_ids).encode(), int(time.time()),
                chat_jid, len(chat_jid), author, len(author), RECEIPT_READ,
            )
        ).decode()  # fmt: skip
        if error:
            raise translate.send_error(error)

    async def _download(self, message: Any) -> bytes:
        """A file of an inbound message, through whatsmeow's own DownloadAny (which fetches,
        decrypts and checks it), on an executor thread like every Go call."""
        incarnation = self._current
        if incarnation is None or not self._connected:
            raise MediaFetchError(MEDIA_DOWNLOAD_FAILED, "the session is not connected")
        payload = message.SerializeToString()
        # The guard lets other calls in MAP_READ_GRACE after this one starts: DownloadAny reads
        # goneonize's client map first thing only, then spends its time on the network.
        raw = await self._factory.guard.read(self._lib.gocode.DownloadAny, incarnation.uuid, payload, len(payload))
        result = pb.DownloadReturnFunction.FromString(raw)
        if result.Error:
            raise translate.download_error(result.Error)
        return result.Binary

    async def _sendable(self, to_jid: str) -> tuple[Incarnation, Any]:
        """The live incarnation and the recipient's JID, or SendError."""
        incarnation = self._current
        if incarnation is None or not self._connected:
            raise SendError("not_connected", "the session is not connected")
        recipient = translate.recipient_jid(to_jid)
        if recipient.Server == "s.whatsapp.net":
            await self._ensure_on_whatsapp(incarnation, to_jid, recipient.User)
        return incarnation, recipient

    async def _send_message(self, incarnation: Incarnation, recipient: Any, message: Any) -> SendResult:
        target = recipient.SerializeToString()
        payload = message.SerializeToString()
        raw = await self._factory.guard.read(
            self._lib.gocode.SendMessage, incarnation.uuid, target, len(target), payload, len(payload)
        )
        result = pb.SendMessageReturnFunction.FromString(raw)
        if result.Error:
            raise translate.send_error(result.Error)
        response = result.SendResponse
        sent_at = translate.epoch_datetime(response.Timestamp) if response.Timestamp else utcnow()
        return SendResult(response.ID, sent_at)

    async def _ensure_on_whatsapp(self, incarnation: Incarnation, jid: str, user: str) -> None:
        """whatsmeow 'sends' to unregistered numbers without error; ask once per number."""
        if jid in self._known_recipients:
            return
        raw = await self._factory.guard.read(
            self._lib.gocode.IsOnWhatsApp, incarnation.uuid, f"+{user}".encode()
        )
        result = pb.IsOnWhatsAppReturnFunction.FromString(raw)
        if result.Error:
            raise translate.send_error(result.Error)
        if not any(answer.IsIn for answer in result.IsOnWhatsAppResponse):
            raise SendError("not_on_whatsapp", f"+{user} is not on WhatsApp", permanent=True)
        if len(self._known_recipients) >= KNOWN_RECIPIENTS_LIMIT:
            self._known_recipients.clear()
        self._known_recipients.add(jid)

    async def show_typing(self, to_jid: str) -> None:
        incarnation = self._current
        if incarnation is None or not self._connected:
            return  # the send that follows reports the missing connection
        target = translate.recipient_jid(to_jid).SerializeToString()
        error = (
            await self._factory.guard.read(
                self._lib.gocode.SendChatPresence, incarnation.uuid, target, len(target),
                CHAT_PRESENCE_COMPOSING, CHAT_PRESENCE_MEDIA_TEXT,
            )
        ).decode()  # fmt: skip
        if error:
            self.log.info("typing indication refused", error=error)

    async def snapshot(self) -> bytes:
        if not self.store_path.exists():
            raise FileNotFoundError(self.store_path)
        return await self._factory.loop.run_in_executor(None, serialize_store, self._lib.native, str(self.store_path))

    # -- incarnation lifecycle ----------------------------------------------------------------
    def _retire(self, incarnation: Incarnation) -> asyncio.Task[None]:
        """Silence an incarnation and stop its Go client (in the background)."""
        if incarnation.stopping is None:
            incarnation.retired = True
            if self._current is incarnation:
                self._current = None
                self._connected = False
            routes.pop(incarnation.uuid, None)
            incarnation.stopping = self._factory.spawn(self._factory.stop_go_client(incarnation))
        return incarnation.stopping

    def _end(self, incarnation: Incarnation, event: m.Input) -> None:
        """The connection is over: stop the Go client first, so whatsmeow cannot redial."""
        self._retire(incarnation)
        self._emit(event)

    def _from_go(self, incarnation: Incarnation, kind: str, *args: Any) -> None:
        incarnation.settle()
        if incarnation is not self._current:
            return  # retired incarnations are silent
        if kind == "qr":
            incarnation.showed_qr = True
            self._emit(m.QrShown(self._clock(), args[0]))
        elif kind == "status":
            self._on_login_status(incarnation, args[0])
        else:
            code, payload = args
            event_type = self._factory.event_types.get(code)
            if event_type is not None:
                EVENT_HANDLERS[event_type](self, incarnation, event_type.FromString(payload))

    def _on_thread_end(self, incarnation: Incarnation, error: str) -> None:
        incarnation.settle()
        self._factory.incarnation_ended(incarnation)
        if incarnation is self._current:  # it ended by itself: the dial failed, or Go gave up
            self._end(incarnation, m.Disconnected(self._clock(), error or "the WhatsApp client stopped"))

    def _on_login_status(self, incarnation: Incarnation, status: str) -> None:
        # During pairing this is the only channel: Go delivers events only once paired.
        if status == "err-client-outdated":
            self._end(incarnation, m.ClientOutdated(self._clock()))
        elif status == "timeout":
            self.log.info("QR codes ran out; nobody scanned them")
        elif status != "success":
            self.log.warning("pairing ended", status=status)

    # -- events (the machine's inputs and the adapter's own) ----------------------------------
    def _on_device(self, incarnation: Incarnation, device: Any) -> None:
        # Trap: the JID comes from here and PairStatus, never GetMe (it kills the process
        # when the client is not connected).
        jid = translate.device_jid(device)
        if jid is not None:
            incarnation.jid = jid

    def _on_pair_status(self, incarnation: Incarnation, status: Any) -> None:
        jid = translate.paired_jid(status)
        if jid is None:
            self.log.warning("pairing failed", error=status.Error)
            return
        incarnation.jid = jid
        self._emit(m.PairSucceeded(self._clock(), jid))

    def _on_connected(self, incarnation: Incarnation, _: Any) -> None:
        self._connected = True
        self._emit(m.Connected(self._clock(), incarnation.jid))

    def _on_keepalive_timeout(self, incarnation: Incarnation, _: Any) -> None:
        self._emit(m.KeepAliveTimeout(self._clock()))

    def _on_keepalive_restored(self, incarnation: Incarnation, _: Any) -> None:
        self._emit(m.KeepAliveRestored(self._clock()))

    def _on_logged_out(self, incarnation: Incarnation, event: Any) -> None:
        self._end(incarnation, translate.logged_out(event, self._clock()))

    def _on_stream_replaced(self, incarnation: Incarnation, _: Any) -> None:
        self._end(incarnation, m.StreamReplaced(self._clock()))

    def _on_temporary_ban(self, incarnation: Incarnation, event: Any) -> None:
        self._end(incarnation, translate.temporary_ban(event, self._clock()))

    def _on_connect_failure(self, incarnation: Incarnation, event: Any) -> None:
        self._end(incarnation, translate.connect_failure(event, self._clock()))

    def _on_client_outdated(self, incarnation: Incarnation, _: Any) -> None:
        self._end(incarnation, m.ClientOutdated(self._clock()))

    def _on_stream_error(self, incarnation: Incarnation, event: Any) -> None:
        self._end(incarnation, translate.stream_error(event, self._clock()))

    def _on_disconnected(self, incarnation: Incarnation, _: Any) -> None:
        self._end(incarnation, m.Disconnected(self._clock(), "the connection to WhatsApp dropped"))

    def _on_message(self, incarnation: Incarnation, event: Any) -> None:
        inbound = translate.inbound_message(event, self._download)
        if inbound is not None:
            self._emit(inbound)

    def _on_receipt(self, incarnation: Incarnation, event: Any) -> None:
        receipt = translate.receipt(event)
        if receipt is not None:
            self._emit(receipt)

    def _on_undecryptable(self, incarnation: Incarnation, event: Any) -> None:
        self._emit(translate.undecryptable(event))

    def _on_offline_sync_completed(self, incarnation: Incarnation, event: Any) -> None:
        self._emit(OfflineSyncCompleted(event.Count))

    # -- store changes ------------------------------------------------------------------------
    def poll_store(self) -> None:
        """Called by the factory's poller: a commit changes the file's mtime and size."""
        if self._current is None:
            return
        signature = self._stat_store()
        if signature != self._store_signature:
            self._store_signature = signature
            self._emit(StoreChanged())

    def _stat_store(self) -> tuple[int, int] | None:
        try:
            stat = self.store_path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size


# Go event -> its handler; Go is asked for these events only. Device (code 0) it sends
# unasked after connecting.
EVENT_HANDLERS: dict[type, Callable[[NeonizeClient, Incarnation, Any], None]] = {
    pb.Device: NeonizeClient._on_device,
    pb.PairStatus: NeonizeClient._on_pair_status,
    pb.Connected: NeonizeClient._on_connected,
    pb.KeepAliveTimeout: NeonizeClient._on_keepalive_timeout,
    pb.KeepAliveRestored: NeonizeClient._on_keepalive_restored,
    pb.LoggedOut: NeonizeClient._on_logged_out,
    pb.StreamReplaced: NeonizeClient._on_stream_replaced,
    pb.TemporaryBan: NeonizeClient._on_temporary_ban,
    pb.ConnectFailure: NeonizeClient._on_connect_failure,
    pb.ClientOutdated: NeonizeClient._on_client_outdated,
    pb.StreamError: NeonizeClient._on_stream_error,
    pb.Disconnected: NeonizeClient._on_disconnected,
    pb.Message: NeonizeClient._on_message,
    pb.Receipt: NeonizeClient._on_receipt,
    pb.UndecryptableMessage: NeonizeClient._on_undecryptable,
    pb.OfflineSyncCompleted: NeonizeClient._on_offline_sync_completed,
}
