"""Real WhatsApp through neonize 0.5.2 (whatsmeow in a Go shared library, driven via ctypes).

One `NeonizeClient` per session; each connection attempt runs a fresh Go client (an
"incarnation", with its own uuid in goneonize's process-wide client map) on its own thread.
The adapter talks to the library's exported functions directly rather than through
`NewAClient`, because the traps below need control that class does not give:

- goneonize keeps its clients in plain Go maps without a lock: concurrent writers (or a
  reader during a write) abort the whole process ("fatal error: concurrent map writes",
  reproduced here with 200 parallel Stop calls). `_GoMapGuard` serialises them.
- `Neonize()` blocks for the client's whole life and, after an abandoned pairing, forever
  (it waits on a QR channel nobody closes, or polls for a device id that never comes).
  It therefore runs on a daemon thread of its own, never on the shared executor: a stuck
  call must neither starve the pool nor hang interpreter exit.
- Deleting a client from the Go map between its connect and its first event makes Go
  dereference a nil store; Stop waits for the incarnation to settle first.
- whatsmeow reconnects by itself after a drop, and neonize exposes no switch for it. The
  actor must be the only one deciding reconnects, so every drop retires the incarnation
  (Disconnect sets whatsmeow's "expected disconnect", which ends its reconnect loop) before
  the actor hears of it, and every `connect()` starts a new incarnation.
- Each `Neonize()` call opens the store through a new sqlstore container that neither
  Stop nor the garbage collector ever closes: one file handle per connection attempt,
  whatever the uuid. Attempts are therefore only made when WhatsApp answers at all (a
  cheap shared TCP probe), the fd limit is raised, and the factory counts attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import logging
import os
import re
import resource
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import structlog

from contracts.types import utcnow
from services.common.config import Settings
from services.common.tasks import cancel_and_wait, wait_event
from services.session_actor import machine as m
from services.session_actor.adapters.base import (
    ClientFactory,
    Clock,
    Emit,
    InboundMessage,
    OfflineSyncCompleted,
    OutgoingMedia,
    Receipt,
    SendError,
    SendResult,
    StoreChanged,
    Undecryptable,
    WhatsAppClient,
)

log = structlog.get_logger(__name__)

DEVICE_TABLE = "whatsmeow_device"
WHATSAPP_ENDPOINT = ("web.whatsapp.com", 443)  # whatsmeow dials wss://web.whatsapp.com/ws/chat

# Neonize()'s map writes happen before it dials: ~3 ms on an existing store, 10-115 ms when
# it creates a fresh one (measured here). Other Go calls wait for its first callback, or this.
PROLOGUE_GRACE_RESTORED = 0.15
PROLOGUE_GRACE_FRESH = 0.5
# Every other export reads the client map as its first statement.
MAP_READ_GRACE = 0.05
# How long Stop waits for Neonize() to get past its post-connect map reads.
SETTLE_TIMEOUT = 2.0
# disconnect()/close() return after this even if Go is still busy (a hanging dial can hold
# whatsmeow's socket lock for minutes); the stop finishes in the background.
STOP_TIMEOUT = 10.0
# Blocking calls (a send can wait ~75 s for WhatsApp) take an executor thread each; one per
# hosted session, plus room for stops, snapshots and DNS lookups.
EXECUTOR_HEADROOM = 32
STORE_POLL_INTERVAL = 2.0
PROBE_TIMEOUT = 10.0
PROBE_TTL = 5.0
SNAPSHOT_BUSY_TIMEOUT_MS = 5000
KNOWN_RECIPIENTS_LIMIT = 10_000
PAIR_CLIENT_CHROME = 1  # goneonize's pairClientTypeFromInt
CHAT_PRESENCE_COMPOSING = 0  # neonize.utils.enum.ChatPresence
CHAT_PRESENCE_MEDIA_TEXT = 0  # neonize.utils.enum.ChatPresenceMedia
PAIR_CLIENT_NAME = "Chrome (Linux)"  # WhatsApp requires "Browser (OS)"

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

T = TypeVar("T")


# --------------------------------------------------------------------------- the library


@dataclass(frozen=True)
class _Library:
    gocode: Any  # neonize's ctypes handle, with argtypes and result freeing set up
    native: ctypes.CDLL  # the same .so with our own prototypes (its SQLite, a void Stop)
    pb: ModuleType  # Neonize_pb2
    message_type: type  # waE2E Message
    device_props_type: type
    jid_to_string: Callable[[Any], str]
    events: dict[int, tuple[type, str]]  # event code -> (protobuf class, NeonizeClient method)
    callbacks: tuple[Any, Any, Any, Any]  # qr, login status, event, log; alive for the process


_library: _Library | None = None
_library_lock = threading.Lock()


def _load() -> _Library:
    """Import neonize on first use, after the service configured logging."""
    global _library
    with _library_lock:
        if _library is None:
            _library = _import_neonize()
        return _library


def _import_neonize() -> _Library:
    # Trap: importing neonize calls logging.basicConfig(INFO); keep the root logger as it was.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        from neonize import _binder
        from neonize.events import EVENT_TO_INT
        from neonize.proto import Neonize_pb2
        from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
        from neonize.utils.jid import Jid2String
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    native = ctypes.CDLL(_binder.gocode._name)
    # Go's Stop returns nothing, yet neonize frees its "result" as a C string; ours is void.
    native.Stop.argtypes = [ctypes.c_char_p]
    native.Stop.restype = None
    native.Disconnect.argtypes = [ctypes.c_char_p]
    native.Disconnect.restype = None
    native.sqlite3_open_v2.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_char_p,
    ]
    native.sqlite3_busy_timeout.argtypes = [ctypes.c_void_p, ctypes.c_int]
    native.sqlite3_serialize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_uint,
    ]
    native.sqlite3_serialize.restype = ctypes.c_void_p
    native.sqlite3_free.argtypes = [ctypes.c_void_p]
    native.sqlite3_close_v2.argtypes = [ctypes.c_void_p]
    native.sqlite3_errmsg.argtypes = [ctypes.c_void_p]
    native.sqlite3_errmsg.restype = ctypes.c_char_p

    events = {
        EVENT_TO_INT[getattr(Neonize_pb2, name)]: (getattr(Neonize_pb2, name), method)
        for name, method in NeonizeClient.EVENT_METHODS.items()
    }
    # Go may call these from any thread for as long as the process lives (leaked stores keep
    # their loggers), so they are created once and never released.
    callbacks = (
        _binder.func_string(_on_go_qr),
        _binder.func_string(_on_go_login_status),
        _binder.func_callback_bytes(_on_go_event),
        _binder.func_callback_bytes2(_on_go_log),
    )
    return _Library(
        gocode=_binder.gocode,
        native=native,
        pb=Neonize_pb2,
        message_type=Message,
        device_props_type=DeviceProps,
        jid_to_string=Jid2String,
        events=events,
        callbacks=callbacks,
    )


# ------------------------------------------------------------------- callbacks from Go

# Incarnation uuid -> where its callbacks go (a function that hops onto the event loop).
_routes: dict[bytes, Callable[..., None]] = {}


def _route(uuid: bytes, kind: str, *args: Any) -> None:
    handler = _routes.get(uuid)
    if handler is not None:
        handler(kind, *args)


def _on_go_qr(uuid: int, code: int) -> None:
    try:
        _route(ctypes.string_at(uuid), "qr", ctypes.string_at(code).decode())
    except Exception:  # trap: neonize swallows handler errors; ctypes would print and drop them
        log.exception("QR callback failed")


def _on_go_login_status(uuid: int, status: int) -> None:
    try:
        _route(ctypes.string_at(uuid), "status", ctypes.string_at(status).decode())
    except Exception:
        log.exception("login status callback failed")


def _on_go_event(uuid: bytes, data: int, size: int, code: int) -> None:
    try:
        # The buffer is Go's and only valid during this call: copy it now, decode on the loop.
        _route(uuid, "event", code, ctypes.string_at(data, size))
    except Exception:
        log.exception("event callback failed", code=code)


_GO_LOG_LEVELS = {
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}


def _on_go_log(data: int, size: int) -> None:
    try:
        assert _library is not None
        entry = _library.pb.LogEntry.FromString(ctypes.string_at(data, size))
        logger = logging.getLogger(f"whatsmeow.{entry.Name.replace('/', '.')}")
        logger.log(_GO_LOG_LEVELS.get(entry.Level, logging.INFO), entry.Message)
    except Exception:
        log.exception("log callback failed")


def _go_log_level() -> bytes:
    """The level Go logs at, from our `whatsmeow` logger; never DEBUG (it dumps every frame)."""
    level = logging.getLogger("whatsmeow").getEffectiveLevel()
    if level >= logging.ERROR:
        return b"ERROR"
    return b"WARN" if level >= logging.WARNING else b"INFO"


def _run_neonize(library: _Library, args: tuple[Any, ...], ended: Callable[[str], None]) -> None:
    """Body of an incarnation's thread: Neonize() returns when the client stops (or never)."""
    try:
        error = library.gocode.Neonize(*args).decode(errors="replace")
    except BaseException as exc:  # the loop must hear of the end whatever happened
        error = f"{type(exc).__name__}: {exc}"
    ended(error)


def _call_in_loop(loop: asyncio.AbstractEventLoop, handler: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
        loop.call_soon_threadsafe(handler, *args)


# ------------------------------------------------------------------ the Go map guard


class _GoMapGuard:
    """Keeps goneonize's global client maps (plain Go maps, no lock) free of races.

    Writers: Neonize()'s prologue (registers the client) and Stop() (removes it) run one at
    a time with nothing else. Readers (every other export, which looks its client up first
    thing) share, and count as done once their call returned or ran for MAP_READ_GRACE.
    Waiters are served in arrival order, so a connect storm cannot starve sends, nor sends
    a stop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._readers = 0
        self._writer = False
        self._queue: deque[tuple[bool, asyncio.Future[None]]] = deque()

    async def read(self, call: Callable[..., T], *args: Any) -> T:
        await self._enter(exclusive=False)
        release = self._releaser(exclusive=False)
        started: asyncio.Future[None] = self.loop.create_future()

        def run() -> T:
            self.loop.call_soon_threadsafe(started.set_result, None)
            return call(*args)

        try:
            future = self.loop.run_in_executor(None, run)
        except BaseException:
            release()
            raise
        started.add_done_callback(lambda _: self.loop.call_later(MAP_READ_GRACE, release))
        future.add_done_callback(lambda _: release())
        # Shielded: a cancelled caller must not end the hold while Go is still reading.
        return await asyncio.shield(future)

    async def write(self, call: Callable[..., T], *args: Any) -> T:
        release = await self.hold()
        try:
            future = self.loop.run_in_executor(None, call, *args)
        except BaseException:
            release()
            raise
        future.add_done_callback(lambda _: release())
        return await asyncio.shield(future)

    async def hold(self) -> Callable[[], None]:
        """Exclusive access until the returned function is called (idempotent)."""
        await self._enter(exclusive=True)
        return self._releaser(exclusive=True)

    async def _enter(self, exclusive: bool) -> None:
        if not self._queue and self._admits(exclusive):
            self._admit(exclusive)
            return
        turn: asyncio.Future[None] = self.loop.create_future()
        self._queue.append((exclusive, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # admitted, then cancelled: give it back
                self._releaser(exclusive)()
            raise

    def _admits(self, exclusive: bool) -> bool:
        return not self._writer and not (exclusive and self._readers)

    def _admit(self, exclusive: bool) -> None:
        if exclusive:
            self._writer = True
        else:
            self._readers += 1

    def _releaser(self, exclusive: bool) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            if exclusive:
                self._writer = False
            else:
                self._readers -= 1
            self._serve_queue()

        return release

    def _serve_queue(self) -> None:
        while self._queue:
            exclusive, turn = self._queue[0]
            if turn.cancelled():
                self._queue.popleft()
                continue
            if not self._admits(exclusive):
                return
            self._queue.popleft()
            self._admit(exclusive)
            turn.set_result(None)


_guard: _GoMapGuard | None = None


def _process_guard(loop: asyncio.AbstractEventLoop) -> _GoMapGuard:
    """The one guard of this process: the Go maps are process-wide, so must be the guard."""
    global _guard
    if _guard is None:
        _guard = _GoMapGuard(loop)
    elif _guard.loop is not loop:
        raise RuntimeError("neonize is already in use on another event loop")
    return _guard


# ------------------------------------------------------------------------ the client

_incarnation_numbers = itertools.count(1)


@dataclass(eq=False)
class _Incarnation:
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


class NeonizeClient(WhatsAppClient):
    device_table = DEVICE_TABLE

    # Neonize_pb2 event name -> handler. Device (code 0) is sent unasked after connecting.
    EVENT_METHODS: ClassVar[dict[str, str]] = {
        "Device": "_on_device",
        "PairStatus": "_on_pair_status",
        "Connected": "_on_connected",
        "KeepAliveTimeout": "_on_keepalive_timeout",
        "KeepAliveRestored": "_on_keepalive_restored",
        "LoggedOut": "_on_logged_out",
        "StreamReplaced": "_on_stream_replaced",
        "TemporaryBan": "_on_temporary_ban",
        "ConnectFailure": "_on_connect_failure",
        "ClientOutdated": "_on_client_outdated",
        "StreamError": "_on_stream_error",
        "Disconnected": "_on_disconnected",
        "Message": "_on_message",
        "Receipt": "_on_receipt",
        "UndecryptableMessage": "_on_undecryptable",
        "OfflineSyncCompleted": "_on_offline_sync_completed",
    }

    def __init__(
        self, session_id: str, store_path: Path, emit: Emit, clock: Clock, *, factory: NeonizeClientFactory
    ) -> None:
        super().__init__(session_id, store_path, emit, clock)
        self._factory = factory
        self._lib = factory.library
        self._current: _Incarnation | None = None
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
        incarnation = _Incarnation(uuid=f"{self.session_id}#{next(_incarnation_numbers)}".encode())
        self._current = incarnation
        # Under way in the background: the probe or the queue for the Go maps must not hold
        # up the actor's inbox.
        incarnation.starting = self._factory.spawn(self._start(incarnation))

    async def _start(self, incarnation: _Incarnation) -> None:
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
        params = self._lib.pb.PairPhoneParams(
            phone="".join(ch for ch in phone if ch.isdigit()),
            showPushNotification=True,
            clientType=PAIR_CLIENT_CHROME,
            clientDisplayName=PAIR_CLIENT_NAME,
        ).SerializeToString()  # all four set: Go dereferences each without checking
        raw = await self._factory.guard.read(
            self._lib.gocode.PairPhone, incarnation.uuid, params, len(params)
        )
        result = self._lib.pb.PairPhoneReturnFunction.FromString(raw)
        if result.Error:
            raise PairingError(result.Error)
        return result.Code

    async def send_text(self, to_jid: str, text: str, ref: str) -> SendResult:
        incarnation, recipient = await self._sendable(to_jid)
        # `ref` stays ours: neonize cannot set custom message ids, WhatsApp assigns one.
        # A plain Message: neonize's str path would parse mentions and look up groups first.
        return await self._send_message(incarnation, recipient, self._lib.message_type(conversation=text))

    async def send_media(self, to_jid: str, media: OutgoingMedia, ref: str) -> SendResult:
        incarnation, recipient = await self._sendable(to_jid)
        # whatsmeow encrypts the file with a fresh media key and uploads it to WhatsApp's
        # media servers; the message then carries the key, hashes and path. neonize's own
        # build_*_message helpers are not used: they sniff with libmagic and run ffmpeg/PIL
        # for thumbnails and durations (optional fields, left out here).
        raw = await self._factory.guard.read(
            self._lib.gocode.Upload, incarnation.uuid, media.data, len(media.data), MEDIA_TYPES[media.kind]
        )
        result = self._lib.pb.UploadReturnFunction.FromString(raw)
        if result.Error:
            raise _upload_error(result.Error)
        message = build_media_message(self._lib.message_type, media, result.UploadResponse, int(time.time()))
        return await self._send_message(incarnation, recipient, message)

    async def _sendable(self, to_jid: str) -> tuple[_Incarnation, Any]:
        """The live incarnation and the recipient's JID, or SendError."""
        incarnation = self._current
        if incarnation is None or not self._connected:
            raise SendError("not_connected", "the session is not connected")
        recipient = self._recipient(to_jid)
        if recipient.Server == "s.whatsapp.net":
            await self._ensure_on_whatsapp(incarnation, to_jid, recipient.User)
        return incarnation, recipient

    async def _send_message(self, incarnation: _Incarnation, recipient: Any, message: Any) -> SendResult:
        target = recipient.SerializeToString()
        payload = message.SerializeToString()
        raw = await self._factory.guard.read(
            self._lib.gocode.SendMessage, incarnation.uuid, target, len(target), payload, len(payload)
        )
        result = self._lib.pb.SendMessageReturnFunction.FromString(raw)
        if result.Error:
            raise _send_error(result.Error)
        response = result.SendResponse
        sent_at = _epoch_datetime(response.Timestamp) if response.Timestamp else utcnow()
        return SendResult(response.ID, sent_at)

    async def show_typing(self, to_jid: str) -> None:
        incarnation = self._current
        if incarnation is None or not self._connected:
            return  # the send that follows reports the missing connection
        target = self._recipient(to_jid).SerializeToString()
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
        return await self._factory.loop.run_in_executor(
            None, _serialize_store, self._lib.native, str(self.store_path)
        )

    # -- incarnation lifecycle ----------------------------------------------------------------
    def _retire(self, incarnation: _Incarnation) -> asyncio.Task[None]:
        """Silence an incarnation and stop its Go client (in the background)."""
        if incarnation.stopping is None:
            incarnation.retired = True
            if self._current is incarnation:
                self._current = None
                self._connected = False
            _routes.pop(incarnation.uuid, None)
            incarnation.stopping = self._factory.spawn(self._factory.stop_go_client(incarnation))
        return incarnation.stopping

    def _end(self, incarnation: _Incarnation, event: m.Input) -> None:
        """The connection is over: stop the Go client first, so whatsmeow cannot redial."""
        self._retire(incarnation)
        self._emit(event)

    def _from_go(self, incarnation: _Incarnation, kind: str, *args: Any) -> None:
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
            known = self._lib.events.get(code)
            if known is not None:
                message_type, method = known
                getattr(self, method)(incarnation, message_type.FromString(payload))

    def _on_thread_end(self, incarnation: _Incarnation, error: str) -> None:
        incarnation.settle()
        self._factory.incarnation_ended(incarnation)
        if incarnation is self._current:  # it ended by itself: the dial failed, or Go gave up
            self._end(incarnation, m.Disconnected(self._clock(), error or "the WhatsApp client stopped"))

    def _on_login_status(self, incarnation: _Incarnation, status: str) -> None:
        # During pairing this is the only channel: Go delivers events only once paired.
        if status == "err-client-outdated":
            self._end(incarnation, m.ClientOutdated(self._clock()))
        elif status == "timeout":
            self.log.info("QR codes ran out; nobody scanned them")
        elif status != "success":
            self.log.warning("pairing ended", status=status)

    # -- events (the machine's inputs and the adapter's own) ----------------------------------
    def _on_device(self, incarnation: _Incarnation, device: Any) -> None:
        # Trap: the JID comes from here and PairStatus, never GetMe (it kills the process
        # when the client is not connected).
        if device.HasField("JID") and device.JID.User:
            incarnation.jid = self._lib.jid_to_string(device.JID)

    def _on_pair_status(self, incarnation: _Incarnation, status: Any) -> None:
        if status.HasField("Status") and status.Status == self._lib.pb.PairStatus.SUCCESS:
            incarnation.jid = self._lib.jid_to_string(status.ID)
            self._emit(m.PairSucceeded(self._clock(), incarnation.jid))
        else:
            self.log.warning("pairing failed", error=status.Error)

    def _on_connected(self, incarnation: _Incarnation, _: Any) -> None:
        self._connected = True
        self._emit(m.Connected(self._clock(), incarnation.jid))

    def _on_keepalive_timeout(self, incarnation: _Incarnation, _: Any) -> None:
        self._emit(m.KeepAliveTimeout(self._clock()))

    def _on_keepalive_restored(self, incarnation: _Incarnation, _: Any) -> None:
        self._emit(m.KeepAliveRestored(self._clock()))

    def _on_logged_out(self, incarnation: _Incarnation, event: Any) -> None:
        name, code = self._failure_reason(event)
        when = " while connecting" if event.OnConnect else ""
        self._end(incarnation, m.LoggedOut(self._clock(), f"{name} ({code}){when}"))

    def _on_stream_replaced(self, incarnation: _Incarnation, _: Any) -> None:
        self._end(incarnation, m.StreamReplaced(self._clock()))

    def _on_temporary_ban(self, incarnation: _Incarnation, event: Any) -> None:
        reason = event.TempBanReason.Name(event.Code) if event.HasField("Code") else ""
        expires = float(event.Expire) if event.HasField("Expire") else 0.0
        self._end(incarnation, m.TemporaryBan(self._clock(), TEMP_BAN_CODES.get(reason, 0), expires))

    def _on_connect_failure(self, incarnation: _Incarnation, event: Any) -> None:
        _, code = self._failure_reason(event)
        self._end(incarnation, m.ConnectFailure(self._clock(), code, event.Message))

    def _on_client_outdated(self, incarnation: _Incarnation, _: Any) -> None:
        self._end(incarnation, m.ClientOutdated(self._clock()))

    def _on_stream_error(self, incarnation: _Incarnation, event: Any) -> None:
        self._end(incarnation, m.Disconnected(self._clock(), f"stream error {event.Code or 'without code'}"))

    def _on_disconnected(self, incarnation: _Incarnation, _: Any) -> None:
        self._end(incarnation, m.Disconnected(self._clock(), "the connection to WhatsApp dropped"))

    def _on_message(self, incarnation: _Incarnation, event: Any) -> None:
        content = _message_content(event.Message)
        if content is None:
            return
        kind, text = content
        info, source = event.Info, event.Info.MessageSource
        self._emit(
            InboundMessage(
                message_id=info.ID,
                chat=self._lib.jid_to_string(source.Chat),
                sender=self._lib.jid_to_string(source.Sender),
                from_me=source.IsFromMe,
                type=kind,
                timestamp=_epoch_datetime(info.Timestamp),
                text=text,
                # whatsmeow acknowledges messages itself; neonize offers no manual ack.
                ack=None,
            )
        )

    def _on_receipt(self, incarnation: _Incarnation, event: Any) -> None:
        if not event.HasField("Type"):
            return
        kind = RECEIPT_KINDS.get(event.ReceiptType.Name(event.Type))
        if kind is not None:
            chat = self._lib.jid_to_string(event.MessageSource.Chat)
            self._emit(Receipt(kind, tuple(event.MessageIDs), chat))

    def _on_undecryptable(self, incarnation: _Incarnation, event: Any) -> None:
        source = event.Info.MessageSource
        self._emit(
            Undecryptable(
                event.Info.ID, self._lib.jid_to_string(source.Chat), self._lib.jid_to_string(source.Sender)
            )
        )

    def _on_offline_sync_completed(self, incarnation: _Incarnation, event: Any) -> None:
        self._emit(OfflineSyncCompleted(event.Count))

    def _failure_reason(self, event: Any) -> tuple[str, int]:
        """Name and whatsmeow code of a LoggedOut/ConnectFailure reason."""
        # Trap: an unmapped code reads as the enum's first value; only HasField tells.
        if event.HasField("Reason"):
            name = self._lib.pb.ConnectFailureReason.Name(event.Reason)
            return name.lower(), CONNECT_FAILURE_CODES[name]
        # ConnectFailure keeps the raw <failure reason="..."> node for codes neonize does not map.
        raw_attrs = event.Raw.Attrs if "Raw" in event.DESCRIPTOR.fields_by_name else ()
        for attr in raw_attrs:
            if attr.name == "reason":
                with contextlib.suppress(ValueError):
                    return "unmapped", int(attr.integer if attr.HasField("integer") else attr.text)
        return "unmapped", 0

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

    # -- sending helpers ----------------------------------------------------------------------
    def _recipient(self, to_jid: str) -> Any:
        user, _, server = to_jid.partition("@")
        pattern = RECIPIENT_PATTERNS.get(server)
        if pattern is None or not pattern.fullmatch(user):
            raise SendError(
                "invalid_recipient", f"{to_jid!r} is not a JID WhatsApp can deliver to", permanent=True
            )
        # Every JID field is `required` in neonize's proto2 schema.
        return self._lib.pb.JID(User=user, Server=server, RawAgent=0, Device=0, Integrator=0, IsEmpty=False)

    async def _ensure_on_whatsapp(self, incarnation: _Incarnation, jid: str, user: str) -> None:
        """whatsmeow 'sends' to unregistered numbers without error; ask once per number."""
        if jid in self._known_recipients:
            return
        raw = await self._factory.guard.read(
            self._lib.gocode.IsOnWhatsApp, incarnation.uuid, f"+{user}".encode()
        )
        result = self._lib.pb.IsOnWhatsAppReturnFunction.FromString(raw)
        if result.Error:
            raise _send_error(result.Error)
        if not any(answer.IsIn for answer in result.IsOnWhatsAppResponse):
            raise SendError("not_on_whatsapp", f"+{user} is not on WhatsApp", permanent=True)
        if len(self._known_recipients) >= KNOWN_RECIPIENTS_LIMIT:
            self._known_recipients.clear()
        self._known_recipients.add(jid)


def _send_error(text: str) -> SendError:
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


def _upload_error(text: str) -> SendError:
    """An upload that failed never reached a recipient: permanent only when the session
    itself cannot send; otherwise (offline, media servers busy) retried."""
    error = _send_error(text)
    if error.permanent:
        return error
    return SendError("media_upload_failed", f"uploading the file to WhatsApp failed: {text}")


def build_media_message(message_type: type, media: OutgoingMedia, upload: Any, now: int) -> Any:
    """The waE2E Message for an uploaded file (`upload`: neonize's UploadResponse), as in
    whatsmeow's documented example: URL, direct path, media key, both hashes, length, type."""
    message = message_type()
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


def _epoch_datetime(value: int) -> datetime:
    """neonize stamps times in s, ms or ns depending on the field and the build; tell by size."""
    seconds = value / 1e9 if value > 10**17 else value / 1e3 if value > 10**11 else float(value)
    return datetime.fromtimestamp(seconds, UTC)


def _message_content(message: Any) -> tuple[str, str | None] | None:
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


def _serialize_store(native: ctypes.CDLL, path: str) -> bytes:
    """A consistent copy of a live store through the Go side's own SQLite.

    Trap: Python's sqlite3 is a second SQLite copy whose POSIX locks the Go side does not
    see; reading through the library Go uses keeps both under one lock manager.
    """
    db = ctypes.c_void_p()
    try:
        if native.sqlite3_open_v2(path.encode(), ctypes.byref(db), 0x1, None):  # SQLITE_OPEN_READONLY
            raise OSError(f"cannot open {path}: {native.sqlite3_errmsg(db).decode()}")
        native.sqlite3_busy_timeout(db, SNAPSHOT_BUSY_TIMEOUT_MS)  # Go may be committing
        size = ctypes.c_int64()
        # One read transaction over all pages, so concurrent commits never tear the copy.
        data = native.sqlite3_serialize(db, b"main", ctypes.byref(size), 0)
        if not data:
            raise OSError(f"cannot snapshot {path}: {native.sqlite3_errmsg(db).decode()}")
        try:
            return ctypes.string_at(data, size.value)
        finally:
            native.sqlite3_free(data)
    finally:
        native.sqlite3_close_v2(db)


# ------------------------------------------------------------------------ the factory


class NeonizeClientFactory(ClientFactory):
    """Process-wide neonize state: the library, the event loop, threads and the Go map guard."""

    device_table = DEVICE_TABLE

    def __init__(
        self,
        settings: Settings,
        *,
        device_name: str = "WA Gateway",
        check_reachability: bool = True,
        silence_go_stdout: bool = True,
        store_poll_interval: float = STORE_POLL_INTERVAL,
    ) -> None:
        """`device_name`: how the linked device is listed on the phone.

        `check_reachability`: probe WhatsApp before each attempt (see module doc).
        `silence_go_stdout`: point fd 1 at /dev/null (Python's stdout keeps working).
        """
        self.capacity = settings.node_capacity  # sessions this process hosts
        self.device_name = device_name
        self._check_reachability = check_reachability
        self._silence_go_stdout = silence_go_stdout
        self._store_poll_interval = store_poll_interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self.library: _Library
        self.guard: _GoMapGuard
        self._device_props = b""
        self._clients: set[NeonizeClient] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: set[_Incarnation] = set()
        self._attempts = 0
        self._attempt_budget = 0
        self._probe: asyncio.Future[str | None] | None = None
        self._probe_at = 0.0
        self._poller: asyncio.Task[None] | None = None
        self._restore_stdout: Callable[[], None] | None = None

    async def start(self, may_act: Callable[[], bool] = lambda: True) -> None:
        # whatsmeow keeps its connections alive in Go, out of our reach: a stalled node's
        # connection stays up, and WhatsApp replaces it when the next owner connects
        # (stream replaced, which the actor answers by checking ownership).
        if self.loop is not None:
            return
        # Trap: neonize calls logging.basicConfig on import; it is imported only now, after
        # services.common.logs.setup, and the root logger is restored afterwards.
        self.library = _load()
        self.loop = asyncio.get_running_loop()
        _size_default_executor(self.loop, self.capacity + EXECUTOR_HEADROOM)
        # Trap: one event loop per process (Go's callbacks are bound to it).
        self.guard = _process_guard(self.loop)
        self._attempt_budget = _raise_fd_limit() // 2
        self._device_props = self.library.device_props_type(
            os=self.device_name, platformType=self.library.device_props_type.CHROME
        ).SerializeToString()
        if self._silence_go_stdout:
            self._restore_stdout = _send_fd1_to_devnull()
        self._poller = asyncio.create_task(self._poll_stores(), name="neonize-store-poller")

    async def stop(self) -> None:
        await cancel_and_wait(self._poller)
        self._poller = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_TIMEOUT)
        if self._restore_stdout is not None:
            self._restore_stdout()
            self._restore_stdout = None

    def create(self, session_id: str, store_path: Path, emit: Emit, clock: Clock) -> NeonizeClient:
        if self.loop is None:
            raise RuntimeError("NeonizeClientFactory.start() must run first")
        client = NeonizeClient(session_id, store_path, emit, clock, factory=self)
        self._clients.add(client)
        return client

    @property
    def stats(self) -> dict[str, int]:
        """Counters for health checks.

        connection_attempts: Neonize() calls, each keeping one store handle for good.
        parked: retired Go clients whose Neonize() has not returned: briefly while they stop,
        for good after an abandoned pairing (one idle thread each).
        """
        return {
            "clients": len(self._clients),
            "connection_attempts": self._attempts,
            "running": sum(not incarnation.retired for incarnation in self._running),
            "parked": sum(incarnation.retired for incarnation in self._running),
        }

    # -- services for clients -----------------------------------------------------------------
    async def start_incarnation(self, client: NeonizeClient, incarnation: _Incarnation) -> None:
        assert self.loop is not None
        grace = PROLOGUE_GRACE_RESTORED if client.store_path.exists() else PROLOGUE_GRACE_FRESH
        incarnation.release_prologue = await self.guard.hold()
        if incarnation.retired:  # disconnected while waiting for its turn
            incarnation.release_prologue()
            return
        library = self.library
        # Trap: handlers must be known before connecting; Neonize() takes the subscribed event
        # codes and the QR callback up front (without one, Go prints an ASCII QR to stdout).
        subscribed = bytes(code for code in library.events if code)
        args = (
            str(client.store_path).encode(),
            incarnation.uuid,
            b"",
            0,
            0,
            _go_log_level(),
            *library.callbacks,
            subscribed,
            len(subscribed),
            self._device_props,
            len(self._device_props),
            b"",
            0,
            None,
        )
        _routes[incarnation.uuid] = functools.partial(_call_in_loop, self.loop, client._from_go, incarnation)
        ended = functools.partial(_call_in_loop, self.loop, client._on_thread_end, incarnation)
        # Its own daemon thread: Neonize() blocks for the client's life, sometimes forever.
        incarnation.thread = threading.Thread(
            target=_run_neonize, args=(library, args, ended), name=f"neonize-{client.session_id}", daemon=True
        )
        try:
            incarnation.thread.start()
        except BaseException:
            _routes.pop(incarnation.uuid, None)
            incarnation.release_prologue()
            raise
        self.loop.call_later(grace, incarnation.release_prologue)
        self._running.add(incarnation)
        self._attempts += 1
        if self._attempts == self._attempt_budget:
            log.error(
                "neonize holds a store handle per connection attempt and never closes them; "
                "half the fd limit is used: recycle this node",
                attempts=self._attempts,
            )

    def incarnation_ended(self, incarnation: _Incarnation) -> None:
        self._running.discard(incarnation)

    async def stop_go_client(self, incarnation: _Incarnation) -> None:
        """Disconnect, then remove the Go client from goneonize's maps."""
        if incarnation.starting is not None:
            await asyncio.wait({incarnation.starting})
        if incarnation.thread is None:
            return  # retired before a Go client was started
        native = self.library.native
        try:
            # Trap: this waits for an in-flight dial (whatsmeow's socket lock), which can take
            # long; as a shared reader it blocks nobody. It also marks the disconnect as
            # expected, which ends whatsmeow's own reconnect loop.
            await self.guard.read(native.Disconnect, incarnation.uuid)
            # Go reads the map right after connecting; removing the client before would crash.
            await wait_event(incarnation.settled, SETTLE_TIMEOUT)
            await self.guard.write(native.Stop, incarnation.uuid)
        except Exception:
            log.exception("stopping a WhatsApp client failed", uuid=incarnation.uuid.decode())

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def forget(self, client: NeonizeClient) -> None:
        self._clients.discard(client)

    async def whatsapp_unreachable(self) -> str | None:
        """Why WhatsApp cannot be reached right now, or None; one shared probe per PROBE_TTL."""
        if not self._check_reachability:
            return None
        assert self.loop is not None
        now = self.loop.time()
        if self._probe is None or (self._probe.done() and now - self._probe_at > PROBE_TTL):
            self._probe_at = now
            self._probe = asyncio.ensure_future(_probe_whatsapp())
        return await asyncio.shield(self._probe)

    async def _poll_stores(self) -> None:
        while True:
            await asyncio.sleep(self._store_poll_interval)
            for client in list(self._clients):
                client.poll_store()


async def _probe_whatsapp() -> str | None:
    if {"https", "all"} & urllib.request.getproxies().keys():
        return None  # Go dials through the proxy; a direct probe would say nothing
    host, port = WHATSAPP_ENDPOINT
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return f"{host}:{port} unreachable ({exc or type(exc).__name__}); no client started"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


_executor_workers = 0


def _size_default_executor(loop: asyncio.AbstractEventLoop, workers: int) -> None:
    """Trap: neonize's calls block executor threads (a send up to ~75 s); the default pool
    (6 threads on 2 cores) stalls the 7th session. Only ever grown; threads start lazily."""
    global _executor_workers
    if workers > _executor_workers:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neonize-call"))
        _executor_workers = workers


def _raise_fd_limit() -> int:
    """Raise the soft fd limit to the hard one (leaked store handles add up); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _send_fd1_to_devnull() -> Callable[[], None]:
    """Trap: Go prints to fd 1 ("SendMessage: Error ...", "Login event: ...", pair codes).

    All of it duplicates what the adapter already gets from return values and callbacks,
    so fd 1 goes to /dev/null (no reader thread that could stall Go on a full pipe); Python's
    sys.stdout moves to a duplicate of the original fd 1. fd 2 stays untouched so Go panic
    traces still reach the logs.
    """
    sys.stdout.flush()
    original = os.dup(1)
    python_stdout = open(  # closed by restore()
        os.dup(original),
        "w",
        buffering=1,
        encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
        errors="backslashreplace",
    )
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    previous, sys.stdout = sys.stdout, python_stdout

    def restore() -> None:
        python_stdout.flush()
        os.dup2(original, 1)
        os.close(original)
        sys.stdout = previous
        python_stdout.close()

    return restore
